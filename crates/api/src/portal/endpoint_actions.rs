//! What the endpoint page's buttons do: reveal and rotate the signing
//! secret, disable or enable the endpoint, delete it. Every one is a POST
//! with the session's CSRF token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use herald_store::Endpoint;

use super::endpoint_pages::{detail_page, endpoint_of, open, Extras, Fields};
use super::{Refused, Session};
use crate::middleware::now_ms;
use crate::AppState;

/// The endpoint of an action, after the session, the app and the CSRF token
/// were checked.
async fn target(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: &str,
    body: &[u8],
) -> Result<(Session, Endpoint), Refused> {
    let (session, app) = open(state, headers, app).await?;
    session.form(body)?;
    let endpoint = endpoint_of(state, app.id, endpoint).await?;
    Ok((session, endpoint))
}

/// Like [`target`], for an action that changes nothing (a `readOnly`
/// session may take it).
async fn shown(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: &str,
    body: &[u8],
) -> Result<Endpoint, Refused> {
    let (session, app) = open(state, headers, app).await?;
    session.read_form(body)?;
    endpoint_of(state, app.id, endpoint).await
}

fn back_to(endpoint: &Endpoint, notice: &str) -> Response {
    Redirect::to(&format!(
        "/portal/app/{}/endpoint/{}?notice={notice}",
        endpoint.app_id, endpoint.id
    ))
    .into_response()
}

pub(super) async fn reveal(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let record = shown(&state, &headers, &app, &endpoint, &body).await?;
    let secret = state
        .store
        .endpoint_secret(record.app_id, record.id)
        .await?;
    let extras = Extras {
        secret: Some((secret.expose(), secret.public_key())),
        ..Extras::default()
    };
    detail_page(&state, &headers, &app, &endpoint, extras).await
}

pub(super) async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, record) = target(&state, &headers, &app, &endpoint, &body).await?;
    session
        .operations(&state)
        .rotate_secret(&record, None, None)
        .await?;
    Ok(back_to(&record, "rotated"))
}

pub(super) async fn toggle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, record) = target(&state, &headers, &app, &endpoint, &body).await?;
    let mut input = crate::endpoints::input_of(&record)?;
    input.disabled = !record.disabled;
    session
        .operations(&state)
        .update_endpoint(&record, input)
        .await?;
    Ok(back_to(
        &record,
        if record.disabled {
            "enabled"
        } else {
            "disabled"
        },
    ))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, record) = target(&state, &headers, &app, &endpoint, &body).await?;
    session.operations(&state).delete_endpoint(&record).await?;
    Ok(Redirect::to(&format!("/portal/app/{}", record.app_id)).into_response())
}

/// Re-sends the endpoint's failed deliveries of messages since a time (a
/// background task, as `POST …/recover/`).
pub(super) async fn recover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, record) = target(&state, &headers, &app, &endpoint, &body).await?;
    let fields = Fields::parse(&body);
    // `datetime-local` gives `2026-11-26T09:30` in the browser's zone;
    // the form sends its UTC offset in minutes alongside.
    let since = fields.get("since").unwrap_or_default();
    let offset: i64 = fields
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let Ok(local) = chrono::NaiveDateTime::parse_from_str(since, "%Y-%m-%dT%H:%M") else {
        return Ok(back_to(&record, "bad-since"));
    };
    let since = local.and_utc().timestamp_millis() + offset * 60_000;
    if since > now_ms() {
        return Ok(back_to(&record, "bad-since"));
    }
    session
        .operations(&state)
        .start_recovery(&record, since, None)
        .await?;
    Ok(back_to(&record, "recovering"))
}
