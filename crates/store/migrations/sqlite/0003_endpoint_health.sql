-- Endpoint health, maintained as attempts are made (never computed by
-- scanning attempts): counts and a response-time histogram per endpoint
-- and 5-minute bucket (h0..h11: bins up to 10, 25, 50, 100, 250, 500 ms,
-- 1, 2.5, 5, 10, 30 s, and slower), and each endpoint's current run.
CREATE TABLE endpoint_health (
    endpoint_id      TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    bucket           INTEGER NOT NULL,
    succeeded        INTEGER NOT NULL,
    failed           INTEGER NOT NULL,
    duration_sum_ms  INTEGER NOT NULL,
    h0 INTEGER NOT NULL, h1 INTEGER NOT NULL, h2 INTEGER NOT NULL, h3 INTEGER NOT NULL,
    h4 INTEGER NOT NULL, h5 INTEGER NOT NULL, h6 INTEGER NOT NULL, h7 INTEGER NOT NULL,
    h8 INTEGER NOT NULL, h9 INTEGER NOT NULL, h10 INTEGER NOT NULL, h11 INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, bucket)
);
CREATE INDEX endpoint_health_by_age ON endpoint_health (bucket);

CREATE TABLE endpoint_status (
    endpoint_id           TEXT PRIMARY KEY REFERENCES endpoints (id) ON DELETE CASCADE,
    consecutive_failures  INTEGER NOT NULL,
    last_success_at       INTEGER,
    last_failure_at       INTEGER,
    failing_since         INTEGER
);
