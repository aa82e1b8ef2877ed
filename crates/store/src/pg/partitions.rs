//! The attempt log's weekly partitions (migration 16): created a week
//! ahead, dropped once wholly older than the retention period. Attempt ids
//! are ULIDs, so a week's attempts are the ids between the smallest ids of
//! its first and of the next week's first millisecond. Weeks, not days:
//! a listing without an id bound is planned over every partition, and a
//! year of daily partitions cost 60–100 ms of planning per listing
//! (BENCHMARKS.md); retention is then up to a week late. Both jobs run in one
//! process per schema at a time (an advisory lock), and pick up where they
//! stopped after a restart: they read the partitions there are, not a
//! record of their own.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};

use herald_domain::AttemptId;

use super::rows::db;
use crate::{StoreError, StoreResult, Timestamp};

const DAY_MS: i64 = 86_400_000;

/// One partition: a week, Monday 00:00 UTC to the next.
const PERIOD_MS: i64 = 7 * DAY_MS;

/// 1970-01-01 was a Thursday: the first Monday is four days later.
const FIRST_MONDAY_MS: i64 = 4 * DAY_MS;

/// How often the partitions ahead are checked.
pub(crate) const EVERY: Duration = Duration::from_secs(600);

/// One partition of `attempts`: ids up to (not including) `end`'s.
#[derive(Debug)]
struct Partition {
    name: String,
    /// The unix milliseconds of the partition's upper bound.
    end: Timestamp,
    /// A detach that did not finish (the process died during it).
    detach_pending: bool,
}

/// The start of the week (Monday 00:00 UTC) that holds `ms`.
fn period_start(ms: Timestamp) -> Timestamp {
    ms - (ms - FIRST_MONDAY_MS).rem_euclid(PERIOD_MS)
}

/// `attempts_YYYYMMDD` for the UTC day that starts at `day` (civil date
/// from the day number, after Howard Hinnant's algorithm).
fn partition_name(day: Timestamp) -> String {
    let z = day.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("attempts_{y:04}{m:02}{d:02}")
}

/// The smallest attempt id made at `ms`, as a partition bound.
fn bound(ms: Timestamp) -> String {
    AttemptId::lowest_at(ms).to_string()
}

/// The upper bound of a partition, from `pg_get_expr(relpartbound)`:
/// `FOR VALUES FROM (…) TO ('atmpt_…')`.
fn upper_bound(expression: &str) -> StoreResult<Timestamp> {
    let id = expression
        .split_once(" TO ('")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(id, _)| id)
        .ok_or_else(|| StoreError::Internal(format!("unexpected partition bound {expression}")))?;
    AttemptId::parse(id)
        .map(|id| id.timestamp_ms())
        .map_err(|e| StoreError::Internal(format!("partition bound {id}: {e}")))
}

/// Whether `name` is a partition of `attempts` as Herald names them; names
/// reach SQL unquoted (here and in the statistics keeper), so they are
/// checked first.
pub(crate) fn is_partition(name: &str) -> bool {
    name.strip_prefix("attempts_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

fn plain(name: &str) -> StoreResult<&str> {
    if is_partition(name) {
        Ok(name)
    } else {
        Err(StoreError::Internal(format!("unexpected partition {name}")))
    }
}

async fn partitions(conn: &mut PgConnection) -> StoreResult<Vec<Partition>> {
    let rows = sqlx::query(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'attempts'::regclass",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let expression: String = row.try_get(1).map_err(db)?;
            Ok(Partition {
                name: row.try_get(0).map_err(db)?,
                end: upper_bound(&expression)?,
                detach_pending: row.try_get(2).map_err(db)?,
            })
        })
        .collect()
}

/// Creates the partitions missing between the newest one and the end of
/// the week after `now`'s (so at least a week is always ready); returns
/// how many.
pub(crate) async fn create_ahead(pool: &PgPool, now: Timestamp) -> StoreResult<usize> {
    let mut transaction = pool.begin().await.map_err(db)?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('herald partitions'), hashtext(current_schema()))",
    )
    .execute(&mut *transaction)
    .await
    .map_err(db)?;
    let existing = partitions(&mut transaction).await?;
    let horizon = period_start(now) + 2 * PERIOD_MS;
    // Contiguous from the newest bound: the table never has a gap. Without
    // any partition (all dropped), from the start of today.
    let mut end = existing
        .iter()
        .map(|p| p.end)
        .max()
        .unwrap_or_else(|| period_start(now));
    let mut created = 0;
    while end < horizon {
        let next = period_start(end) + PERIOD_MS;
        let name = partition_name(period_start(end));
        sqlx::query(&format!(
            "CREATE TABLE {} PARTITION OF attempts FOR VALUES FROM ('{}') TO ('{}')
             WITH (autovacuum_analyze_scale_factor = 0.02)",
            plain(&name)?,
            bound(end),
            bound(next)
        ))
        .execute(&mut *transaction)
        .await
        .map_err(db)?;
        end = next;
        created += 1;
    }
    transaction.commit().await.map_err(db)?;
    Ok(created)
}

