-- stepgate postgres schema, version 3: the admin API's tokens. A token is shown once when it is
-- made and kept only as the SHA-256 of its 256 random bits (hex); it has a unique name (what
-- the audit log names it by), its scopes, an expiry, and is revoked by setting revoked_at.
-- Times are Unix milliseconds.
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    scopes_json  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
