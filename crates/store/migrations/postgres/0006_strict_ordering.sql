-- Strict ordering: an endpoint's next message waits until the previous one
-- succeeded or finally failed. Claims then look for the oldest pending
-- delivery of the endpoint, in message order.
ALTER TABLE endpoints ADD COLUMN strict_ordering BOOLEAN NOT NULL DEFAULT FALSE;
DROP INDEX deliveries_by_endpoint;
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, status, message_id);
