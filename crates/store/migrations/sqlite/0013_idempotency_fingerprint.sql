-- A hash of the request a key was first used with (method, path, body), so
-- that the same key with a different request is refused instead of being
-- answered with the first one's response. Keys saved before have none.
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
