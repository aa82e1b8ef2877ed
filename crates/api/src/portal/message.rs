//! A message in the portal: what was sent (its payload, or that it was
//! removed), where it went — each endpoint with its delivery's state and,
//! while a retry waits, when it is due — and the attempts made.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;

use herald_domain::ids::IdOrUid;
use herald_domain::{DeliveryStatus, MessageId};
use herald_store::{AttemptFilter, AttemptQuery, Cursor, PageRequest};

use super::endpoint_pages::open;
use super::pages::{layout, when};
use super::{page, Refused};
use crate::AppState;

/// Destinations and attempts shown, at most.
const SHOWN: usize = 100;

pub(super) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, message)): Path<(String, String)>,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let reference = IdOrUid::<MessageId>::parse(&message)
        .map_err(|_| Refused::new(super::not_found(&state)))?;
    let message = state.store.get_message(app.id, &reference).await?;
    let page_of = || PageRequest {
        limit: SHOWN,
        cursor: Cursor::Start,
    };
    let destinations = state
        .store
        .list_destinations(app.id, message.id, page_of())
        .await?
        .data;
    let attempts = state
        .store
        .list_attempts(
            app.id,
            AttemptQuery::new(AttemptFilter::Message(message.id), page_of()),
        )
        .await?
        .data;
    let payload = serde_json::from_str::<serde_json::Value>(&message.payload)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| message.payload.clone());
    let markup = layout(
        "Message",
        Some(&session.csrf()),
        html! {
            nav.crumbs {
                a href={ "/portal/app/" (app.id) } { "Endpoints" } " / "
                a href={ "/portal/app/" (app.id) "/activity" } { "activity" } " / message"
            }
            h1 { "Message " code { (message.id) } }
            dl.facts {
                dt { "Event type" } dd { code #message-type { (message.event_type) } }
                dt { "Accepted" } dd { (when(Some(message.created_at))) }
                @if let Some(event_id) = &message.event_id {
                    dt { "Event id" } dd { code { (event_id) } }
                }
                @if let Some(channels) = &message.channels {
                    dt { "Channels" } dd { (channels.join(", ")) }
                }
            }
            h2 { "Destinations" }
            @if destinations.is_empty() {
                p.empty #no-destinations { "No endpoint wanted this message (subscriptions, channels or filters)." }
            } @else {
                table.destinations {
                    thead { tr { th scope="col" { "Endpoint" } th scope="col" { "State" } th scope="col" { "Next attempt" } } }
                    tbody {
                        @for destination in &destinations {
                            @let status = destination.status;
                            tr data-status=(status.text()) {
                                td { a href={ "/portal/app/" (app.id) "/endpoint/" (destination.endpoint.id) } { (destination.endpoint.url) } }
                                td {
                                    span class={ "badge " (if status == DeliveryStatus::Failed { "off" } else { "on" }) } {
                                        (match status {
                                            DeliveryStatus::Succeeded => "delivered",
                                            DeliveryStatus::Failed => "failed",
                                            DeliveryStatus::Sending => "being sent",
                                            DeliveryStatus::Pending => "waiting to be sent",
                                        })
                                    }
                                }
                                td { @match destination.next_attempt { Some(at) => (when(Some(at))), None => "—" } }
                            }
                        }
                    }
                }
            }
            h2 { "Payload" }
            pre #message-payload { (payload) }
            h2 { "Attempts" }
            @if attempts.is_empty() {
                p.empty { "No attempt yet." }
            }
            ol.attempts {
                @for attempt in &attempts {
                    @let ok = attempt.error_class.is_none();
                    li.attempt data-status=(if ok { "succeeded" } else { "failed" }) {
                        span class={ "badge " (if ok { "on" } else { "off" }) } {
                            (attempt.status.text())
                            @if attempt.response_status_code > 0 { " " (attempt.response_status_code) }
                            @if let Some(class) = attempt.error_class { " · " (class.as_str()) }
                        }
                        " → " (attempt.url) " "
                        small { (when(Some(attempt.created_at))) " · " (attempt.response_duration_ms) " ms" }
                    }
                }
            }
        },
    );
    Ok(page(&state, markup))
}
