-- One row that the health check rewrites while writes are failing (a full
-- disk, say), to learn when they work again without waiting for traffic.
CREATE TABLE store_probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  BIGINT NOT NULL
);
