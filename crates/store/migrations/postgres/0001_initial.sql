-- Herald's first schema (PostgreSQL twin of sqlite/0001_initial.sql). Times are unix milliseconds; ids are prefixed ULIDs,
-- so ordering by id is ordering by creation time.

CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    uid         TEXT UNIQUE,
    name        TEXT NOT NULL,
    rate_limit  BIGINT,
    metadata    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE event_types (
    name          TEXT PRIMARY KEY,
    description   TEXT NOT NULL,
    schemas       TEXT,
    archived      BOOLEAN NOT NULL DEFAULT FALSE,
    deprecated    BOOLEAN NOT NULL DEFAULT FALSE,
    feature_flag  TEXT,
    group_name    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE endpoints (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    uid           TEXT,
    url           TEXT NOT NULL,
    description   TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL,
    filter_types  TEXT,
    channels      TEXT,
    rate_limit    BIGINT,
    version       BIGINT NOT NULL,
    metadata      TEXT NOT NULL,
    headers       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoints_by_app ON endpoints (app_id, id);

-- expires_at NULL marks the current secret; older ones sign until expires_at.
CREATE TABLE endpoint_secrets (
    endpoint_id  TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    secret       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT
);
CREATE INDEX endpoint_secrets_by_endpoint ON endpoint_secrets (endpoint_id);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event_id    TEXT,
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    channels    TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (app_id, event_id)
);
CREATE INDEX messages_by_app ON messages (app_id, id);

-- One row per (message, endpoint): its state and when it is next due.
-- status uses Svix's codes: 0 succeeded, 1 pending, 2 failed.
CREATE TABLE deliveries (
    message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    endpoint_id      TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    app_id           TEXT NOT NULL,
    status           BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    trigger_type     BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (message_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 1;
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, status);

CREATE TABLE attempts (
    id                    TEXT PRIMARY KEY,
    app_id                TEXT NOT NULL,
    message_id            TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    endpoint_id           TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    url                   TEXT NOT NULL,
    status                BIGINT NOT NULL,
    response_status_code  BIGINT NOT NULL,
    response              TEXT NOT NULL,
    response_duration_ms  BIGINT NOT NULL,
    error_class           TEXT,
    trigger_type          BIGINT NOT NULL,
    created_at            BIGINT NOT NULL
);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
CREATE INDEX attempts_by_message ON attempts (message_id, id);

CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    status      BIGINT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
