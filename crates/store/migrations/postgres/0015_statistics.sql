-- Herald analyzes its busy tables itself (pg/statistics.rs), often while
-- they are young. The bodies are never filtered on, and sampling them was
-- most of the cost of each ANALYZE (up to ~380 ms for messages with 1 KiB
-- payloads): no statistics for them.
ALTER TABLE messages ALTER COLUMN payload SET STATISTICS 0;
ALTER TABLE attempts ALTER COLUMN response SET STATISTICS 0;
ALTER TABLE inspected_requests ALTER COLUMN body SET STATISTICS 0;
-- Where autovacuum runs, it keeps the statistics of the hot tables fresher
-- than its defaults (10 % of the table changed) would.
ALTER TABLE deliveries SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE messages SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE attempts SET (autovacuum_analyze_scale_factor = 0.02);
