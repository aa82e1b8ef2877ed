//! The activity log in the portal, of one endpoint or of the whole app:
//! attempts newest first, filtered by outcome, event type and time, each
//! with the request it made (payload, headers with secrets masked) and the
//! response; failed deliveries can be retried.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use herald_domain::ids::IdOrUid;
use std::collections::HashMap;

use herald_domain::{DeliveryStatus, EndpointId, MessageId};
use herald_store::{
    App, AttemptFilter, AttemptQuery, Cursor, Endpoint, PageRequest, PendingDelivery,
};

use super::endpoint_pages::{endpoint_of, open};
use super::pages::{layout, url_encode, when};
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
    /// The export's format: `jsonl` or `csv`.
    format: Option<String>,
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
    let (session, app, endpoint) = opened(state, headers, app, endpoint).await?;
    // Each entry shows its message's payload: the page is one of the
    // listing pages the process keeps in memory, held until written.
    let listing = crate::limits::listing_page(state, session.principal)?;
    let cursor = match &query.before {
        Some(before) => Cursor::parse(Some(before)),
        None => Cursor::Start,
    };
    let attempts_query =
        attempt_query(endpoint.as_ref(), &query, PageRequest { limit: 25, cursor });
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
        let message = std::sync::Arc::new(
            state
                .store
                .get_message(app.id, &IdOrUid::Id(attempt.message_id))
                .await?,
        );
        let request = crate::attempts::request_of(&message, target, &attempt).await?;
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
    // An endpoint's deliveries not settled yet, on the log's first page:
    // retries waiting for their time, and what is being sent right now.
    let pending = match (&endpoint, &query.before) {
        (Some(endpoint), None) => {
            state
                .store
                .pending_deliveries(app.id, endpoint.id, 50)
                .await?
        }
        _ => Vec::new(),
    };
    let notice = match query.notice.as_deref() {
        Some("retried") => Some("Sent again; the new attempt appears at the top."),
        _ => None,
    };
    Ok(crate::extract::holding(
        page(
            state,
            activity(
                &Viewer {
                    csrf: &session.csrf(),
                    writable: session.writable(),
                },
                &app,
                endpoint.as_ref(),
                &ActivityFilters {
                    status: query.status.as_deref(),
                    event_type: query.event_type.as_deref().filter(|t| !t.is_empty()),
                    after: query.after.as_deref().filter(|t| !t.is_empty()),
                },
                Shown {
                    entries: &entries,
                    pending: &pending,
                    older: attempts.iterator.filter(|_| !attempts.done),
                },
                notice,
            ),
        ),
        listing,
    ))
}

/// The session, the app and the endpoint (for an endpoint's log) a log
/// is asked of.
async fn opened(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: Option<&str>,
) -> Result<(super::Session, App, Option<Endpoint>), Refused> {
    let (session, app) = open(state, headers, app).await?;
    let endpoint = match endpoint {
        Some(endpoint) => Some(endpoint_of(state, app.id, endpoint).await?),
        None => None,
    };
    Ok((session, app, endpoint))
}

/// The store's query for the log's filters, one page.
fn attempt_query(
    endpoint: Option<&Endpoint>,
    query: &ActivityQuery,
    page: PageRequest,
) -> AttemptQuery {
    let filter = match endpoint {
        Some(endpoint) => AttemptFilter::Endpoint(endpoint.id),
        None => AttemptFilter::App,
    };
    let mut attempts_query = AttemptQuery::new(filter, page);
    attempts_query.status = match query.status.as_deref() {
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some("failed") => Some(DeliveryStatus::Failed),
        _ => None,
    };
    let event_type = query
        .event_type
        .as_deref()
        .filter(|t| !t.is_empty())
        .and_then(|t| herald_domain::EventTypeName::parse(t).ok());
    attempts_query.event_types = event_type.iter().cloned().collect();
    attempts_query.after = query
        .after
        .as_deref()
        .filter(|t| !t.is_empty())
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M").ok())
        .map(|t| t.and_utc().timestamp_millis());
    attempts_query
}

/// The log as filtered, whole, as a JSON Lines or CSV download (streamed
/// like the API's export).
pub(super) async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, Refused> {
    export_log(&state, &headers, &app, None, query).await
}

pub(super) async fn endpoint_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, Refused> {
    export_log(&state, &headers, &app, Some(&endpoint), query).await
}

