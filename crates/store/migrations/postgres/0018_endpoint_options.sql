-- Herald's per-endpoint delivery options as JSON (`filter`,
-- `transformation`, `rawPayload`, `timeout`); NULL: all defaults.
ALTER TABLE endpoints ADD COLUMN options TEXT;