/// Drops the partitions whose every attempt is older than `before` (never
/// one that may still receive attempts: the cut is at most `now`). The
/// partition is detached concurrently first, so inserts and listings are
/// never blocked; a detach left half done by a dead process is finished.
/// Returns how many partitions went.
pub(crate) async fn drop_before(
    pool: &PgPool,
    before: Timestamp,
    now: Timestamp,
) -> StoreResult<u64> {
    let cut = before.min(now);
    let mut conn = pool.acquire().await.map_err(db)?;
    let ours: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtext('herald partition drops'), hashtext(current_schema()))",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    if !ours {
        return Ok(0);
    }
    let result = drop_each(&mut conn, cut).await;
    let unlocked = sqlx::query(
        "SELECT pg_advisory_unlock(hashtext('herald partition drops'), hashtext(current_schema()))",
    )
    .execute(&mut *conn)
    .await;
    if unlocked.is_err() {
        // Closing the connection is what releases the lock then.
        conn.detach();
    }
    result
}

async fn drop_each(conn: &mut PgConnection, cut: Timestamp) -> StoreResult<u64> {
    let mut dropped = 0;
    for partition in partitions(conn).await? {
        if partition.end > cut {
            continue;
        }
        let name = plain(&partition.name)?;
        // Outside a transaction: `CONCURRENTLY` needs it so.
        let detach = if partition.detach_pending {
            format!("ALTER TABLE attempts DETACH PARTITION {name} FINALIZE")
        } else {
            format!("ALTER TABLE attempts DETACH PARTITION {name} CONCURRENTLY")
        };
        sqlx::query(&detach)
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        sqlx::query(&format!("DROP TABLE {name}"))
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Keeps the partitions ahead every [`EVERY`] until aborted.
pub(crate) async fn keep(pool: PgPool) {
    loop {
        tokio::time::sleep(EVERY).await;
        if let Err(error) = create_ahead(&pool, crate::shared::now()).await {
            tracing::error!(%error, "creating the attempt log's partitions ahead failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_are_named_by_their_utc_date() {
        assert_eq!(partition_name(0), "attempts_19700101");
        // 2026-12-02T00:00:00Z (a Wednesday) and 2028-02-29 (a leap day).
        let wednesday = 1_796_169_600_000;
        assert_eq!(partition_name(wednesday), "attempts_20261202");
        assert_eq!(partition_name(1_835_395_200_000), "attempts_20280229");
        assert_eq!(period_start(wednesday + 5), wednesday - 2 * DAY_MS);
        assert_eq!(partition_name(period_start(wednesday)), "attempts_20261130");
        assert_eq!(period_start(wednesday - 2 * DAY_MS), wednesday - 2 * DAY_MS);
        assert_eq!(
            period_start(FIRST_MONDAY_MS - 1),
            FIRST_MONDAY_MS - PERIOD_MS
        );
    }

    #[test]
    fn the_upper_bound_is_read_from_the_partition_expression() {
        let at = 1_796_169_600_000;
        let expression = format!("FOR VALUES FROM (MINVALUE) TO ('{}')", bound(at));
        assert_eq!(upper_bound(&expression).unwrap(), at);
        let expression = format!(
            "FOR VALUES FROM ('{}') TO ('{}')",
            bound(at - DAY_MS),
            bound(at)
        );
        assert_eq!(upper_bound(&expression).unwrap(), at);
        assert!(plain("attempts_20261202").is_ok());
        assert!(plain("attempts_legacy").is_ok());
        assert!(plain("attempts; DROP TABLE apps").is_err());
        assert!(plain("apps").is_err());
    }
}
