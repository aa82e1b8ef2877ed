//! SQL for the delivery side: messages with their fan-out, leases on due
//! deliveries, attempts, and idempotency keys.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, AttemptId, EndpointId, EndpointUrl, MessageId, Trigger};

use herald_domain::sealing::Sealing;

use super::admin::{get_app, get_endpoint, now, signing_secrets};
use super::pool::internal;
use super::rows::{self, list, list_within, optional_to_json};
use crate::listing::{Filling, Listing};
use crate::shared;
use crate::sql;
use crate::{
    Attempt, AttemptFilter, AttemptOutcome, AttemptQuery, Claim, CreatedMessage, DeliveryJob,
    EndpointTarget, Message, MessageInput, MessageQuery, MessageRef, Page, Reservation, Room,
    StoreError, StoreResult, StoredResponse, Timestamp,
};

/// Enabled endpoints of `message`'s app that want it (subscriptions and
/// filter), with their signing secrets, in one query.
fn matching_targets(
    conn: &Connection,
    message: &Message,
    only: (Option<EndpointId>, &crate::FilterDecisions),
    at: Timestamp,
    sealing: &Sealing,
) -> StoreResult<Vec<Arc<EndpointTarget>>> {
    let mut statement = conn
        .prepare_cached(sql::TARGET_ROWS.sqlite)
        .map_err(internal)?;
    let rows = statement
        .query_map(params![message.app_id.to_string(), at], |r| {
            Ok(shared::TargetRow {
                id: r.get(0)?,
                url: r.get(1)?,
                headers: r.get(2)?,
                filter_types: r.get(3)?,
                channels: r.get(4)?,
                secret: r.get(5)?,
                retry_policy: r.get(6)?,
                rate_limit: r.get(7)?,
                strict_ordering: r.get(8)?,
                options: r.get(9)?,
            })
        })
        .map_err(internal)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(internal)?;
    shared::matching_targets(&rows, message, only, sealing)
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.to_string()))
}

fn target(
    conn: &Connection,
    endpoint: &str,
    at: Timestamp,
    sealing: &Sealing,
) -> StoreResult<Arc<EndpointTarget>> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<u32>,
        bool,
        Option<String>,
    );
    let (url, headers, policy, rate_limit, strict_ordering, options): Row = conn
        .prepare_cached(sql::DELIVERY_TARGET.sqlite)
        .and_then(|mut s| {
            s.query_row([endpoint], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
        })
        .map_err(internal)?;
    Ok(Arc::new(EndpointTarget {
        id: EndpointId::parse(endpoint).map_err(|e| StoreError::Internal(e.to_string()))?,
        url: EndpointUrl::stored(&url).map_err(|e| StoreError::Internal(e.to_string()))?,
        headers: decode(&headers)?,
        secrets: signing_secrets(conn, endpoint, at, sealing)?,
        retry_policy: shared::decode_policy(policy.as_deref())?.map(Arc::new),
        rate_limit,
        strict_ordering,
        options: herald_domain::DeliveryOptions::decode(options.as_deref()),
    }))
}

