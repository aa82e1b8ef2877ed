//! Cross-cutting request handling: `Idempotency-Key` replay (who may ask
//! is `auth`'s).

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{FromRequest, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use herald_domain::ids::IdOrUid;
use herald_domain::{EndpointId, MessageId};
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

/// `Idempotency-Key` on a POST, as the IETF draft and Stripe define it.
/// The body is read in full first: one that fails to arrive (a dropped
/// connection, a timeout, over the size limit) reserves nothing. The key is
/// then reserved with a fingerprint of the request (path and body), so a
/// concurrent repeat gets 409 instead of running again, and the same key
/// with another body gets 422. Only an answer of a request that executed
/// (2xx) is saved and replayed, for 24 hours; a refusal (4xx: invalid
/// input, not found) or a failure (5xx, 429) releases the key, so a
/// corrected or later retry runs.
pub(crate) async fn idempotency(
    State(state): State<AppState>,
    matched: MatchedPath,
    params: RawPathParams,
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
    let scope = match scope(&state, &actor, &matched, &params).await {
        Ok(scope) => scope,
        // What the path names does not exist (or cannot be read now): the
        // handler gives the same answer, and there is nothing to replay.
        Err(_) => return next.run(request).await,
    };
    let (parts, body) = request.into_parts();
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(bytes) => bytes,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge.into_response()
        }
        Err(rejection) => {
            return ApiError::BadRequest {
                code: "invalid_body",
                detail: rejection.body_text(),
            }
            .into_response()
        }
    };
    let fingerprint = fingerprint(&scope, parts.uri.query(), &bytes);
    let now = now_ms();
    match state
        .store
        .reserve_idempotency_key(&scope, &key, &fingerprint, now, now - STALE_RESERVATION_MS)
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
        Ok(Reservation::Mismatch) => {
            return ApiError::invalid(
                "Idempotency-Key",
                "was already used with a different request body; use a new key for a new request",
            )
            .into_response()
        }
        Err(error) => return ApiError::from(error).into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if !status.is_success() {
        if let Err(error) = state.store.abandon_idempotency_key(&scope, &key).await {
            // The reservation goes stale and is taken over after five minutes.
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

/// What a key is scoped by: the token holder, the operation (the route as
/// declared, not as spelled) and what its path names, by id: an app or
/// endpoint named by its uid and a message named by its `eventId` are the
/// same ones as when named by id, so a key cannot be reused by spelling
/// the path another way.
async fn scope(
    state: &AppState,
    actor: &str,
    matched: &MatchedPath,
    params: &RawPathParams,
) -> Result<String, ApiError> {
    let segment = |wanted: &str| {
        params
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| value)
    };
    let app = match segment("app") {
        Some(app) => Some(crate::apps::resolve(state, app).await?),
        None => None,
    };
    let mut scope = format!("{actor} POST {}", matched.as_str());
    for (name, value) in params.iter() {
        let id = match (name, app) {
            ("app", Some(app)) => app.to_string(),
            ("endpoint", Some(app)) => {
                let reference =
                    IdOrUid::<EndpointId>::parse(value).map_err(|_| ApiError::NotFound)?;
                state
                    .store
                    .get_endpoint(app, &reference)
                    .await?
                    .id
                    .to_string()
            }
            ("msg", Some(app)) => {
                match IdOrUid::<MessageId>::parse(value).map_err(|_| ApiError::NotFound)? {
                    IdOrUid::Id(id) => id.to_string(),
                    reference => state
                        .store
                        .get_message(app, &reference)
                        .await?
                        .id
                        .to_string(),
                }
            }
            _ => value.to_owned(),
        };
        scope.push_str(&format!(" {name}={id}"));
    }
    Ok(scope)
}

/// SHA-256 of what makes two requests the same request: the operation and
/// what it names (the scope), the query and the body, byte for byte.
fn fingerprint(scope: &str, query: Option<&str>, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(scope.as_bytes());
    hash.update(b"?");
    hash.update(query.unwrap_or_default().as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
