-- Why and when an endpoint was disabled: manual, gone (it answered 410) or
-- failing (every attempt failed for the configured period).
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN disabled_at BIGINT;