pub(crate) fn create_message(
    conn: &Connection,
    app: AppId,
    mut input: MessageInput,
    claim: Option<Claim>,
    sealing: &Sealing,
) -> StoreResult<CreatedMessage> {
    get_app(conn, &IdOrUid::Id(app))?;
    let known: Option<bool> = conn
        .prepare_cached("SELECT archived FROM event_types WHERE name = ?")
        .and_then(|mut s| {
            s.query_row([input.event_type.as_str()], |r| r.get(0))
                .optional()
        })
        .map_err(internal)?;
    if known.is_none() {
        return Err(shared::unknown_event_type(&input.event_type));
    }
    let at = claim.as_ref().map_or_else(now, |c| c.now);
    let (only, trigger) = (input.to_endpoint, shared::trigger_of(&input));
    let (due, claim) = shared::first_due(&input, at, claim.as_ref());
    let claim = claim.cloned();
    let decided = std::mem::take(&mut input.filters);
    let message = shared::new_message(app, input, at);
    let message_id = message.id.to_string();
    conn.prepare_cached(
        "INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            message_id,
            app.to_string(),
            message.event_id.as_ref().map(|e| e.as_str()),
            message.event_type.as_str(),
            message.payload,
            optional_to_json(&message.channels).unwrap_or_default(),
            at
        ])
    })
    .map_err(internal)?;
    let targets = matching_targets(conn, &message, (only, &decided), at, sealing)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
                 next_attempt_at, lease_until, updated_at)
             VALUES (?, ?, ?, 1, 0, ?, ?, ?, ?)",
        )
        .map_err(internal)?;
    for target in &targets {
        // A leased delivery is next due when its lease runs out.
        let lease = shared::lease(claim.as_ref(), target);
        insert
            .execute(params![
                message_id,
                target.id.to_string(),
                app.to_string(),
                trigger.code(),
                lease.unwrap_or(due),
                lease,
                at
            ])
            .map_err(internal)?;
    }
    Ok(shared::created(message, targets, claim.as_ref(), trigger))
}

pub(crate) fn get_message(
    conn: &Connection,
    app: AppId,
    message: &MessageRef,
) -> StoreResult<Message> {
    let (column, value) = match message {
        IdOrUid::Id(id) => ("id", id.to_string()),
        IdOrUid::Uid(event_id) => ("event_id", event_id.to_string()),
    };
    conn.prepare_cached(&format!(
        "SELECT {} FROM messages WHERE app_id = ? AND {column} = ?",
        rows::MESSAGE_COLUMNS
    ))
    .and_then(|mut s| s.query_row([app.to_string(), value], rows::message))
    .map_err(internal)
}

fn message_by_id(conn: &Connection, id: &str) -> StoreResult<Message> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM messages WHERE id = ?",
        rows::MESSAGE_COLUMNS
    ))
    .and_then(|mut s| s.query_row([id], rows::message))
    .map_err(internal)
}

pub(crate) fn list_messages(
    conn: &Connection,
    app: AppId,
    query: MessageQuery,
) -> StoreResult<Page<Message>> {
    get_app(conn, &IdOrUid::Id(app))?;
    let filling = Filling::bounded(query.max_payload_bytes, |m: &Message| m.payload.len());
    list_within(
        conn,
        Listing::messages(app, &query),
        &query.page,
        rows::message,
        |m| m.id.to_string(),
        filling,
    )
}

pub(crate) fn list_endpoint_messages(
    conn: &Connection,
    app: AppId,
    query: crate::EndpointMessageQuery,
) -> StoreResult<Page<crate::EndpointMessage>> {
    super::admin::get_endpoint(conn, app, &IdOrUid::Id(query.endpoint))?;
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
}

/// `endpoint`'s unsettled deliveries, soonest due first.
pub(crate) fn pending_deliveries(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    limit: usize,
) -> StoreResult<Vec<crate::PendingDelivery>> {
    let mut statement = conn
        .prepare_cached(sql::PENDING_OF_ENDPOINT.sqlite)
        .map_err(internal)?;
    let rows = statement
        .query_map(
            params![app.to_string(), endpoint.to_string(), limit as i64],
            |r| {
                Ok(shared::pending_delivery(
                    &r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            },
        )
        .map_err(internal)?;
    rows.map(|row| row.map_err(internal)?).collect()
}

/// The endpoints `message` was fanned out to, with their deliveries' state.
pub(crate) fn list_destinations(
    conn: &Connection,
    app: AppId,
    message: MessageId,
    page: crate::PageRequest,
) -> StoreResult<Page<crate::Destination>> {
    get_message(conn, app, &IdOrUid::Id(message))?;
    list(
        conn,
        Listing::destinations(app, message),
        &page,
        rows::destination,
        |d| d.endpoint.id.to_string(),
    )
}

pub(crate) fn expunge_attempt_content(
    conn: &Connection,
    app: AppId,
    message: MessageId,
    attempt: AttemptId,
) -> StoreResult<()> {
    let changed = conn
        .prepare_cached(sql::EXPUNGE_ATTEMPT_RESPONSE.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                app.to_string(),
                message.to_string(),
                attempt.to_string()
            ])
        })
        .map_err(internal)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Erases `message`'s payload (and the stored idempotent answers that
