//! PostgreSQL SQL for messages and their fan-out, leases (`FOR UPDATE SKIP
//! LOCKED`), attempts and idempotency keys.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{PgConnection, Row};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, AttemptId, EndpointId, EndpointUrl, MessageId, Trigger};

use herald_domain::sealing::Sealing;

use super::admin::{get_app, get_endpoint, signing_secrets};
use super::rows::{self, db, list, list_within};
use super::WORK_CHANNEL_SQL;
use crate::listing::{Filling, Listing};
use crate::shared;
use crate::sql;
use crate::SendSlot;
use crate::{
    Attempt, AttemptFilter, AttemptQuery, Claim, DeliveryJob, EndpointTarget, Message,
    MessageQuery, MessageRef, Page, Reservation, Room, StoreError, StoreResult, StoredResponse,
    Timestamp,
};

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.to_string()))
}

fn endpoint_id(text: &str) -> StoreResult<EndpointId> {
    EndpointId::parse(text).map_err(|e| StoreError::Internal(e.to_string()))
}

async fn target(
    conn: &mut PgConnection,
    endpoint: &str,
    at: Timestamp,
    sealing: &Sealing,
) -> StoreResult<Arc<EndpointTarget>> {
    let row = sqlx::query(sql::DELIVERY_TARGET.pg)
        .bind(endpoint)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    Ok(Arc::new(EndpointTarget {
        id: endpoint_id(endpoint)?,
        url: EndpointUrl::stored(&row.try_get::<String, _>("url").map_err(db)?)
            .map_err(|e| StoreError::Internal(e.to_string()))?,
        headers: decode(&row.try_get::<String, _>("headers").map_err(db)?)?,
        secrets: signing_secrets(conn, endpoint, at, sealing).await?,
        retry_policy: shared::decode_policy(row.try_get("retry_policy").map_err(db)?)?
            .map(Arc::new),
        rate_limit: row
            .try_get::<Option<i64>, _>("rate_limit")
            .map_err(db)?
            .map(|r| r.clamp(0, i64::from(u32::MAX)) as u32),
        strict_ordering: row.try_get("strict_ordering").map_err(db)?,
        options: herald_domain::DeliveryOptions::decode(
            row.try_get::<Option<String>, _>("options")
                .map_err(db)?
                .as_deref(),
        ),
    }))
}

/// Wakes the workers of every process on this schema (delivered when the
/// transaction commits).
pub(crate) async fn notify_workers(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query(&format!("SELECT pg_notify({WORK_CHANNEL_SQL}, '')"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
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
    let filling = Filling::bounded(query.max_payload_bytes, |m: &Message| m.payload.len());
    list_within(
        conn,
        Listing::messages(app, &query),
        &query.page,
        rows::message,
        |m| m.id.to_string(),
        filling,
    )
    .await
}

pub(crate) async fn list_endpoint_messages(
    conn: &mut PgConnection,
    app: AppId,
    query: crate::EndpointMessageQuery,
) -> StoreResult<Page<crate::EndpointMessage>> {
    super::admin::get_endpoint(conn, app, &IdOrUid::Id(query.endpoint)).await?;
    list_within(
        conn,
        Listing::endpoint_messages(app, &query),
        &query.messages.page,
        rows::endpoint_message,
        |m| m.message.id.to_string(),
        Filling::bounded(query.messages.max_payload_bytes, |m| {
            m.message.payload.len()
        }),
    )
    .await
}

/// `endpoint`'s unsettled deliveries, soonest due first.
pub(crate) async fn pending_deliveries(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    limit: usize,
) -> StoreResult<Vec<crate::PendingDelivery>> {
    let rows = sqlx::query(sql::PENDING_OF_ENDPOINT.pg)
        .bind(app.to_string())
        .bind(endpoint.to_string())
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            shared::pending_delivery(
                &row.try_get::<String, _>(0).map_err(db)?,
                row.try_get(1).map_err(db)?,
                row.try_get(2).map_err(db)?,
                row.try_get(3).map_err(db)?,
                row.try_get(4).map_err(db)?,
            )
        })
        .collect()
}

