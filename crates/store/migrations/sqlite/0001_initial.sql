-- stepgate SQLite schema, version 1. Times are Unix milliseconds (INTEGER).

-- Store-wide facts: the secret key check value.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    email           TEXT,
    name            TEXT,
    groups_json     TEXT NOT NULL,
    attributes_json TEXT NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    source          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE factors (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    label        TEXT NOT NULL,
    lookup_key   TEXT,
    secret       BLOB,
    data_json    TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX factors_by_user ON factors(user_id, created_at);
CREATE UNIQUE INDEX factors_by_lookup ON factors(kind, lookup_key) WHERE lookup_key IS NOT NULL;

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    owner      TEXT,
    data_json  TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX devices_by_owner ON devices(owner);

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    time        INTEGER NOT NULL,
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
-- The audit log is append-only, also for anyone with a SQL shell who does not mean harm.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;

-- Hot state. Every row expires; expired rows are ignored on read and purged periodically.
CREATE TABLE hot_sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    data_json  TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX hot_sessions_by_user ON hot_sessions(user_id);
CREATE INDEX hot_sessions_by_expiry ON hot_sessions(expires_at);

CREATE TABLE hot_counters (
    key        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE hot_bans (
    key   TEXT PRIMARY KEY,
    until INTEGER NOT NULL
);

CREATE TABLE hot_otps (
    key           TEXT PRIMARY KEY,
    code_hash     BLOB NOT NULL,
    attempts_left INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);

CREATE TABLE hot_once (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

CREATE TABLE hot_recent (
    key        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    value_json TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, seq)
);
