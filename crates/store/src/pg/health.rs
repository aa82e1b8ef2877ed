//! PostgreSQL SQL for endpoint health aggregates (statements shared with
//! SQLite, in `shared.rs`).

use sqlx::{PgConnection, Row};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, EndpointId};

use super::admin::get_endpoint;
use super::delivery::list_attempts;
use super::rows::db;
use crate::shared;
use crate::sql;
use crate::{
    AutoDisable, EndpointHealth, EndpointRun, HealthCounts, HealthUpdate, RateDrop, RateRule,
    StoreResult, Timestamp,
};

pub(crate) async fn record_health(
    conn: &mut PgConnection,
    updates: Vec<HealthUpdate>,
    rule: Option<AutoDisable>,
) -> StoreResult<Vec<EndpointRun>> {
    // Losing the last moment of counts in a crash costs nothing that the
    // attempt log does not still hold.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let mut runs = Vec::with_capacity(updates.len());
    for update in &updates {
        let endpoint = update.endpoint_id.to_string();
        let before = status_row(conn, &endpoint).await?;
        for (start, counts) in &update.buckets {
            let mut query = sqlx::query(sql::HEALTH_UPSERT.pg).bind(&endpoint);
            for value in shared::health_values(*start, counts) {
                query = query.bind(value);
            }
            query.execute(&mut *conn).await.map_err(db)?;
        }
        sqlx::query(sql::STATUS_UPSERT.pg)
            .bind(&endpoint)
            .bind(update.failures_since_success as i64)
            .bind(update.last_success_at)
            .bind(update.last_failure_at)
            .bind(update.failing_since)
            .bind(update.last_success_at.is_some())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let after = status_row(conn, &endpoint).await?;
        let at = shared::now();
        let disabled = match shared::auto_disable_due(rule, after, at) {
            Some(rule) => {
                sqlx::query(sql::AUTO_DISABLE.pg)
                    .bind(&endpoint)
                    .bind(at)
                    .bind(at - rule.after)
                    .bind(rule.min_attempts as i64)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?
                    .rows_affected()
                    == 1
            }
            None => false,
        };
        runs.push(shared::endpoint_run(update, before, after, disabled));
    }
    Ok(runs)
}

async fn status_row(
    conn: &mut PgConnection,
    endpoint: &str,
) -> StoreResult<Option<shared::StatusRow>> {
    let row = sqlx::query(sql::STATUS.pg)
        .bind(endpoint)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.map(|row| {
        Ok((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        ))
    })
    .transpose()
    .map_err(db)
}

pub(crate) async fn endpoint_health(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    now: Timestamp,
) -> StoreResult<EndpointHealth> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let id = endpoint.to_string();
    let buckets = buckets(conn, &id, now).await?;
    let status = status_row(conn, &id).await?;
    let recent = list_attempts(conn, app, shared::recent_attempts(endpoint)).await?;
    Ok(shared::endpoint_health(&buckets, status, recent.data, now))
}

pub(crate) async fn purge_health(conn: &mut PgConnection, before: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query(sql::PURGE_HEALTH.pg)
        .bind(before)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

pub(crate) async fn check_success_rate(
    conn: &mut PgConnection,
    endpoint: EndpointId,
    rule: RateRule,
    now: Timestamp,
) -> StoreResult<Option<RateDrop>> {
    let id = endpoint.to_string();
    let buckets = buckets(conn, &id, now).await?;
    let last_hour = shared::last_hour(&buckets, now);
    match shared::rate_dropped(&last_hour, rule) {
        Some(true) => {
            let since: Option<Option<Timestamp>> = sqlx::query_scalar(sql::MARK_RATE_DROP.pg)
                .bind(&id)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
            Ok(since.flatten().map(|since| RateDrop { since, last_hour }))
        }
        Some(false) => {
            sqlx::query(sql::CLEAR_RATE_DROP.pg)
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

async fn buckets(
    conn: &mut PgConnection,
    endpoint: &str,
    now: Timestamp,
) -> StoreResult<Vec<(Timestamp, HealthCounts)>> {
    let rows = sqlx::query(sql::HEALTH_BUCKETS.pg)
        .bind(endpoint)
        .bind(shared::week_start(now))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut buckets = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = [0i64; 16];
        for (i, value) in values.iter_mut().enumerate() {
            *value = row.try_get(i).map_err(db)?;
        }
        buckets.push(shared::health_bucket(values));
    }
    Ok(buckets)
}
