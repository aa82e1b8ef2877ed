//! PostgreSQL SQL for messages and their fan-out, leases (`FOR UPDATE SKIP
//! LOCKED`), attempts and idempotency keys.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{PgConnection, Row};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, AttemptId, EndpointId, EventTypeName, MessageId, Trigger};

use super::admin::{get_app, get_endpoint, signing_secrets};
use super::rows::{self, db, list, Order};
use super::WORK_CHANNEL_SQL;
use crate::shared::{self, now};
use crate::{
    Attempt, AttemptFilter, AttemptOutcome, AttemptQuery, Claim, CreatedMessage, DeliveryJob,
    EndpointTarget, Message, MessageInput, MessageQuery, MessageRef, Page, Reservation, StoreError,
    StoreResult, StoredResponse, Timestamp,
};

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.to_string()))
}

fn endpoint_id(text: &str) -> StoreResult<EndpointId> {
    EndpointId::parse(text).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Enabled endpoints of `app` that subscribe to `event_type` on `channels`,
/// with their signing secrets, in one round trip.
async fn matching_targets(
    conn: &mut PgConnection,
    app: AppId,
    event_type: &EventTypeName,
    channels: Option<&[String]>,
    at: Timestamp,
) -> StoreResult<Vec<Arc<EndpointTarget>>> {
    let rows = sqlx::query(shared::TARGET_ROWS_SQL)
        .bind(app.to_string())
        .bind(at)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok(shared::TargetRow {
                id: row.try_get("id")?,
                url: row.try_get("url")?,
                headers: row.try_get("headers")?,
                filter_types: row.try_get("filter_types")?,
                channels: row.try_get("channels")?,
                secret: row.try_get("secret")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()
        .map_err(db)?;
    shared::matching_targets(rows, event_type, channels)
}

async fn target(
    conn: &mut PgConnection,
    endpoint: &str,
    at: Timestamp,
) -> StoreResult<Arc<EndpointTarget>> {
    let row = sqlx::query("SELECT url, headers FROM endpoints WHERE id = $1")
        .bind(endpoint)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    Ok(Arc::new(EndpointTarget {
        id: endpoint_id(endpoint)?,
        url: row.try_get("url").map_err(db)?,
        headers: decode(&row.try_get::<String, _>("headers").map_err(db)?)?,
        secrets: signing_secrets(conn, endpoint, at).await?,
    }))
}

/// Wakes the workers of every process on this schema (delivered when the
/// transaction commits).
async fn notify_workers(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query(&format!("SELECT pg_notify({WORK_CHANNEL_SQL}, '')"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn create_message(
    conn: &mut PgConnection,
    app: AppId,
    input: MessageInput,
    claim: Option<Claim>,
) -> StoreResult<CreatedMessage> {
    let (app_exists, known): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM apps WHERE id = $1), EXISTS (SELECT 1 FROM event_types WHERE name = $2)",
    )
    .bind(app.to_string())
    .bind(input.event_type.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    if !app_exists {
        return Err(StoreError::NotFound);
    }
    if !known {
        return Err(shared::unknown_event_type(&input.event_type));
    }
    let at = claim.map(|c| c.now).unwrap_or_else(now);
    let message = shared::new_message(app, input, at);
    let message_id = message.id.to_string();
    sqlx::query(
        "INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&message_id)
    .bind(app.to_string())
    .bind(message.event_id.as_ref().map(|e| e.to_string()))
    .bind(message.event_type.as_str())
    .bind(&message.payload)
    .bind(
        message
            .channels
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default()),
    )
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let targets = matching_targets(
        conn,
        app,
        &message.event_type,
        message.channels.as_deref(),
        at,
    )
    .await?;
    if !targets.is_empty() {
        let endpoints: Vec<String> = targets.iter().map(|t| t.id.to_string()).collect();
        sqlx::query(
            "INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
                 next_attempt_at, lease_until, updated_at)
             SELECT $1, endpoint, $2, 1, 0, 0, $3, $4, $3 FROM UNNEST($5::text[]) AS endpoint",
        )
        .bind(&message_id)
        .bind(app.to_string())
        .bind(at)
        .bind(claim.map(|c| c.until))
        .bind(&endpoints)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        if claim.is_none() {
            notify_workers(conn).await?;
        }
    }
    Ok(shared::created(message, targets, claim))
}

pub(crate) async fn get_message(
    conn: &mut PgConnection,
    app: AppId,
    message: &MessageRef,
) -> StoreResult<Message> {
    let (column, value) = match message {
        IdOrUid::Id(id) => ("id", id.to_string()),
        IdOrUid::Uid(event_id) => ("event_id", event_id.to_string()),
    };
    let row = sqlx::query(&format!(
        "SELECT {} FROM messages WHERE app_id = $1 AND {column} = $2",
        rows::MESSAGE_COLUMNS
    ))
    .bind(app.to_string())
    .bind(value)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    rows::message(&row).map_err(db)
}

pub(crate) async fn list_messages(
    conn: &mut PgConnection,
    app: AppId,
    query: MessageQuery,
) -> StoreResult<Page<Message>> {
    get_app(conn, &IdOrUid::Id(app)).await?;
    let (filter, binds) = shared::message_filter(app, &query);
    list(
        conn,
        rows::MESSAGE_COLUMNS,
        "messages",
        &filter,
        binds,
        "id",
        Order::Descending,
        &query.page,
        rows::message,
        |m| m.id.to_string(),
    )
    .await
}

pub(crate) async fn list_attempts(
    conn: &mut PgConnection,
    app: AppId,
    query: AttemptQuery,
) -> StoreResult<Page<Attempt>> {
    match &query.filter {
        AttemptFilter::Endpoint(endpoint) => {
            get_endpoint(conn, app, &IdOrUid::Id(*endpoint)).await?;
        }
        AttemptFilter::Message(message) => {
            get_message(conn, app, &IdOrUid::Id(*message)).await?;
        }
    }
    let (filter, binds) = shared::attempt_filter(app, &query);
    list(
        conn,
        rows::ATTEMPT_COLUMNS,
        "attempts",
        &filter,
        binds,
        "id",
        Order::Descending,
        &query.page,
        rows::attempt,
        |a| a.id.to_string(),
    )
    .await
}

pub(crate) async fn get_attempt(
    conn: &mut PgConnection,
    app: AppId,
    message: MessageId,
    attempt: AttemptId,
) -> StoreResult<Attempt> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM attempts WHERE app_id = $1 AND message_id = $2 AND id = $3",
        rows::ATTEMPT_COLUMNS
    ))
    .bind(app.to_string())
    .bind(message.to_string())
    .bind(attempt.to_string())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    rows::attempt(&row).map_err(db)
}

pub(crate) async fn resend(
    conn: &mut PgConnection,
    app: AppId,
    message: MessageId,
    endpoint: EndpointId,
    claim: Claim,
) -> StoreResult<DeliveryJob> {
    let message = get_message(conn, app, &IdOrUid::Id(message)).await?;
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let row = sqlx::query(
        "INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
             next_attempt_at, lease_until, updated_at)
         VALUES ($1, $2, $3, 1, 0, 1, $4, $5, $4)
         ON CONFLICT (message_id, endpoint_id) DO UPDATE SET
             status = 1, trigger_type = 1, next_attempt_at = $4, lease_until = $5, updated_at = $4
         RETURNING attempts",
    )
    .bind(message.id.to_string())
    .bind(endpoint.to_string())
    .bind(app.to_string())
    .bind(claim.now)
    .bind(claim.until)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    if claim.until <= claim.now {
        notify_workers(conn).await?;
    }
    Ok(DeliveryJob {
        message: Arc::new(message),
        endpoint: target(conn, &endpoint.to_string(), claim.now).await?,
        attempts_made: row.try_get::<i64, _>(0).map_err(db)? as u32,
        trigger: Trigger::Manual,
        lease_until: claim.until,
    })
}

