-- An endpoint's own retry policy (JSON, see RetryPolicySpec); NULL: the server's.
ALTER TABLE endpoints ADD COLUMN retry_policy TEXT;
