-- Since when an endpoint's success rate has been below the alert threshold
-- (NULL: it is not); names the episode of endpoint.success_rate_dropped.
ALTER TABLE endpoint_status ADD COLUMN rate_dropped_since BIGINT;
