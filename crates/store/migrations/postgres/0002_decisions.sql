-- stepgate postgres schema, version 2: the decision log. One row per decision of the access
-- pipeline, kept for `log.decisions.retention` and searched by user, app, outcome, policy
-- and time. Times are Unix milliseconds.
CREATE TABLE decisions (
    request_id       TEXT PRIMARY KEY,
    time             BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    user_name        TEXT,
    session_handle   TEXT,
    app              TEXT,
    route            TEXT,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    ip               TEXT,
    device           TEXT,
    policy           TEXT,
    policy_outcome   TEXT,
    outcome          TEXT NOT NULL,
    report_only_json TEXT NOT NULL,
    detail_json      TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions(time);
CREATE INDEX decisions_by_user ON decisions(user_name, time);
CREATE INDEX decisions_by_app ON decisions(app, time);
CREATE INDEX decisions_by_outcome ON decisions(outcome, time);
CREATE INDEX decisions_by_policy ON decisions(policy, time);
