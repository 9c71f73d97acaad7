-- stepgate postgres schema, version 5: policy sets saved through the admin API
-- (`admin.policy_edits: store`), each a numbered version kept for history, diff and
-- rollback; and leases, which let one node of several do a job (deliver a SIEM stream).
-- Times are Unix milliseconds.
CREATE TABLE policy_versions (
    version     BIGINT PRIMARY KEY,
    text        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    author      TEXT NOT NULL,
    note        TEXT,
    rollback_of BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
