//! SQL for endpoint health aggregates (the statements are shared with
//! PostgreSQL; SQLite runs them with `?n` placeholders).

use rusqlite::{params, Connection, OptionalExtension};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, EndpointId};

use super::admin::{get_endpoint, now};
use super::delivery::list_attempts;
use super::pool::internal;
use crate::shared;
use crate::sql;
use crate::{
    AutoDisable, EndpointHealth, EndpointRun, HealthCounts, HealthUpdate, RateDrop, RateRule,
    StoreResult, Timestamp,
};

pub(crate) fn record_health(
    conn: &Connection,
    updates: Vec<HealthUpdate>,
    rule: Option<AutoDisable>,
) -> StoreResult<Vec<EndpointRun>> {
    let mut bucket = conn
        .prepare_cached(sql::HEALTH_UPSERT.sqlite)
        .map_err(internal)?;
    let mut status = conn
        .prepare_cached(sql::STATUS_UPSERT.sqlite)
        .map_err(internal)?;
    let mut runs = Vec::with_capacity(updates.len());
    for update in &updates {
        let endpoint = update.endpoint_id.to_string();
        let before = status_row(conn, &endpoint)?;
        for (start, counts) in &update.buckets {
            let values = shared::health_values(*start, counts);
            let mut binds: Vec<rusqlite::types::Value> = vec![endpoint.clone().into()];
            binds.extend(values.iter().map(|v| rusqlite::types::Value::Integer(*v)));
            bucket
                .execute(rusqlite::params_from_iter(binds))
                .map_err(internal)?;
        }
        status
            .execute(params![
                endpoint,
                update.failures_since_success as i64,
                update.last_success_at,
                update.last_failure_at,
                update.failing_since,
                update.last_success_at.is_some()
            ])
            .map_err(internal)?;
        let after = status_row(conn, &endpoint)?;
        let at = now();
        let disabled = match shared::auto_disable_due(rule, after, at) {
            Some(rule) => {
                conn.prepare_cached(sql::AUTO_DISABLE.sqlite)
                    .and_then(|mut s| {
                        s.execute(params![
                            endpoint,
                            at,
                            at - rule.after,
                            rule.min_attempts as i64
                        ])
                    })
                    .map_err(internal)?
                    == 1
            }
            None => false,
        };
        runs.push(shared::endpoint_run(update, before, after, disabled));
    }
    Ok(runs)
}

fn status_row(conn: &Connection, endpoint: &str) -> StoreResult<Option<shared::StatusRow>> {
    conn.prepare_cached(sql::STATUS.sqlite)
        .and_then(|mut s| {
            s.query_row([endpoint], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(internal)
}

pub(crate) fn endpoint_health(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    now: Timestamp,
) -> StoreResult<EndpointHealth> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    let id = endpoint.to_string();
    let buckets = buckets(conn, &id, now)?;
    let status = status_row(conn, &id)?;
    let recent = list_attempts(conn, app, shared::recent_attempts(endpoint))?;
    Ok(shared::endpoint_health(&buckets, status, recent.data, now))
}

pub(crate) fn purge_health(conn: &Connection, before: Timestamp) -> StoreResult<u64> {
    conn.execute(sql::PURGE_HEALTH.sqlite, [before])
        .map(|n| n as u64)
        .map_err(internal)
}

fn buckets(
    conn: &Connection,
    endpoint: &str,
    now: Timestamp,
) -> StoreResult<Vec<(Timestamp, HealthCounts)>> {
    conn.prepare_cached(sql::HEALTH_BUCKETS.sqlite)
        .and_then(|mut s| {
            s.query_map(params![endpoint, shared::week_start(now)], |r| {
                let mut values = [0i64; 16];
                for (i, value) in values.iter_mut().enumerate() {
                    *value = r.get(i)?;
                }
                Ok(shared::health_bucket(values))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal)
}

pub(crate) fn check_success_rate(
    conn: &Connection,
    endpoint: EndpointId,
    rule: RateRule,
    now: Timestamp,
) -> StoreResult<Option<RateDrop>> {
    let id = endpoint.to_string();
    let last_hour = shared::last_hour(&buckets(conn, &id, now)?, now);
    match shared::rate_dropped(&last_hour, rule) {
        Some(true) => {
            let since: Option<Timestamp> = conn
                .prepare_cached(sql::MARK_RATE_DROP.sqlite)
                .and_then(|mut s| s.query_row(params![id, now], |r| r.get(0)).optional())
                .map_err(internal)?
                .flatten();
            Ok(since.map(|since| RateDrop { since, last_hour }))
        }
        Some(false) => {
            conn.prepare_cached(sql::CLEAR_RATE_DROP.sqlite)
                .and_then(|mut s| s.execute([id]))
                .map_err(internal)?;
            Ok(None)
        }
        None => Ok(None),
    }
}
