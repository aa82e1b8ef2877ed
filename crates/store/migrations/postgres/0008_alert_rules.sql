-- An app's alert rules (JSON, see AlertRulesSpec); NULL: the server's defaults.
ALTER TABLE apps ADD COLUMN alert_rules TEXT;