/// The endpoints `message` was fanned out to, with their deliveries' state.
pub(crate) async fn list_destinations(
    conn: &mut PgConnection,
    app: AppId,
    message: MessageId,
    page: crate::PageRequest,
) -> StoreResult<Page<crate::Destination>> {
    get_message(conn, app, &IdOrUid::Id(message)).await?;
    list(
        conn,
        Listing::destinations(app, message),
        &page,
        rows::destination,
        |d| d.endpoint.id.to_string(),
    )
    .await
}

/// Erases `message`'s payload (and the stored idempotent answers that
/// carry it); its pending deliveries end as failed, each with an attempt
/// that says why.
pub(crate) async fn expunge_attempt_content(
    conn: &mut PgConnection,
    app: AppId,
    message: MessageId,
    attempt: AttemptId,
) -> StoreResult<()> {
    let changed = sqlx::query(sql::EXPUNGE_ATTEMPT_RESPONSE.pg)
        .bind(app.to_string())
        .bind(message.to_string())
        .bind(attempt.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if changed.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn remove_content(
    conn: &mut PgConnection,
    app: AppId,
    message: MessageId,
) -> StoreResult<()> {
    let at = shared::now();
    let removed = sqlx::query(sql::REMOVE_CONTENT.pg)
        .bind(app.to_string())
        .bind(message.to_string())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if removed.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let pending = sqlx::query(sql::PENDING_DESTINATIONS.pg)
        .bind(message.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    for row in pending {
        sqlx::query(sql::UNSENT_ATTEMPT.pg)
            .bind(AttemptId::generate().to_string())
            .bind(app.to_string())
            .bind(message.to_string())
            .bind(row.try_get::<String, _>(0).map_err(db)?)
            .bind(row.try_get::<String, _>(1).map_err(db)?)
            .bind(shared::CONTENT_REMOVED_WHY)
            .bind(herald_domain::ErrorClass::ContentRemoved.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    sqlx::query(sql::FAIL_PENDING_DELIVERIES.pg)
        .bind(message.to_string())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query(sql::BLANK_ANSWERS_PG)
        .bind(shared::answers_of(message))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
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
        AttemptFilter::App => {
            get_app(conn, &IdOrUid::Id(app)).await?;
        }
    }
    list(
        conn,
        Listing::attempts(app, &query),
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
    sealing: &Sealing,
) -> StoreResult<DeliveryJob> {
    let message = get_message(conn, app, &IdOrUid::Id(message)).await?;
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let removed: Option<i64> = sqlx::query_scalar(sql::CONTENT_REMOVED_AT.pg)
        .bind(message.id.to_string())
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if removed.is_some() {
        return Err(StoreError::ContentRemoved);
    }
    let row = sqlx::query(sql::SCHEDULE_RESEND.pg)
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
        endpoint: target(conn, &endpoint.to_string(), claim.now, sealing).await?,
        attempts_made: row.try_get::<i64, _>(0).map_err(db)? as u32,
        trigger: Trigger::Manual,
        lease_until: claim.until,
    })
}

/// Whether the due delivery `d` may be claimed: its endpoint is enabled
/// and, when strictly ordered, `d` is its oldest pending message. A scalar
/// subquery per row rather than a join, so the plan cannot change with the
/// statistics: a join let the planner hash every due row (a backlog of
/// 90,000), sort them on disk and keep 256 — 144 ms per claim — where
/// walking `deliveries_due` in order stops at the 256th.
const CLAIMABLE: &str = "(SELECT NOT e.disabled AND (NOT e.strict_ordering OR d.message_id = (
         SELECT MIN(o.message_id) FROM deliveries o
         WHERE o.endpoint_id = d.endpoint_id AND o.status = 1))
     FROM endpoints e WHERE e.id = d.endpoint_id)";

