//! Keeps the planner's statistics of Herald's busy tables fresh, whether
//! or not autovacuum runs. A young table that grew since it was last
//! analyzed is planned as if it were still small (a sequential scan where
//! an index lookup was wanted), and delivery collapsed with it in
//! benchmarks: from ~3,700 to ~600 deliveries/s on a fresh database, until
//! an `ANALYZE` restored the rate. So every few seconds one process (an
//! advisory lock) looks at how much each table changed since its last
//! `ANALYZE` and runs it where the change passes `1,000 + 10 %` of the
//! rows the statistics know: often while a table is young, rarely once it
//! is large (each run samples at most 30,000 rows, however large).

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
const SHARE_CHANGED: f64 = 0.1;

/// Whether a table with `known_rows` in its statistics (negative: never
/// analyzed) and `changed` rows since is due for `ANALYZE`.
fn due(known_rows: f64, changed: i64) -> bool {
    changed as f64 >= BASE_CHANGES + SHARE_CHANGED * known_rows.max(0.0)
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
    let mut analyzed = Vec::new();
    for row in rows {
        let table: String = row.try_get(0).map_err(db)?;
        let known: f64 = row.try_get(1).map_err(db)?;
        let changed: i64 = row.try_get(2).map_err(db)?;
        // Only names from TABLES or of partitions reach the statement.
        let ours = TABLES.contains(&table.as_str()) || super::partitions::is_partition(&table);
        if due(known, changed) && ours {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(&mut *transaction)
                .await
                .map_err(db)?;
            analyzed.push(table);
        }
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
    use super::due;

    #[test]
    fn a_table_is_due_after_a_thousand_changes_plus_a_tenth_of_its_rows() {
        assert!(!due(-1.0, 999), "never analyzed, barely written");
        assert!(due(-1.0, 1_000), "never analyzed, a thousand rows");
        assert!(!due(100_000.0, 10_999));
        assert!(due(100_000.0, 11_000));
    }
}
