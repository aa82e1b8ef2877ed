//! Keeps the planner's statistics of Herald's busy tables fresh, whether
//! or not autovacuum runs. A young table that grew since it was last
//! analyzed is planned as if it were still small (a sequential scan where
//! an index lookup was wanted), and delivery collapsed with it in
//! benchmarks: from ~3,700 to ~600 deliveries/s on a fresh database, until
//! an `ANALYZE` restored the rate. So every few seconds one process (an
//! advisory lock) looks at how much each table changed since its last
//! `ANALYZE` and runs it on the table most past `1,000` changes plus as
//! many as the rows the statistics know: often while a table is young,
//! rarely once it is large, and one table at a time. (At `1,000 + 10 %`, a
//! table growing by 5,000 rows a second was analyzed every two seconds,
//! the three busy tables together; each run sampled 30,000 rows, 100 to
//! 280 ms of a core, and the acceptance latency stalled for a second
//! after each cluster — benchmarks in BENCHMARKS.md. Once a table has
//! statistics, the planner scales their row count by the table's current
//! size on its own: what a young table lacks is a first picture, not a
//! fresh one every 10 %.)

use std::time::Duration;

use sqlx::{PgPool, Row};

use super::rows::db;
use crate::StoreResult;

/// The tables whose plans matter to delivery and listings, besides the
/// partitions of `attempts` (the partitioned parent holds no rows).
const TABLES: &[&str] = &[
    "messages",
    "deliveries",
    "endpoint_health",
    "endpoint_status",
    "idempotency_keys",
];

/// How often the tables are looked at.
const EVERY: Duration = Duration::from_secs(2);

/// Changes since the last `ANALYZE` that make a table due: this many…
const BASE_CHANGES: f64 = 1_000.0;
/// …plus this share of the rows the statistics know.
const SHARE_CHANGED: f64 = 1.0;

/// The keeper's runs sample 3,000 rows instead of the default 30,000
/// (300 × the statistics target): what a young table's plans need is its
/// size and the shape of its keys, and a 3,000-row sample gives both
/// (row count within 0.01 % on 100,000 rows of 1 KiB messages) in 12–16
/// ms instead of 215. Autovacuum, where it runs, still analyzes with the
/// server's default target.
const SMALL_SAMPLE: &str = "SET LOCAL default_statistics_target = 10";

/// How far a table with `known_rows` in its statistics (negative: never
/// analyzed) and `changed` rows since is past its due point: `≥ 1` when it
/// is due for `ANALYZE`.
fn overdue(known_rows: f64, changed: i64) -> f64 {
    changed as f64 / (BASE_CHANGES + SHARE_CHANGED * known_rows.max(0.0))
}

/// Of `(table, rows the statistics know, changes since)`, the one of ours
/// most past its due point, if any is due. One table per look: the others
/// wait for the next, so the runs (and the plans they invalidate) are
/// spread out in time.
fn most_overdue(counts: Vec<(String, f64, i64)>) -> Option<String> {
    counts
        .into_iter()
        // Only names from TABLES or of partitions reach the statement.
        .filter(|(table, _, _)| {
            TABLES.contains(&table.as_str()) || super::partitions::is_partition(table)
        })
        .map(|(table, known, changed)| (overdue(known, changed), table))
        .filter(|(past, _)| *past >= 1.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, table)| table)
}

/// Analyzes the busy tables that are due, unless another process is doing
/// it; returns those analyzed.
pub(crate) async fn refresh(pool: &PgPool) -> StoreResult<Vec<String>> {
    let mut transaction = pool.begin().await.map_err(db)?;
    // One keeper per schema: deployments sharing a database in different
    // schemas each keep their own tables.
    let ours: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('herald statistics'), hashtext(current_schema()))",
    )
    .fetch_one(&mut *transaction)
        .await
        .map_err(db)?;
    if !ours {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT s.relname::text, c.reltuples::float8, s.n_mod_since_analyze
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.schemaname = current_schema()
           AND (s.relname = ANY($1) OR s.relname LIKE 'attempts\\_%')",
    )
    .bind(TABLES)
    .fetch_all(&mut *transaction)
    .await
    .map_err(db)?;
    let counts = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db)?;
    let mut analyzed = Vec::new();
    if let Some(table) = most_overdue(counts) {
        sqlx::query(SMALL_SAMPLE)
            .execute(&mut *transaction)
            .await
            .map_err(db)?;
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&mut *transaction)
            .await
            .map_err(db)?;
        analyzed.push(table);
    }
    transaction.commit().await.map_err(db)?;
    Ok(analyzed)
}

/// Runs [`refresh`] every [`EVERY`] until aborted.
pub(crate) async fn keep(pool: PgPool) {
    loop {
        tokio::time::sleep(EVERY).await;
        match refresh(&pool).await {
            Ok(analyzed) if !analyzed.is_empty() => {
                tracing::debug!(?analyzed, "refreshed planner statistics");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "refreshing planner statistics failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{most_overdue, overdue};

    #[test]
    fn one_look_analyzes_only_the_most_overdue_of_its_own_tables() {
        let counts = |rows: &[(&str, f64, i64)]| {
            rows.iter()
                .map(|(t, k, c)| (t.to_string(), *k, *c))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            most_overdue(counts(&[
                ("messages", 10_000.0, 12_000),
                ("deliveries", -1.0, 5_000),
                ("attempts_20261130", 0.0, 2_000),
            ])),
            Some("deliveries".to_owned()),
            "three due, the one furthest past its point"
        );
        assert_eq!(
            most_overdue(counts(&[("messages", 10_000.0, 10_999)])),
            None,
            "none due"
        );
        assert_eq!(
            most_overdue(counts(&[("someone_elses", -1.0, 1_000_000)])),
            None,
            "not ours"
        );
    }

    #[test]
    fn a_table_is_due_after_a_thousand_changes_plus_as_many_as_its_rows() {
        assert!(overdue(-1.0, 999) < 1.0, "never analyzed, barely written");
        assert!(
            overdue(-1.0, 1_000) >= 1.0,
            "never analyzed, a thousand rows"
        );
        assert!(overdue(100_000.0, 100_999) < 1.0);
        assert!(overdue(100_000.0, 101_000) >= 1.0);
        assert!(
            overdue(0.0, 5_000) > overdue(100_000.0, 150_000),
            "a young table comes first"
        );
    }
}