/// Leases due deliveries: of the oldest `limit` due rows, at most each
/// endpoint's room. `SKIP LOCKED` lets concurrent workers take disjoint
/// batches without waiting on each other (rows left out for want of room
/// are locked only until the statement ends); the lease column makes the
/// claim outlive the transaction. Reading further than `limit` rows to
/// fill the claim past endpoints without room would lock rows for nothing:
/// the claim is smaller instead, and the next one reads on.
pub(crate) async fn claim_due(
    conn: &mut PgConnection,
    claim: Claim,
    limit: usize,
    room: Room,
    sealing: &Sealing,
) -> StoreResult<Vec<DeliveryJob>> {
    let (partial, rooms): (Vec<String>, Vec<i64>) = room
        .partial()
        .map(|(endpoint, room)| (endpoint.to_string(), room as i64))
        .unzip();
    let due = sqlx::query(&format!(
        "WITH oldest AS (
             SELECT d.message_id, d.endpoint_id, d.next_attempt_at
             FROM deliveries d
             WHERE d.status = 1 AND d.next_attempt_at <= $1
               AND NOT (d.endpoint_id = ANY($4::text[])) AND {CLAIMABLE}
             ORDER BY d.next_attempt_at
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED
         ),
         due AS (
             SELECT o.message_id, o.endpoint_id
             FROM (
                 SELECT o.*, row_number() OVER (
                     PARTITION BY o.endpoint_id ORDER BY o.next_attempt_at) AS rank
                 FROM oldest o
             ) o LEFT JOIN unnest($5::text[], $6::int8[]) AS room(endpoint_id, rows)
                 ON room.endpoint_id = o.endpoint_id
             WHERE o.rank <= coalesce(room.rows, $7)
         )
         UPDATE deliveries SET lease_until = $3, next_attempt_at = $3
         FROM due
         WHERE deliveries.message_id = due.message_id AND deliveries.endpoint_id = due.endpoint_id
         RETURNING deliveries.message_id, deliveries.endpoint_id, deliveries.attempts, deliveries.trigger_type"
    ))
    .bind(claim.now)
    .bind(limit as i64)
    .bind(claim.until)
    .bind(room.full().iter().map(ToString::to_string).collect::<Vec<_>>())
    .bind(partial)
    .bind(rooms)
    .bind(room.otherwise.map_or(limit, |rows| rows) as i64)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    // The claimed deliveries' messages in one query: a backlog claims a
    // batch of different messages, and one query per message was what
    // held the drain of a backlog to a few hundred deliveries a second.
    let wanted: Vec<String> = due
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<sqlx::Result<_>>()
        .map_err(db)?;
    let found = sqlx::query(&format!(
        "SELECT {} FROM messages WHERE id = ANY($1)",
        rows::MESSAGE_COLUMNS
    ))
    .bind(&wanted)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut messages: HashMap<String, Arc<Message>> = HashMap::with_capacity(found.len());
    for row in &found {
        let message = rows::message(row).map_err(db)?;
        messages.insert(message.id.to_string(), Arc::new(message));
    }
    let mut endpoints: HashMap<String, Arc<EndpointTarget>> = HashMap::new();
    let mut jobs = Vec::with_capacity(due.len());
    for row in due {
        let message_id: String = row.try_get(0).map_err(db)?;
        let endpoint: String = row.try_get(1).map_err(db)?;
        let message = messages
            .get(&message_id)
            .cloned()
            .ok_or_else(|| StoreError::Internal(format!("claimed {message_id} has no message")))?;
        let target = match endpoints.get(&endpoint) {
            Some(t) => t.clone(),
            None => {
                let t = target(conn, &endpoint, claim.now, sealing).await?;
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

pub(crate) async fn next_due_at(
    conn: &mut PgConnection,
    skip: Vec<EndpointId>,
) -> StoreResult<Option<Timestamp>> {
    let row = sqlx::query(
        "SELECT d.next_attempt_at FROM deliveries d
         WHERE d.status = 1 AND NOT (d.endpoint_id = ANY($1::text[]))
           AND (SELECT NOT e.disabled FROM endpoints e WHERE e.id = d.endpoint_id)
         ORDER BY d.next_attempt_at LIMIT 1",
    )
    .bind(skip.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.map(|r| r.try_get(0).map_err(db)).transpose()
}

use shared::IDEMPOTENCY_IN_PROGRESS as IN_PROGRESS;

pub(crate) async fn reserve_idempotency_key(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: Timestamp,
    stale_before: Timestamp,
) -> StoreResult<Reservation> {
    let inserted = sqlx::query(sql::RESERVE_IDEMPOTENCY_KEY.pg)
        .bind(scope)
        .bind(key)
        .bind(IN_PROGRESS)
        .bind(now)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if inserted.rows_affected() == 1 {
        return Ok(Reservation::Reserved);
    }
    let row = sqlx::query(
        "SELECT status, body, created_at, fingerprint FROM idempotency_keys
         WHERE scope = $1 AND key = $2 FOR UPDATE",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let status: i64 = row.try_get(0).map_err(db)?;
    let created_at: Timestamp = row.try_get(2).map_err(db)?;
    let stored: String = row.try_get(3).map_err(db)?;
    let reservation = shared::idempotency_state(
        status,
        row.try_get(1).map_err(db)?,
        created_at,
        &stored,
        fingerprint,
    );
    if reservation == Reservation::InProgress && created_at < stale_before {
        sqlx::query(sql::RETAKE_IDEMPOTENCY_KEY.pg)
            .bind(now)
            .bind(scope)
            .bind(key)
            .bind(IN_PROGRESS)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        return Ok(Reservation::Reserved);
    }
    Ok(reservation)
}

pub(crate) async fn complete_idempotency_key(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    response: StoredResponse,
) -> StoreResult<()> {
    sqlx::query(sql::COMPLETE_IDEMPOTENCY_KEY.pg)
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
    sqlx::query(sql::ABANDON_IDEMPOTENCY_KEY.pg)
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
    let done = sqlx::query(sql::PURGE_IDEMPOTENCY_KEYS.pg)
        .bind(before)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

pub(crate) async fn purge_messages(
    conn: &mut PgConnection,
    before: Timestamp,
    limit: usize,
) -> StoreResult<u64> {
    let done = sqlx::query(sql::PURGE_MESSAGES.pg)
        .bind(herald_domain::MessageId::lowest_at(before).to_string())
        .bind(limit as i64)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

/// Takes the endpoint's next send slot if it starts by `deadline` (the row
/// is locked for the moment of the update, so processes queue up on it).
pub(crate) async fn reserve_send(
    conn: &mut PgConnection,
    endpoint: EndpointId,
    interval_ms: i64,
    now: Timestamp,
    deadline: Timestamp,
) -> StoreResult<SendSlot> {
    let endpoint = endpoint.to_string();
    let reserved: Option<i64> = sqlx::query_scalar(
        "INSERT INTO endpoint_pacing (endpoint_id, next_send_at) VALUES ($1, $2 + $3)
         ON CONFLICT (endpoint_id) DO UPDATE
            SET next_send_at = GREATEST(endpoint_pacing.next_send_at, $2) + $3
            WHERE GREATEST(endpoint_pacing.next_send_at, $2) <= $4
         RETURNING next_send_at - $3",
    )
    .bind(&endpoint)
    .bind(now)
    .bind(interval_ms)
    .bind(deadline)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    if let Some(at) = reserved {
        return Ok(SendSlot::At(at));
    }
    let next: Option<i64> =
        sqlx::query_scalar("SELECT next_send_at FROM endpoint_pacing WHERE endpoint_id = $1")
            .bind(&endpoint)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    Ok(SendSlot::NotBefore(next.unwrap_or(now)))
}
