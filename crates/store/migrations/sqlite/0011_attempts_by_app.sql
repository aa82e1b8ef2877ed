-- An app's attempts across its endpoints, newest first (the portal's
-- app-wide activity log).
CREATE INDEX attempts_by_app ON attempts (app_id, id);
