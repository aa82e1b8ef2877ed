-- The next moment a rate-limited endpoint may be sent to, shared by every
-- process on PostgreSQL (the single SQLite process paces in memory; the
-- table is here to keep the schemas twins).
CREATE TABLE endpoint_pacing (
    endpoint_id   TEXT PRIMARY KEY REFERENCES endpoints (id) ON DELETE CASCADE,
    next_send_at  BIGINT NOT NULL
);
