//! What both backends share: column lists (the schemas are twins) and the
//! arithmetic of a page.

use std::sync::Arc;

use herald_domain::{EndpointId, EventTypeName, FilterTypes, Secret};

use herald_domain::Trigger;

use crate::{
    Claim, CreatedMessage, Cursor, DeliveryJob, EndpointTarget, Message, Page, StoreError,
    StoreResult, Timestamp,
};

/// The wall clock in unix milliseconds.
pub(crate) fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub(crate) const APP_COLUMNS: &str = "id, uid, name, rate_limit, metadata, created_at, updated_at";
pub(crate) const EVENT_TYPE_COLUMNS: &str = "name, description, schemas, archived, deprecated, feature_flag, group_name, created_at, updated_at";
pub(crate) const ENDPOINT_COLUMNS: &str = "id, app_id, uid, url, description, disabled, filter_types, channels, rate_limit, version, metadata, headers, created_at, updated_at";
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, app_id, event_id, event_type, payload, channels, created_at";
pub(crate) const ATTEMPT_COLUMNS: &str = "id, app_id, message_id, endpoint_id, url, status, response_status_code, response, response_duration_ms, error_class, trigger_type, created_at";

/// Turns up to `limit + 1` fetched rows into a page. Rows fetched walking
/// backwards (a `-` cursor) are put back into listing order.
pub(crate) fn finish_page<T>(
    mut data: Vec<T>,
    limit: usize,
    cursor: &Cursor,
    key_of: impl Fn(&T) -> String,
) -> Page<T> {
    let backwards = matches!(cursor, Cursor::Before(_));
    let more = data.len() > limit;
    data.truncate(limit);
    if backwards {
        data.reverse();
    }
    let cursor_key = match cursor {
        Cursor::Start => None,
        Cursor::After(k) | Cursor::Before(k) => Some(k.clone()),
    };
    let first = data.first().map(&key_of);
    let last = data.last().map(&key_of).or(cursor_key);
    let (done, prev_iterator) = if backwards {
        (false, first.filter(|_| more).map(|k| format!("-{k}")))
    } else {
        (!more, first.map(|k| format!("-{k}")))
    };
    Page {
        data,
        iterator: last,
        prev_iterator,
        done,
    }
}

/// Endpoints of an app joined with their signing secrets, one row per
/// (endpoint, secret), ordered by endpoint and then current secret first.
pub(crate) const TARGET_ROWS_SQL: &str =
    "SELECT e.id, e.url, e.headers, e.filter_types, e.channels, s.secret
     FROM endpoints e JOIN endpoint_secrets s ON s.endpoint_id = e.id
     WHERE e.app_id = $1 AND e.disabled = FALSE AND (s.expires_at IS NULL OR s.expires_at > $2)
     ORDER BY e.id, s.expires_at IS NOT NULL, s.created_at DESC";

/// One row of [`TARGET_ROWS_SQL`].
#[derive(Debug)]
pub(crate) struct TargetRow {
    pub id: String,
    pub url: String,
    pub headers: String,
    pub filter_types: Option<String>,
    pub channels: Option<String>,
    pub secret: String,
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The endpoints among `rows` that subscribe to `event_type` on `channels`,
/// each with all its signing secrets.
pub(crate) fn matching_targets(
    rows: Vec<TargetRow>,
    event_type: &EventTypeName,
    channels: Option<&[String]>,
) -> StoreResult<Vec<Arc<EndpointTarget>>> {
    let mut targets: Vec<EndpointTarget> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut last_matched = false;
    for row in rows {
        let secret = Secret::parse(&row.secret)
            .map_err(|e| StoreError::Internal(format!("stored secret unreadable: {}", e.reason)))?;
        if last_id.as_deref() == Some(row.id.as_str()) {
            if last_matched {
                if let Some(target) = targets.last_mut() {
                    target.secrets.push(secret);
                }
            }
            continue;
        }
        let filter = match &row.filter_types {
            Some(text) => FilterTypes::parse(&decode::<Vec<String>>(text)?)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
            None => FilterTypes::all(),
        };
        let mut wanted = filter.matches(event_type);
        if let Some(text) = &row.channels {
            let endpoint_channels: Vec<String> = decode(text)?;
            let shared = channels.is_some_and(|c| c.iter().any(|c| endpoint_channels.contains(c)));
            wanted &= endpoint_channels.is_empty() || shared;
        }
        last_matched = wanted;
        if wanted {
            targets.push(EndpointTarget {
                id: EndpointId::parse(&row.id).map_err(|e| StoreError::Internal(e.to_string()))?,
                url: row.url,
                headers: decode(&row.headers)?,
                secrets: vec![secret],
            });
        }
        last_id = Some(row.id);
    }
    Ok(targets.into_iter().map(Arc::new).collect())
}

/// The result of storing a message: with a claim, one leased job per
/// matching endpoint, ready to send.
pub(crate) fn created(
    message: Arc<Message>,
    targets: Vec<Arc<EndpointTarget>>,
    claim: Option<Claim>,
) -> CreatedMessage {
    let deliveries = targets.len();
    let jobs = match claim {
        Some(claim) => targets
            .into_iter()
            .map(|endpoint| DeliveryJob {
                message: message.clone(),
                endpoint,
                attempts_made: 0,
                trigger: Trigger::Scheduled,
                lease_until: claim.until,
            })
            .collect(),
        None => Vec::new(),
    };
    CreatedMessage {
        message,
        jobs,
        deliveries,
    }
}