async fn export_log(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: Option<&str>,
    query: ActivityQuery,
) -> Result<Response, Refused> {
    let (_session, app, endpoint) = opened(state, headers, app, endpoint).await?;
    let format = crate::export::Format::parse(query.format.as_deref()).map_err(Refused::from)?;
    let page = PageRequest {
        limit: crate::export::PAGE,
        cursor: Cursor::Start,
    };
    let attempts_query = attempt_query(endpoint.as_ref(), &query, page);
    let first = state
        .store
        .list_attempts(app.id, attempts_query.clone())
        .await?;
    let name = match &endpoint {
        Some(endpoint) => format!("attempts-{}", endpoint.id),
        None => format!("attempts-{}", app.id),
    };
    Ok(crate::export::stream(
        state.clone(),
        app.id,
        attempts_query,
        first,
        format,
        &name,
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

/// The activity log's filters as chosen.
pub(super) struct ActivityFilters<'a> {
    pub status: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// What the log shows: a page of attempts, the deliveries not settled yet
/// (an endpoint's first page only) and where the next page starts.
pub(super) struct Shown<'a> {
    pub entries: &'a [Entry],
    pub pending: &'a [PendingDelivery],
    pub older: Option<String>,
}

/// Who looks at a page: their CSRF token, and whether they may change
/// anything (a `readOnly` portal link may not).
pub(super) struct Viewer<'a> {
    pub csrf: &'a str,
    pub writable: bool,
}

pub(super) fn activity(
    viewer: &Viewer<'_>,
    app: &App,
    endpoint: Option<&Endpoint>,
    filters: &ActivityFilters<'_>,
    shown: Shown<'_>,
    notice: Option<&str>,
) -> Markup {
    let Shown {
        entries,
        pending,
        older,
    } = shown;
    // The log's own address (its filters and pages stay on it).
    let log = match endpoint {
        Some(endpoint) => format!("/portal/app/{}/endpoint/{}/activity", app.id, endpoint.id),
        None => format!("/portal/app/{}/activity", app.id),
    };
    let status = filters.status;
    let mut keep = String::new();
    for (name, value) in [
        ("status", filters.status),
        ("event_type", filters.event_type),
        ("after", filters.after),
    ] {
        if let Some(value) = value {
            keep.push_str(&format!("&{name}={}", url_encode(value)));
        }
    }
    let Viewer { csrf, writable } = *viewer;
    layout(
        "Activity",
        Some(csrf),
        html! {
            nav.crumbs {
                a href={ "/portal/app/" (app.id) } { "Endpoints" } " / "
                @if let Some(endpoint) = endpoint {
                    a href={ "/portal/app/" (app.id) "/endpoint/" (endpoint.id) } { (endpoint.url) } " / activity"
                } @else {
                    "activity of all endpoints"
                }
            }
            h1 { "Activity" }
            @if let Some(notice) = notice {
                p.notice role="status" { (notice) }
            }
            form.filters method="get" action=(log) {
                label for="status" { "Outcome" }
                select #status name="status" {
                    option value="" selected[status.is_none()] { "all" }
                    option value="succeeded" selected[status == Some("succeeded")] { "succeeded" }
                    option value="failed" selected[status == Some("failed")] { "failed" }
                }
                label for="event_type_filter" { "Event type" }
                input #event_type_filter type="text" name="event_type" value=(filters.event_type.unwrap_or_default()) placeholder="call.completed";
                label for="after" { "After (UTC)" }
                input #after type="datetime-local" name="after" value=(filters.after.unwrap_or_default());
                button type="submit" { "Filter" }
            }
            p.export {
                "Export these attempts, all pages: "
                a #export-jsonl href={ (log) "/export?format=jsonl" (keep) } download { "JSON Lines" }
                " · "
                a #export-csv href={ (log) "/export?format=csv" (keep) } download { "CSV" }
            }
            @if !pending.is_empty() {
                section.pending {
                    h2 { "Waiting to be sent" }
                    table.pending {
                        thead { tr { th scope="col" { "Message" } th scope="col" { "Event type" } th scope="col" { "Attempts so far" } th scope="col" { "Next attempt" } } }
                        tbody {
                            @for delivery in pending {
                                tr data-status=(delivery.status.text()) {
                                    td { code { (delivery.message_id) } }
                                    td { code { (delivery.event_type) } }
                                    td { (delivery.attempts) }
                                    td {
                                        @if delivery.status == DeliveryStatus::Sending { "being sent now" }
                                        @else { (when(delivery.next_attempt)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if entries.is_empty() {
                p.empty { "No attempt yet." }
            }
            ol.attempts {
                @for entry in entries {
                    @let attempt = &entry.attempt;
                    @let ok = attempt.error_class.is_none();
                    li.attempt data-status=(if ok { "succeeded" } else { "failed" }) {
                        div.summary {
                            span class={ "badge " (if ok { "on" } else { "off" }) } {
                                (attempt.status.text())
                                @if attempt.response_status_code > 0 { " " (attempt.response_status_code) }
                                @if let Some(class) = attempt.error_class { " · " (class.as_str()) }
                            }
                            " " code { (entry.event_type) }
                            " " a.message href={ "/portal/app/" (app.id) "/msg/" (attempt.message_id) } { "message" }
                            @if endpoint.is_none() {
                                " → " a.endpoint href={ "/portal/app/" (app.id) "/endpoint/" (attempt.endpoint_id) } { (attempt.url) }
                            }
                            " " small { (when(Some(attempt.created_at))) " · " (attempt.response_duration_ms) " ms · " (if attempt.trigger == herald_domain::Trigger::Manual { "manual" } else { "scheduled" }) }
                            @if !ok && writable {
                                form.retry method="post" action={ "/portal/app/" (app.id) "/endpoint/" (attempt.endpoint_id) "/activity/retry" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="message" value=(attempt.message_id);
                                    @if endpoint.is_none() { input type="hidden" name="from" value="app"; }
                                    button type="submit" { "Retry" }
                                }
                            }
                        }
                        details {
                            summary { "Request and response" }
                            h3 { "Payload" }
                            pre { (entry.payload) }
                            h3 { "Headers" }
                            table.headers {
                                @for (name, value) in &entry.headers {
                                    tr { th scope="row" { (name) } td { code { (value) } } }
                                }
                            }
                            h3 { "Response" }
                            pre.response { (attempt.response) }
                        }
                    }
                }
            }
            @if let Some(older) = older {
                p { a href={ (log) "?before=" (older) (keep) } { "Older attempts" } }
            }
        },
    )
}
