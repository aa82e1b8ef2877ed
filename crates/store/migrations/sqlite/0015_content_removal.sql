-- A message whose content was removed (`DELETE …/msg/{msg}/content/`):
-- its payload is '{}' and it is never sent again.
ALTER TABLE messages ADD COLUMN content_removed_at INTEGER;
