-- stepgate postgres schema, version 3: where each SIEM stream (`audit.stream`) stands in the
-- audit log, so a restarted node neither loses nor repeats an event. Times are Unix
-- milliseconds.
CREATE TABLE audit_stream_cursors (
    stream     TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