/// carry it); its pending deliveries end as failed, each with an attempt
/// that says why.
pub(crate) fn remove_content(conn: &Connection, app: AppId, message: MessageId) -> StoreResult<()> {
    let at = now();
    let removed = conn
        .execute(
            sql::REMOVE_CONTENT.sqlite,
            params![app.to_string(), message.to_string(), at],
        )
        .map_err(internal)?;
    if removed == 0 {
        return Err(StoreError::NotFound);
    }
    let pending: Vec<(String, String)> = conn
        .prepare_cached(sql::PENDING_DESTINATIONS.sqlite)
        .and_then(|mut s| {
            s.query_map([message.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(internal)?;
    for (endpoint, url) in pending {
        conn.execute(
            sql::UNSENT_ATTEMPT.sqlite,
            params![
                AttemptId::generate().to_string(),
                app.to_string(),
                message.to_string(),
                endpoint,
                url,
                shared::CONTENT_REMOVED_WHY,
                herald_domain::ErrorClass::ContentRemoved.as_str(),
                at
            ],
        )
        .map_err(internal)?;
    }
    conn.execute(
        sql::FAIL_PENDING_DELIVERIES.sqlite,
        params![message.to_string(), at],
    )
    .map_err(internal)?;
    conn.execute(sql::BLANK_ANSWERS_SQLITE, [shared::answers_of(message)])
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn list_attempts(
    conn: &Connection,
    app: AppId,
    query: AttemptQuery,
) -> StoreResult<Page<Attempt>> {
    match &query.filter {
        AttemptFilter::Endpoint(endpoint) => {
            get_endpoint(conn, app, &IdOrUid::Id(*endpoint)).map(|_| ())?
        }
        AttemptFilter::Message(message) => {
            get_message(conn, app, &IdOrUid::Id(*message)).map(|_| ())?
        }
        AttemptFilter::App => get_app(conn, &IdOrUid::Id(app)).map(|_| ())?,
    }
    list(
        conn,
        Listing::attempts(app, &query),
        &query.page,
        rows::attempt,
        |a| a.id.to_string(),
    )
}

pub(crate) fn get_attempt(
    conn: &Connection,
    app: AppId,
    message: MessageId,
    attempt: AttemptId,
) -> StoreResult<Attempt> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM attempts WHERE app_id = ? AND message_id = ? AND id = ?",
        rows::ATTEMPT_COLUMNS
    ))
    .and_then(|mut s| {
        s.query_row(
            [app.to_string(), message.to_string(), attempt.to_string()],
            rows::attempt,
        )
    })
    .map_err(internal)
}

pub(crate) fn resend(
    conn: &Connection,
    app: AppId,
    message: MessageId,
    endpoint: EndpointId,
    claim: Claim,
    sealing: &Sealing,
) -> StoreResult<DeliveryJob> {
    let message = get_message(conn, app, &IdOrUid::Id(message))?;
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    let removed: Option<i64> = conn
        .query_row(
            sql::CONTENT_REMOVED_AT.sqlite,
            [message.id.to_string()],
            |r| r.get(0),
        )
        .map_err(internal)?;
    if removed.is_some() {
        return Err(StoreError::ContentRemoved);
    }
    let attempts_made: u32 = conn
        .query_row(
            sql::SCHEDULE_RESEND.sqlite,
            params![
                message.id.to_string(),
                endpoint.to_string(),
                app.to_string(),
                claim.now,
                claim.until
            ],
            |r| r.get(0),
        )
        .map_err(internal)?;
    Ok(DeliveryJob {
        message: Arc::new(message),
        endpoint: target(conn, &endpoint.to_string(), claim.now, sealing)?,
        attempts_made,
        trigger: Trigger::Manual,
        lease_until: claim.until,
    })
}

pub(crate) fn claim_due(
    conn: &Connection,
    claim: Claim,
    limit: usize,
    room: Room,
    sealing: &Sealing,
) -> StoreResult<Vec<DeliveryJob>> {
    let skip = room.full();
    let skipped = skipped_endpoints(&skip);
    let sql = format!(
        "SELECT d.message_id, d.endpoint_id, d.attempts, d.trigger_type
         FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 1 AND d.next_attempt_at <= ? AND e.disabled = 0{skipped}
           {}
         ORDER BY d.next_attempt_at LIMIT ?",
        shared::STRICT_ORDER_SQL
    );
    let mut binds: Vec<rusqlite::types::Value> = vec![claim.now.into()];
    binds.extend(
        skip.iter()
            .map(|e| rusqlite::types::Value::Text(e.to_string())),
    );
    binds.push((room.window(limit) as i64).into());
    let due = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(rusqlite::params_from_iter(binds), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    let due = room.select(due, limit, |(_, endpoint, _, _)| endpoint.as_str());
    let mut lease = conn
        .prepare_cached(
            "UPDATE deliveries SET lease_until = ?1, next_attempt_at = ?1 WHERE message_id = ?2 AND endpoint_id = ?3",
        )
        .map_err(internal)?;
    let mut messages: HashMap<String, Arc<Message>> = HashMap::new();
    let mut endpoints: HashMap<String, Arc<EndpointTarget>> = HashMap::new();
    let mut jobs = Vec::with_capacity(due.len());
    for (message_id, endpoint_id, attempts_made, trigger) in due {
        lease
            .execute(params![claim.until, message_id, endpoint_id])
            .map_err(internal)?;
        let message = match messages.get(&message_id) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(message_by_id(conn, &message_id)?);
                messages.insert(message_id, m.clone());
                m
            }
        };
        let endpoint = match endpoints.get(&endpoint_id) {
            Some(e) => e.clone(),
            None => {
                let e = target(conn, &endpoint_id, claim.now, sealing)?;
                endpoints.insert(endpoint_id, e.clone());
                e
            }
        };
        jobs.push(DeliveryJob {
            message,
            endpoint,
            attempts_made,
            trigger: Trigger::from_code(trigger),
            lease_until: claim.until,
        });
    }
    Ok(jobs)
}

pub(crate) fn release(
    conn: &Connection,
    message: MessageId,
    endpoint: EndpointId,
    lease: Timestamp,
    at: Timestamp,
) -> StoreResult<()> {
    conn.prepare_cached(sql::RELEASE_DELIVERY.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                message.to_string(),
                endpoint.to_string(),
                at,
                lease
            ])
        })
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn record_attempt(conn: &Connection, outcome: AttemptOutcome) -> StoreResult<()> {
    let attempt = &outcome.attempt;
    conn.prepare_cached(
        "INSERT INTO attempts (id, app_id, message_id, endpoint_id, url, status, response_status_code,
             response, response_duration_ms, error_class, trigger_type, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            attempt.id.to_string(),
            attempt.app_id.to_string(),
            attempt.message_id.to_string(),
            attempt.endpoint_id.to_string(),
            attempt.url,
            attempt.status.code(),
            attempt.response_status_code,
            attempt.response,
            attempt.response_duration_ms,
            attempt.error_class.map(|c| c.as_str()),
            attempt.trigger.code(),
            attempt.created_at
        ])
    })
    .map_err(internal)?;
    let (status, next_attempt_at) = outcome.next.delivery_state();
    conn.prepare_cached(
        "UPDATE deliveries SET status = ?, attempts = attempts + ?, next_attempt_at = ?,
             lease_until = NULL, updated_at = ?
         WHERE message_id = ? AND endpoint_id = ? AND lease_until = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            status.code(),
            outcome.charged(),
            next_attempt_at,
            attempt.created_at,
            attempt.message_id.to_string(),
            attempt.endpoint_id.to_string(),
            outcome.lease_until
        ])
    })
    .map_err(internal)?;
    if outcome.disable_endpoint {
        conn.prepare_cached(sql::DISABLE_GONE.sqlite)
            .and_then(|mut s| {
                s.execute(params![attempt.created_at, attempt.endpoint_id.to_string()])
            })
            .map_err(internal)?;
    }
    Ok(())
}

