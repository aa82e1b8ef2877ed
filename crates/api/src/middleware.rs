//! Cross-cutting request handling: `Idempotency-Key` replay (who may ask
//! is `auth`'s).

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use herald_store::{Reservation, StoredResponse};

use crate::error::ApiError;
use crate::AppState;

/// Largest response kept for idempotent replay.
const MAX_STORED_RESPONSE: usize = 4 * 1024 * 1024;
/// A reservation older than this belongs to a request that died with its
/// process; a retry may take it over.
const STALE_RESERVATION_MS: i64 = 5 * 60 * 1000;

pub fn hash_token(token: &str) -> [u8; 32] {
    herald_domain::token::hash(token)
}

/// A POST with `Idempotency-Key` runs once: the key is reserved before the
/// handler runs, so a concurrent repeat gets 409 instead of running again,
/// and later repeats get the saved response (status and body) for 24 hours.
pub(crate) async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    if key.is_empty() || key.len() > 256 {
        return ApiError::invalid("Idempotency-Key", "must be 1 to 256 characters").into_response();
    }
    // Keys are per token holder: one holder's key never replays to another.
    let actor = request
        .extensions()
        .get::<crate::auth::Principal>()
        .map_or_else(|| "anonymous".to_owned(), |p| p.actor());
    let scope = format!("{actor} {}", request.uri().path().trim_end_matches('/'));
    let now = now_ms();
    match state
        .store
        .reserve_idempotency_key(&scope, &key, now, now - STALE_RESERVATION_MS)
        .await
    {
        Ok(Reservation::Reserved) => {}
        Ok(Reservation::Done(saved)) => return replay(saved),
        Ok(Reservation::InProgress) => {
            return ApiError::Conflict {
                detail:
                    "a request with this Idempotency-Key is still being processed; retry shortly"
                        .to_owned(),
            }
            .into_response()
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    let response = next.run(request).await;
    let status = response.status();
    // Server errors and rate limits are not final answers: let a retry run.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        if let Err(error) = state.store.abandon_idempotency_key(&scope, &key).await {
            tracing::warn!(%error, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_STORED_RESPONSE).await else {
        let _ = state.store.abandon_idempotency_key(&scope, &key).await;
        return ApiError::Internal("response too large to store for idempotency".into())
            .into_response();
    };
    let saved = StoredResponse {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        created_at: now,
    };
    if let Err(error) = state
        .store
        .complete_idempotency_key(&scope, &key, saved)
        .await
    {
        tracing::warn!(%error, "could not save an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(saved: StoredResponse) -> Response {
    let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
    let mut response = (status, saved.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `X-Request-Id`: the caller's (up to 128 visible ASCII characters) or a
/// new `req_<ulid>`; echoed in the answer and recorded on the request's
/// span, which the deliveries it starts in this process carry on (their log
/// lines show it).
pub(crate) async fn request_id(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    const HEADER: &str = "x-request-id";
    let given = request.headers().get(HEADER).filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    });
    let id = match given {
        Some(id) => id.clone(),
        None => {
            axum::http::HeaderValue::try_from(format!("req_{}", ulid::Ulid::new())).expect("ASCII")
        }
    };
    request.headers_mut().insert(HEADER, id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(HEADER, id);
    response
}
