-- The attempt log, partitioned by time on its id (attempt ids are ULIDs, so
-- they sort by creation time), so that retention drops whole weeks instead
-- of deleting rows, and a year of attempts stays listable. The table as it
-- was becomes the first partition, holding everything up to this moment;
-- Herald creates the weekly partitions ahead (pg/partitions.rs).
-- Attempts no longer reference messages and endpoints: deleting an
-- endpoint or an app deletes its attempts explicitly, and retention drops
-- them by age.

-- The smallest id of kind `prefix` made at `ms` (unix milliseconds): the
-- ULID's 48-bit time in Crockford base32, then zeros.
CREATE FUNCTION herald_id_floor(prefix TEXT, ms BIGINT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT prefix
        || string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> (45 - 5 * i)) & 31)::int + 1, 1), '' ORDER BY i)
        || '0000000000000000'
    FROM generate_series(0, 9) AS i
$$;

ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_message_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_endpoint_id_fkey;
ALTER TABLE attempts RENAME TO attempts_legacy;
ALTER INDEX attempts_pkey RENAME TO attempts_legacy_pkey;
ALTER INDEX attempts_by_endpoint RENAME TO attempts_legacy_by_endpoint;
ALTER INDEX attempts_by_message RENAME TO attempts_legacy_by_message;
ALTER INDEX attempts_by_app RENAME TO attempts_legacy_by_app;

CREATE TABLE attempts (LIKE attempts_legacy INCLUDING DEFAULTS) PARTITION BY RANGE (id);

DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE attempts ATTACH PARTITION attempts_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
        herald_id_floor('atmpt_', (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT));
END
$$;

-- Built on the parent, these take over the legacy table's equal indexes.
ALTER TABLE attempts ADD PRIMARY KEY (id);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
CREATE INDEX attempts_by_message ON attempts (message_id, id);
CREATE INDEX attempts_by_app ON attempts (app_id, id);
ALTER TABLE attempts ALTER COLUMN response SET STATISTICS 0;