pub(crate) fn next_due_at(
    conn: &Connection,
    skip: Vec<EndpointId>,
) -> StoreResult<Option<Timestamp>> {
    let skipped = skipped_endpoints(&skip);
    let sql = format!(
        "SELECT d.next_attempt_at FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 1 AND e.disabled = 0{skipped}
         ORDER BY d.next_attempt_at LIMIT 1"
    );
    conn.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(
                rusqlite::params_from_iter(skip.iter().map(ToString::to_string)),
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(internal)
}

pub(crate) fn release_orphaned_leases(conn: &Connection) -> StoreResult<u64> {
    conn.execute(
        "UPDATE deliveries SET lease_until = NULL, next_attempt_at = ? WHERE lease_until IS NOT NULL",
        [now()],
    )
    .map(|n| n as u64)
    .map_err(internal)
}

use shared::IDEMPOTENCY_IN_PROGRESS as IN_PROGRESS;

pub(crate) fn reserve_idempotency_key(
    conn: &Connection,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: Timestamp,
    stale_before: Timestamp,
) -> StoreResult<Reservation> {
    let inserted = conn
        .prepare_cached(sql::RESERVE_IDEMPOTENCY_KEY.sqlite)
        .and_then(|mut s| s.execute(params![scope, key, IN_PROGRESS, now, fingerprint]))
        .map_err(internal)?;
    if inserted == 1 {
        return Ok(Reservation::Reserved);
    }
    let (status, body, created_at, stored): (i64, String, Timestamp, String) = conn
        .prepare_cached(
            "SELECT status, body, created_at, fingerprint FROM idempotency_keys WHERE scope = ? AND key = ?",
        )
        .and_then(|mut s| {
            s.query_row([scope, key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
        })
        .map_err(internal)?;
    let reservation = shared::idempotency_state(status, body, created_at, &stored, fingerprint);
    if reservation == Reservation::InProgress && created_at < stale_before {
        conn.prepare_cached(sql::RETAKE_IDEMPOTENCY_KEY.sqlite)
            .and_then(|mut s| s.execute(params![now, scope, key, IN_PROGRESS]))
            .map_err(internal)?;
        return Ok(Reservation::Reserved);
    }
    Ok(reservation)
}

pub(crate) fn complete_idempotency_key(
    conn: &Connection,
    scope: &str,
    key: &str,
    response: StoredResponse,
) -> StoreResult<()> {
    conn.prepare_cached(sql::COMPLETE_IDEMPOTENCY_KEY.sqlite)
        .and_then(|mut s| s.execute(params![response.status, response.body, scope, key]))
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn abandon_idempotency_key(
    conn: &Connection,
    scope: &str,
    key: &str,
) -> StoreResult<()> {
    conn.prepare_cached(sql::ABANDON_IDEMPOTENCY_KEY.sqlite)
        .and_then(|mut s| s.execute(params![scope, key, IN_PROGRESS]))
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn purge_idempotency_keys(conn: &Connection, before: Timestamp) -> StoreResult<u64> {
    conn.execute(sql::PURGE_IDEMPOTENCY_KEYS.sqlite, [before])
        .map(|n| n as u64)
        .map_err(internal)
}

pub(crate) fn purge_messages(
    conn: &Connection,
    before: Timestamp,
    limit: usize,
) -> StoreResult<u64> {
    conn.prepare_cached(sql::PURGE_MESSAGES.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                herald_domain::MessageId::lowest_at(before).to_string(),
                limit as i64
            ])
        })
        .map(|n| n as u64)
        .map_err(internal)
}

/// ` AND d.endpoint_id NOT IN (?, …)` for the endpoints claims leave out.
fn skipped_endpoints(skip: &[EndpointId]) -> String {
    if skip.is_empty() {
        return String::new();
    }
    format!(
        " AND d.endpoint_id NOT IN ({})",
        vec!["?"; skip.len()].join(", ")
    )
}
