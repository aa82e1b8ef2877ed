//! An endpoint's other routes: its signing secret (read, rotate), its custom
//! headers, its deliveries by state, its health figures, and its
//! transformation seen through Svix's transformation routes.

use crate::extract::Path;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use herald_domain::{DeliveryOptions, Secret};
use herald_store::{Endpoint, Headers};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{timestamp, Body};
use crate::middleware::now_ms;
use crate::openapi::{EndpointPath, Errors};
use crate::operations::Operations;
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::endpoints::{check_options, input_of, parse_headers, resolve_endpoint};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(secret))
        .routes(routes!(rotate))
        .routes(routes!(headers, replace_headers, patch_headers))
        .routes(routes!(stats))
        .routes(routes!(attempt_stats))
        .routes(routes!(health))
        .routes(routes!(transformation, patch_transformation))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretOut {
    key: String,
    /// Herald's addition, for `ed25519` secrets: what receivers verify
    /// `v1a` signatures with.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

/// Get the endpoint's signing secret.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/secret",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-secret",
    params(EndpointPath),
    responses((status = 200, body = SecretOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn secret(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<SecretOut>> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let secret = state
        .store
        .endpoint_secret(endpoint.app_id, endpoint.id)
        .await?;
    Ok(Json(SecretOut {
        key: secret.expose(),
        public_key: secret.public_key(),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RotateIn {
    key: Option<String>,
    /// How long the old secret keeps signing: 0 (not at all) to 604,800
    /// (7 days); absent: the server's grace (24 h by default).
    #[schema(minimum = 0, maximum = 604800)]
    grace_period_seconds: Option<u64>,
}

/// The longest grace a rotation may give the old secret (Svix's bound).
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// The body is optional: an empty POST generates a new secret.
/// Rotate the signing secret (the old one keeps signing for the grace period).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/secret/rotate",
    tag = "Endpoint",
    operation_id = "v1.endpoint.rotate-secret",
    params(EndpointPath),
    request_body = RotateIn,
    responses((status = 200, description = "Rotated: the new secret", body = SecretOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.secret_rotated"})))
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<SecretOut>> {
    let input: RotateIn = crate::extract::optional_body(&body)?;
    let grace = match input.grace_period_seconds {
        Some(seconds) if seconds > MAX_GRACE_SECONDS => {
            return Err(ApiError::invalid(
                "gracePeriodSeconds",
                format!("at most {MAX_GRACE_SECONDS} (7 days)"),
            ))
        }
        seconds => seconds.map(std::time::Duration::from_secs),
    };
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let key = input.key.map(|text| Secret::parse(&text)).transpose()?;
    let secret = Operations::new(&state, caller)
        .rotate_secret(&endpoint, key, grace)
        .await?;
    Ok(Json(SecretOut {
        key: secret.expose(),
        public_key: secret.public_key(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HeadersOut {
    headers: Headers,
    sensitive: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HeadersIn {
    headers: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    delete_headers: Vec<String>,
}

/// Get the custom headers (credential-like ones masked).
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/headers",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-headers",
    params(EndpointPath),
    responses((status = 200, body = HeadersOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn headers(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<HeadersOut>> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    Ok(Json(HeadersOut {
        headers: endpoint.headers,
        sensitive: Vec::new(),
    }))
}

/// Set the custom headers.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/headers",
    tag = "Endpoint",
    operation_id = "v1.endpoint.update-headers",
    params(EndpointPath),
    request_body = HeadersIn,
    responses((status = 204, description = "Set"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.headers_updated"})))
)]
pub(crate) async fn replace_headers(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Body(input): Body<HeadersIn>,
) -> ApiResult<StatusCode> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let headers = input
        .headers
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
    let headers = parse_headers(headers)?;
    Operations::new(&state, caller)
        .set_endpoint_headers(&endpoint, headers)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Merges: a `null` value or a name in `deleteHeaders` removes the header.
/// Add, change or (with null) remove custom headers.
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/headers",
    tag = "Endpoint",
    operation_id = "v1.endpoint.patch-headers",
    params(EndpointPath),
    request_body = HeadersIn,
    responses((status = 204, description = "Changed"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.headers_updated"})))
)]
pub(crate) async fn patch_headers(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Body(input): Body<HeadersIn>,
) -> ApiResult<StatusCode> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let mut headers = endpoint.headers.clone();
    for (name, value) in input.headers {
        let name = name.to_ascii_lowercase();
        match value {
            Some(value) => headers.insert(name, value),
            None => headers.remove(&name),
        };
    }
    for name in input.delete_headers {
        headers.remove(&name.to_ascii_lowercase());
    }
    let headers = parse_headers(headers)?;
    Operations::new(&state, caller)
        .set_endpoint_headers(&endpoint, headers)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatsOut {
    success: u64,
    pending: u64,
    sending: u64,
    fail: u64,
    canceled: u64,
}

/// Deliveries of the endpoint by state.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/stats",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-stats",
    params(EndpointPath),
    responses((status = 200, body = StatsOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn stats(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<StatsOut>> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let stats = state
        .store
        .endpoint_stats(endpoint.app_id, endpoint.id)
        .await?;
    Ok(Json(StatsOut {
        success: stats.success,
        pending: stats.pending,
        sending: stats.sending,
        fail: stats.fail,
        canceled: 0,
    }))
}

/// The window of attempt stats (RFC 3339); by default the last 28 days.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AttemptStatsParams {
    since: Option<String>,
    until: Option<String>,
}

/// An endpoint's attempts in a window, by outcome (Svix's
/// `EndpointAttemptStats`; Herald cancels none).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AttemptStatsOut {
    success: u64,
    fail: u64,
    canceled: u64,
}

/// The endpoint's attempts made in `[since, until)`, by outcome.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/attempt-stats",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-attempt-stats",
    params(EndpointPath, AttemptStatsParams),
    responses((status = 200, body = AttemptStatsOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn attempt_stats(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
    crate::extract::Query(params): crate::extract::Query<AttemptStatsParams>,
) -> ApiResult<Json<AttemptStatsOut>> {
    let optional_time = crate::messages::optional_time;
    let until = optional_time("until", params.until.as_deref())?.unwrap_or_else(now_ms);
    let since =
        optional_time("since", params.since.as_deref())?.unwrap_or(until - 28 * 24 * 3600 * 1000);
    if since > until {
        return Err(ApiError::invalid("since", "is after `until`"));
    }
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let stats = state
        .store
        .attempt_stats(endpoint.app_id, endpoint.id, since, until)
        .await?;
    Ok(Json(AttemptStatsOut {
        success: stats.success,
        fail: stats.fail,
        canceled: 0,
    }))
}

/// Herald's health route: success rate and response times over the last
/// hour, day and week (from aggregates kept in 5-minute buckets, so each
/// window reaches back to the start of its first bucket), the last 20
/// attempts, and the endpoint's current run of failures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthOut {
    endpoint_id: String,
    disabled: bool,
    windows: HealthWindows,
    recent: Vec<RecentAttempt>,
    consecutive_failures: u64,
    last_success_at: Option<String>,
    last_failure_at: Option<String>,
    failing_since: Option<String>,
    /// The endpoint's filter failing on messages (so that they were not
    /// sent to it), as seen by the process answering since it started:
    /// `null` when it has not failed there.
    filter_failures: Option<FilterFailuresOut>,
}

/// How often an endpoint's filter failed (a CEL error, its cost budget or
/// its deadline) and the last time, with why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilterFailuresOut {
    count: u64,
    last_at: String,
    last_error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HealthWindows {
    #[serde(rename = "1h")]
    hour: WindowOut,
    #[serde(rename = "24h")]
    day: WindowOut,
    #[serde(rename = "7d")]
    week: WindowOut,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WindowOut {
    attempts: u64,
    succeeded: u64,
    failed: u64,
    success_rate: Option<f64>,
    avg_response_ms: Option<f64>,
    /// The upper bound of the histogram bin holding the 95th percentile;
    /// `null` without attempts or when slower than 30 s.
    p95_response_ms: Option<u64>,
}

impl From<&herald_store::HealthCounts> for WindowOut {
    fn from(counts: &herald_store::HealthCounts) -> Self {
        Self {
            attempts: counts.attempts(),
            succeeded: counts.succeeded,
            failed: counts.failed,
            success_rate: counts.success_rate(),
            avg_response_ms: counts.average_ms(),
            p95_response_ms: counts.p95_ms(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecentAttempt {
    id: String,
    msg_id: String,
    status: i64,
    response_status_code: u16,
    response_duration_ms: u64,
    error_class: Option<&'static str>,
    timestamp: String,
}

/// Herald's endpoint health: success rate and latency over 1 h, 24 h, 7 d; recent attempts; the current run of failures.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/health",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-health",
    params(EndpointPath),
    responses((status = 200, body = HealthOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn health(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<HealthOut>> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let health = state
        .store
        .endpoint_health(endpoint.app_id, endpoint.id, now_ms())
        .await?;
    Ok(Json(HealthOut {
        endpoint_id: endpoint.id.to_string(),
        disabled: endpoint.disabled,
        windows: HealthWindows {
            hour: (&health.last_hour).into(),
            day: (&health.last_day).into(),
            week: (&health.last_week).into(),
        },
        recent: health
            .recent
            .into_iter()
            .map(|a| RecentAttempt {
                id: a.id.to_string(),
                msg_id: a.message_id.to_string(),
                status: a.status.code(),
                response_status_code: a.response_status_code,
                response_duration_ms: a.response_duration_ms,
                error_class: a.error_class.map(|c| c.as_str()),
                timestamp: timestamp(a.created_at),
            })
            .collect(),
        consecutive_failures: health.consecutive_failures,
        last_success_at: health.last_success_at.map(timestamp),
        last_failure_at: health.last_failure_at.map(timestamp),
        failing_since: health.failing_since.map(timestamp),
        filter_failures: herald_domain::expr::filter_failures(&endpoint.id.to_string()).map(
            |failures| FilterFailuresOut {
                count: failures.count,
                last_at: timestamp(failures.last_at),
                last_error: failures.last_error,
            },
        ),
    }))
}

/// An endpoint's transformation as Svix shows it: its `code` (here CEL,
/// not JavaScript) and whether it is applied.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransformationOut {
    code: Option<String>,
    enabled: bool,
    updated_at: String,
}

/// Svix's `EndpointTransformationPatch`. Herald keeps no disabled
/// transformation: `enabled: false` removes it, and `code` with
/// `enabled: false` is refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TransformationPatch {
    /// A CEL expression yielding the body (checked when saved).
    code: Option<String>,
    enabled: Option<bool>,
}

fn transformation_of(endpoint: &Endpoint) -> TransformationOut {
    TransformationOut {
        code: endpoint.options.transformation.clone(),
        enabled: endpoint.options.transformation.is_some(),
        updated_at: timestamp(endpoint.updated_at),
    }
}

/// Get an endpoint's transformation.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/transformation",
    tag = "Endpoint",
    operation_id = "v1.endpoint.transformation-get",
    params(EndpointPath),
    responses((status = 200, body = TransformationOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn transformation(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<TransformationOut>> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    Ok(Json(transformation_of(&endpoint)))
}

/// Set, replace or remove an endpoint's transformation (Svix's
/// `transformation_partial_update`).
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/transformation",
    tag = "Endpoint",
    operation_id = "v1.endpoint.patch-transformation",
    params(EndpointPath),
    request_body = TransformationPatch,
    responses((status = 200, body = TransformationOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.updated"})))
)]
pub(crate) async fn patch_transformation(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Body(changes): Body<TransformationPatch>,
) -> ApiResult<Json<TransformationOut>> {
    let current = resolve_endpoint(&state, &app, &endpoint).await?;
    let transformation = match (changes.code, changes.enabled) {
        (Some(_), Some(false)) => {
            return Err(ApiError::invalid(
                "enabled",
                "Herald keeps no disabled transformation: send `code` with `enabled` true, or `enabled: false` alone to remove it",
            ))
        }
        (Some(code), _) => Some(code),
        (None, Some(false)) => None,
        (None, Some(true)) if current.options.transformation.is_none() => {
            return Err(ApiError::invalid("code", "there is no transformation to enable: send its `code`"))
        }
        (None, _) => current.options.transformation.clone(),
    };
    let mut update = input_of(&current)?;
    update.options = check_options(
        &state,
        DeliveryOptions {
            transformation,
            ..current.options.clone()
        },
    )?;
    let updated = Operations::new(&state, caller)
        .update_endpoint(&current, update)
        .await?;
    Ok(Json(transformation_of(&updated)))
}
