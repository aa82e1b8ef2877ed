-- An event type whose messages must validate against its JSON Schema
-- (Herald's `enforceSchema`; the server-wide HERALD_ENFORCE_SCHEMAS
-- applies it to every type).
ALTER TABLE event_types ADD COLUMN enforce_schema BOOLEAN NOT NULL DEFAULT FALSE;
