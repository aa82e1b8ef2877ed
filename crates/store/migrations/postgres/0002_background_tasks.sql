-- Background tasks (bulk recovery so far), resumable: `cursor` is the last
-- message id handled, so a restarted task carries on where it stopped.
CREATE TABLE background_tasks (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    params      TEXT NOT NULL,
    cursor      TEXT,
    done        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX background_tasks_by_status ON background_tasks (status);