/// Leases due deliveries. `SKIP LOCKED` lets concurrent workers take
/// disjoint batches without waiting on each other; the lease column makes
/// the claim outlive the transaction.
pub(crate) async fn claim_due(
    conn: &mut PgConnection,
    claim: Claim,
    limit: usize,
    skip: &[EndpointId],
) -> StoreResult<Vec<DeliveryJob>> {
    let due = sqlx::query(
        "WITH due AS (
             SELECT d.message_id, d.endpoint_id
             FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
             WHERE d.status = 1 AND d.next_attempt_at <= $1
               AND (d.lease_until IS NULL OR d.lease_until < $1) AND NOT e.disabled
               AND NOT (d.endpoint_id = ANY($4::text[]))
             ORDER BY d.next_attempt_at
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE deliveries SET lease_until = $3
         FROM due
         WHERE deliveries.message_id = due.message_id AND deliveries.endpoint_id = due.endpoint_id
         RETURNING deliveries.message_id, deliveries.endpoint_id, deliveries.attempts, deliveries.trigger_type",
    )
    .bind(claim.now)
    .bind(limit as i64)
    .bind(claim.until)
    .bind(skip.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut messages: HashMap<String, Arc<Message>> = HashMap::new();
    let mut endpoints: HashMap<String, Arc<EndpointTarget>> = HashMap::new();
    let mut jobs = Vec::with_capacity(due.len());
    for row in due {
        let message_id: String = row.try_get(0).map_err(db)?;
        let endpoint: String = row.try_get(1).map_err(db)?;
        let message = match messages.get(&message_id) {
            Some(m) => m.clone(),
            None => {
                let found = sqlx::query(&format!(
                    "SELECT {} FROM messages WHERE id = $1",
                    rows::MESSAGE_COLUMNS
                ))
                .bind(&message_id)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
                let m = Arc::new(rows::message(&found).map_err(db)?);
                messages.insert(message_id, m.clone());
                m
            }
        };
        let target = match endpoints.get(&endpoint) {
            Some(t) => t.clone(),
            None => {
                let t = target(conn, &endpoint, claim.now).await?;
                endpoints.insert(endpoint, t.clone());
                t
            }
        };
        jobs.push(DeliveryJob {
            message,
            endpoint: target,
            attempts_made: row.try_get::<i64, _>(2).map_err(db)? as u32,
            trigger: Trigger::from_code(row.try_get(3).map_err(db)?),
            lease_until: claim.until,
        });
    }
    Ok(jobs)
}

pub(crate) async fn release(
    conn: &mut PgConnection,
    message: MessageId,
    endpoint: EndpointId,
) -> StoreResult<()> {
    sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE message_id = $1 AND endpoint_id = $2 AND status = 1")
        .bind(message.to_string())
        .bind(endpoint.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn record_attempt(
    conn: &mut PgConnection,
    outcome: AttemptOutcome,
) -> StoreResult<()> {
    // Not waiting for the WAL flush here is safe: if PostgreSQL crashes
    // before it, the delivery is still leased-pending and is sent again
    // (at-least-once); only the lost attempt's log line is gone.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let attempt = &outcome.attempt;
    sqlx::query(
        "INSERT INTO attempts (id, app_id, message_id, endpoint_id, url, status, response_status_code,
             response, response_duration_ms, error_class, trigger_type, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(attempt.id.to_string())
    .bind(attempt.app_id.to_string())
    .bind(attempt.message_id.to_string())
    .bind(attempt.endpoint_id.to_string())
    .bind(&attempt.url)
    .bind(attempt.status.code())
    .bind(i64::from(attempt.response_status_code))
    // PostgreSQL text cannot hold NUL bytes; receivers sometimes send them.
    .bind(attempt.response.replace('\0', "\u{FFFD}"))
    .bind(attempt.response_duration_ms as i64)
    .bind(attempt.error_class.map(|c| c.as_str()))
    .bind(attempt.trigger.code())
    .bind(attempt.created_at)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let (status, next_attempt_at) = outcome.next.delivery_state();
    sqlx::query(
        "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2,
             lease_until = NULL, updated_at = $3
         WHERE message_id = $4 AND endpoint_id = $5 AND lease_until = $6",
    )
    .bind(status.code())
    .bind(next_attempt_at)
    .bind(attempt.created_at)
    .bind(attempt.message_id.to_string())
    .bind(attempt.endpoint_id.to_string())
    .bind(outcome.lease_until)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if outcome.disable_endpoint {
        sqlx::query("UPDATE endpoints SET disabled = TRUE, updated_at = $1 WHERE id = $2")
            .bind(attempt.created_at)
            .bind(attempt.endpoint_id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) async fn next_due_at(
    conn: &mut PgConnection,
    skip: &[EndpointId],
) -> StoreResult<Option<Timestamp>> {
    let row = sqlx::query(
        "SELECT d.next_attempt_at FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 1 AND d.lease_until IS NULL AND NOT e.disabled
           AND NOT (d.endpoint_id = ANY($1::text[]))
         ORDER BY d.next_attempt_at LIMIT 1",
    )
    .bind(skip.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.map(|r| r.try_get(0).map_err(db)).transpose()
}

/// Status stored for a key whose request is still running.
const IN_PROGRESS: i64 = 0;

pub(crate) async fn reserve_idempotency_key(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    now: Timestamp,
    stale_before: Timestamp,
) -> StoreResult<Reservation> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, status, body, created_at) VALUES ($1, $2, $3, '', $4)
         ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(IN_PROGRESS)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if inserted.rows_affected() == 1 {
        return Ok(Reservation::Reserved);
    }
    let row = sqlx::query(
        "SELECT status, body, created_at FROM idempotency_keys WHERE scope = $1 AND key = $2 FOR UPDATE",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let status: i64 = row.try_get(0).map_err(db)?;
    let created_at: Timestamp = row.try_get(2).map_err(db)?;
    if status != IN_PROGRESS {
        return Ok(Reservation::Done(StoredResponse {
            status: status as u16,
            body: row.try_get(1).map_err(db)?,
            created_at,
        }));
    }
    if created_at < stale_before {
        sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE scope = $2 AND key = $3 AND status = $4")
            .bind(now)
            .bind(scope)
            .bind(key)
            .bind(IN_PROGRESS)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        return Ok(Reservation::Reserved);
    }
    Ok(Reservation::InProgress)
}

pub(crate) async fn complete_idempotency_key(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    response: StoredResponse,
) -> StoreResult<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE scope = $3 AND key = $4")
        .bind(i64::from(response.status))
        .bind(&response.body)
        .bind(scope)
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn abandon_idempotency_key(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status = $3")
        .bind(scope)
        .bind(key)
        .bind(IN_PROGRESS)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn purge_idempotency_keys(
    conn: &mut PgConnection,
    before: Timestamp,
) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(before)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}
