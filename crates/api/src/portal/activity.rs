//! The activity log in the portal, of one endpoint or of the whole app:
//! attempts newest first, filtered by outcome, event type and time, each
//! with the request it made (payload, headers with secrets masked) and the
//! response; failed deliveries can be retried.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use herald_domain::ids::IdOrUid;
use std::collections::HashMap;

use herald_domain::{DeliveryStatus, EndpointId, MessageId};
use herald_store::{AttemptFilter, AttemptQuery, Cursor, PageRequest};

use super::endpoint_pages::{endpoint_of, open};
use super::{page, Refused};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub(super) struct ActivityQuery {
    /// `succeeded`, `failed`, or nothing for all.
    status: Option<String>,
    /// Older than this attempt (the "older" link).
    before: Option<String>,
    /// Only attempts of messages of this event type.
    event_type: Option<String>,
    /// Only attempts made after this time (`datetime-local`, UTC).
    after: Option<String>,
    notice: Option<String>,
}

/// One row of the log: the attempt and the request it made.
pub(super) struct Entry {
    pub attempt: herald_store::Attempt,
    pub event_type: String,
    pub payload: String,
    pub headers: Vec<(String, String)>,
}

pub(super) async fn log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, Refused> {
    render(&state, &headers, &app, Some(&endpoint), query).await
}

/// The app-wide log: every endpoint's attempts together.
pub(super) async fn app_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, Refused> {
    render(&state, &headers, &app, None, query).await
}

async fn render(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: Option<&str>,
    query: ActivityQuery,
) -> Result<Response, Refused> {
    let (session, app) = open(state, headers, app).await?;
    let endpoint = match endpoint {
        Some(endpoint) => Some(endpoint_of(state, app.id, endpoint).await?),
        None => None,
    };
    let status = match query.status.as_deref() {
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some("failed") => Some(DeliveryStatus::Failed),
        _ => None,
    };
    let cursor = match &query.before {
        Some(before) => Cursor::parse(Some(before)),
        None => Cursor::Start,
    };
    let filter = match &endpoint {
        Some(endpoint) => AttemptFilter::Endpoint(endpoint.id),
        None => AttemptFilter::App,
    };
    let mut attempts_query = AttemptQuery::new(filter, PageRequest { limit: 25, cursor });
    attempts_query.status = status;
    let event_type = query
        .event_type
        .as_deref()
        .filter(|t| !t.is_empty())
        .and_then(|t| herald_domain::EventTypeName::parse(t).ok());
    attempts_query.event_types = event_type.iter().cloned().collect();
    let after = query
        .after
        .as_deref()
        .filter(|t| !t.is_empty())
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M").ok())
        .map(|t| t.and_utc().timestamp_millis());
    attempts_query.after = after;
    let attempts = state.store.list_attempts(app.id, attempts_query).await?;
    // The endpoints the attempts went to, each read once (their custom
    // headers are part of the request shown).
    let mut endpoints: HashMap<EndpointId, Option<herald_store::Endpoint>> = HashMap::new();
    if let Some(endpoint) = &endpoint {
        endpoints.insert(endpoint.id, Some(endpoint.clone()));
    }
    let mut entries = Vec::with_capacity(attempts.data.len());
    for attempt in attempts.data {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            endpoints.entry(attempt.endpoint_id)
        {
            let found = match state
                .store
                .get_endpoint(app.id, &IdOrUid::Id(attempt.endpoint_id))
                .await
            {
                Ok(found) => Some(found),
                Err(herald_store::StoreError::NotFound) => None,
                Err(error) => return Err(error.into()),
            };
            slot.insert(found);
        }
        let Some(Some(target)) = endpoints.get(&attempt.endpoint_id) else {
            continue; // deleted since
        };
        let message = state
            .store
            .get_message(app.id, &IdOrUid::Id(attempt.message_id))
            .await?;
        let request = crate::attempts::request_of(&message, &target.headers, &attempt)?;
        let payload = serde_json::from_str::<serde_json::Value>(request.body.get())
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_else(|_| request.body.get().to_owned());
        entries.push(Entry {
            event_type: message.event_type.to_string(),
            payload,
            headers: request.headers.into_iter().collect(),
            attempt,
        });
    }
    let notice = match query.notice.as_deref() {
        Some("retried") => Some("Sent again; the new attempt appears at the top."),
        _ => None,
    };
    Ok(page(
        state,
        super::pages::activity(
            &super::pages::Viewer {
                csrf: &session.csrf(),
                writable: session.writable(),
            },
            &app,
            endpoint.as_ref(),
            &super::pages::ActivityFilters {
                status: query.status.as_deref(),
                event_type: query.event_type.as_deref().filter(|t| !t.is_empty()),
                after: query.after.as_deref().filter(|t| !t.is_empty()),
            },
            &entries,
            attempts.iterator.filter(|_| !attempts.done),
            notice,
        ),
    ))
}

/// Sends one message to the endpoint again (a manual attempt), then shows
/// the log.
pub(super) async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let fields = session.form(&body)?;
    let endpoint = endpoint_of(&state, app.id, &endpoint).await?;
    let message = MessageId::parse(fields.get("message").unwrap_or_default())
        .map_err(|_| Refused::new(super::not_found(&state)))?;
    session
        .operations(&state)
        .resend(app.id, message, endpoint.id)
        .await?;
    // Back to the log the retry was asked from.
    let log = if fields.get("from") == Some("app") {
        format!("/portal/app/{}/activity", app.id)
    } else {
        format!("/portal/app/{}/endpoint/{}/activity", app.id, endpoint.id)
    };
    Ok(Redirect::to(&format!("{log}?notice=retried")).into_response())
}
