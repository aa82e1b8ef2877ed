-- Endpoint health, maintained as attempts are made (never computed by
-- scanning attempts): counts and a response-time histogram per endpoint
-- and 5-minute bucket (h0..h11: bins up to 10, 25, 50, 100, 250, 500 ms,
-- 1, 2.5, 5, 10, 30 s, and slower), and each endpoint's current run.
CREATE TABLE endpoint_health (
    endpoint_id      TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    bucket           BIGINT NOT NULL,
    succeeded        BIGINT NOT NULL,
    failed           BIGINT NOT NULL,
    duration_sum_ms  BIGINT NOT NULL,
    h0 BIGINT NOT NULL, h1 BIGINT NOT NULL, h2 BIGINT NOT NULL, h3 BIGINT NOT NULL,
    h4 BIGINT NOT NULL, h5 BIGINT NOT NULL, h6 BIGINT NOT NULL, h7 BIGINT NOT NULL,
    h8 BIGINT NOT NULL, h9 BIGINT NOT NULL, h10 BIGINT NOT NULL, h11 BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, bucket)
);
CREATE INDEX endpoint_health_by_age ON endpoint_health (bucket);

CREATE TABLE endpoint_status (
    endpoint_id           TEXT PRIMARY KEY REFERENCES endpoints (id) ON DELETE CASCADE,
    consecutive_failures  BIGINT NOT NULL,
    last_success_at       BIGINT,
    last_failure_at       BIGINT,
    failing_since         BIGINT
);
