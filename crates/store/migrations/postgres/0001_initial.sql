-- stepgate PostgreSQL schema (durable data), version 1. Times are Unix milliseconds (BIGINT),
-- as in the SQLite schema, so records read back identically from either backend.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    email           TEXT,
    name            TEXT,
    groups_json     TEXT NOT NULL,
    attributes_json TEXT NOT NULL,
    disabled        BOOLEAN NOT NULL DEFAULT FALSE,
    source          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE factors (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    label        TEXT NOT NULL,
    lookup_key   TEXT,
    secret       BYTEA,
    data_json    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX factors_by_user ON factors(user_id, created_at);
CREATE UNIQUE INDEX factors_by_lookup ON factors(kind, lookup_key) WHERE lookup_key IS NOT NULL;

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    owner      TEXT,
    data_json  TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX devices_by_owner ON devices(owner);

-- detail_json is TEXT, not JSONB: the chain hash covers the exact stored text.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    time        BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT,
    subject     TEXT,
    ip          TEXT,
    detail_json TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_by_kind ON audit_events(kind, seq);
CREATE INDEX audit_by_actor ON audit_events(actor, seq);
CREATE INDEX audit_by_subject ON audit_events(subject, seq);
CREATE INDEX audit_by_time ON audit_events(time);

CREATE FUNCTION stepgate_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION stepgate_audit_append_only();
