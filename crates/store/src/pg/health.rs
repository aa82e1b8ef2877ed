//! PostgreSQL SQL for endpoint health aggregates (statements shared with
//! SQLite, in `shared.rs`).

use sqlx::{PgConnection, Row};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, EndpointId};

use super::admin::get_endpoint;
use super::delivery::list_attempts;
use super::rows::db;
use crate::shared;
use crate::{
    AttemptFilter, AttemptQuery, AutoDisable, Cursor, EndpointHealth, HealthUpdate, PageRequest,
    StoreResult, Timestamp,
};

pub(crate) async fn record_health(
    conn: &mut PgConnection,
    updates: &[HealthUpdate],
    rule: Option<AutoDisable>,
) -> StoreResult<Vec<EndpointId>> {
    // Losing the last moment of counts in a crash costs nothing that the
    // attempt log does not still hold.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    for update in updates {
        let endpoint = update.endpoint_id.to_string();
        for (start, counts) in &update.buckets {
            let mut query = sqlx::query(shared::HEALTH_UPSERT_SQL).bind(&endpoint);
            for value in shared::health_values(*start, counts) {
                query = query.bind(value);
            }
            query.execute(&mut *conn).await.map_err(db)?;
        }
        sqlx::query(shared::STATUS_UPSERT_SQL)
            .bind(&endpoint)
            .bind(update.failures_since_success as i64)
            .bind(update.last_success_at)
            .bind(update.last_failure_at)
            .bind(update.failing_since)
            .bind(update.last_success_at.is_some())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let Some(rule) = rule else {
        return Ok(Vec::new());
    };
    let at = shared::now();
    let mut disabled = Vec::new();
    for update in updates {
        let changed = sqlx::query(shared::AUTO_DISABLE_SQL)
            .bind(update.endpoint_id.to_string())
            .bind(at)
            .bind(at - rule.after)
            .bind(rule.min_attempts as i64)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        if changed.rows_affected() == 1 {
            disabled.push(update.endpoint_id);
        }
    }
    Ok(disabled)
}

pub(crate) async fn endpoint_health(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    now: Timestamp,
) -> StoreResult<EndpointHealth> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let id = endpoint.to_string();
    let rows = sqlx::query(shared::HEALTH_BUCKETS_SQL)
        .bind(&id)
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
    let [last_hour, last_day, last_week] = shared::health_windows(&buckets, now);
    let status = sqlx::query(shared::STATUS_SQL)
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    let (consecutive, last_success_at, last_failure_at, failing_since) = match status {
        Some(row) => (
            row.try_get::<i64, _>(0).map_err(db)?,
            row.try_get(1).map_err(db)?,
            row.try_get(2).map_err(db)?,
            row.try_get(3).map_err(db)?,
        ),
        None => (0, None, None, None),
    };
    let recent = list_attempts(
        conn,
        app,
        AttemptQuery::new(
            AttemptFilter::Endpoint(endpoint),
            PageRequest {
                limit: 20,
                cursor: Cursor::Start,
            },
        ),
    )
    .await?
    .data;
    Ok(EndpointHealth {
        last_hour,
        last_day,
        last_week,
        recent,
        consecutive_failures: consecutive.max(0) as u64,
        last_success_at,
        last_failure_at,
        failing_since,
    })
}

pub(crate) async fn purge_health(conn: &mut PgConnection, before: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM endpoint_health WHERE bucket < $1")
        .bind(before)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}
