-- The test inspector: one receiving address per app (`/inspect/{token}`) and
-- the last requests it received (at most 100 per app are kept).
CREATE TABLE inspectors (
    app_id      TEXT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    token       TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE inspected_requests (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES inspectors (app_id) ON DELETE CASCADE,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    query           TEXT,
    headers         TEXT NOT NULL,
    body            BLOB NOT NULL,
    body_truncated  INTEGER NOT NULL,
    received_at     INTEGER NOT NULL
);
CREATE INDEX inspected_requests_by_app ON inspected_requests (app_id, received_at, id);
