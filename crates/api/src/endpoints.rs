//! `/app/{app}/endpoint/`: receivers' URLs, subscriptions, secrets and headers.

use crate::extract::{Path, Query};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{EndpointId, EndpointUrl, FilterTypes, RetryPolicy, RetryPolicySpec, Secret};
use herald_store::{Endpoint, EndpointInput, Headers, Metadata};

use crate::apps::resolve;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{patch_field, timestamp, Body, ListParams, ListResponse};
use crate::middleware::now_ms;
use crate::openapi::{AppPath, EndpointPath, Errors};
use crate::operations::Operations;
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, patch, remove))
        .routes(routes!(secret))
        .routes(routes!(rotate))
        .routes(routes!(headers, replace_headers, patch_headers))
        .routes(routes!(stats))
        .routes(routes!(health))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointIn {
    #[schema(format = "uri", min_length = 1)]
    url: String,
    #[schema(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9._-]+$")]
    uid: Option<String>,
    description: Option<String>,
    #[serde(default)]
    disabled: bool,
    filter_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    rate_limit: Option<u32>,
    version: Option<i32>,
    metadata: Option<Metadata>,
    secret: Option<String>,
    /// Herald's addition: `hmac-sha256` (default, `v1` signatures) or
    /// `ed25519` (`v1a`, verified with the public key) for a generated secret.
    signing: Option<String>,
    headers: Option<Headers>,
    /// Herald's addition; absent: the server's retry schedule.
    retry_policy: Option<RetryPolicySpec>,
    /// Herald's addition: one message at a time, in order.
    #[serde(default)]
    strict_ordering: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointPatch {
    url: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    uid: Option<Option<String>>,
    description: Option<String>,
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    filter_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    channels: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    rate_limit: Option<Option<u32>>,
    version: Option<i32>,
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<RetryPolicySpec>)]
    retry_policy: Option<Option<RetryPolicySpec>>,
    strict_ordering: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointOut {
    id: String,
    uid: Option<String>,
    url: String,
    description: String,
    version: i32,
    rate_limit: Option<u32>,
    disabled: bool,
    filter_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    metadata: Metadata,
    /// `null`: the server's retry schedule.
    retry_policy: Option<RetryPolicySpec>,
    /// Herald's addition: `manual`, `gone` (it answered 410) or `failing`
    /// (disabled automatically), with when.
    disabled_reason: Option<String>,
    disabled_at: Option<String>,
    strict_ordering: bool,
    created_at: String,
    updated_at: String,
}

impl From<Endpoint> for EndpointOut {
    fn from(endpoint: Endpoint) -> Self {
        Self {
            id: endpoint.id.to_string(),
            uid: endpoint.uid.map(|u| u.to_string()),
            url: endpoint.url.to_string(),
            description: endpoint.description,
            version: endpoint.version,
            rate_limit: endpoint.rate_limit,
            disabled: endpoint.disabled,
            filter_types: endpoint.filter_types,
            channels: endpoint.channels,
            metadata: endpoint.metadata,
            retry_policy: endpoint.retry_policy.as_ref().map(RetryPolicy::to_spec),
            disabled_reason: endpoint.disabled_reason,
            disabled_at: endpoint.disabled_at.map(timestamp),
            strict_ordering: endpoint.strict_ordering,
            created_at: timestamp(endpoint.created_at),
            updated_at: timestamp(endpoint.updated_at),
        }
    }
}

pub(crate) fn parse_policy(spec: Option<&RetryPolicySpec>) -> ApiResult<Option<RetryPolicy>> {
    Ok(spec.map(RetryPolicy::from_spec).transpose()?)
}

fn parse_uid(uid: Option<&str>) -> ApiResult<Option<Uid>> {
    uid.map(|u| {
        if EndpointId::parse(u).is_ok() {
            return Err(ApiError::invalid(
                "uid",
                "must not have the form of an endpoint id",
            ));
        }
        Uid::parse("uid", u).map_err(ApiError::from)
    })
    .transpose()
}

pub(crate) fn parse_filter(filter: Option<&[String]>) -> ApiResult<FilterTypes> {
    match filter {
        None => Ok(FilterTypes::all()),
        Some([]) => Err(ApiError::invalid(
            "filterTypes",
            "must not be empty; omit it or use null to receive every event type",
        )),
        Some(names) => Ok(FilterTypes::parse(names)?),
    }
}

pub(crate) fn check_description(description: &str) -> ApiResult<()> {
    if description.len() > 1024 {
        return Err(ApiError::invalid(
            "description",
            "must be at most 1024 characters",
        ));
    }
    Ok(())
}

/// Header names Herald sets itself or that would break the request.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "user-agent",
];

pub(crate) fn parse_headers(headers: Headers) -> ApiResult<Headers> {
    if headers.len() > 32 {
        return Err(ApiError::invalid("headers", "at most 32 custom headers"));
    }
    let mut parsed = Headers::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(ApiError::invalid(
                "headers",
                format!("`{name}` is not a valid header name"),
            ));
        }
        if FORBIDDEN_HEADERS.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower.starts_with("svix-")
        {
            return Err(ApiError::invalid(
                "headers",
                format!("`{name}` may not be set on an endpoint"),
            ));
        }
        if value.len() > 4096 || HeaderValue::from_str(&value).is_err() {
            return Err(ApiError::invalid(
                "headers",
                format!("the value of `{name}` is not a valid header value"),
            ));
        }
        parsed.insert(lower, value);
    }
    Ok(parsed)
}

/// Resolves `{app}` and `{endpoint}` path segments to an existing endpoint.
pub(crate) async fn resolve_endpoint(
    state: &AppState,
    app: &str,
    endpoint: &str,
) -> ApiResult<Endpoint> {
    let app = resolve(state, app).await?;
    let reference = IdOrUid::<EndpointId>::parse(endpoint).map_err(|_| ApiError::NotFound)?;
    Ok(state.store.get_endpoint(app, &reference).await?)
}

/// List an app's endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint",
    tag = "Endpoint",
    operation_id = "v1.endpoint.list",
    params(AppPath, ListParams),
    responses((status = 200, body = ListResponse<EndpointOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListResponse<EndpointOut>>> {
    let app = resolve(&state, &app).await?;
    let page = state
        .store
        .list_endpoints(app, params.page::<herald_domain::EndpointId>()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, EndpointOut::from)))
}

/// Create an endpoint.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/endpoint",
    tag = "Endpoint",
    operation_id = "v1.endpoint.create",
    params(AppPath),
    request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.created"})))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
    Body(input): Body<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    let app = resolve(&state, &app).await?;
    let description = input.description.unwrap_or_default();
    check_description(&description)?;
    let endpoint = EndpointInput {
        uid: parse_uid(input.uid.as_deref())?,
        url: EndpointUrl::parse(&input.url, &state.config.policy)?,
        description,
        disabled: input.disabled,
        filter_types: parse_filter(input.filter_types.as_deref())?,
        channels: crate::messages::parse_channels(input.channels)?,
        rate_limit: input.rate_limit,
        version: input.version.unwrap_or(1),
        metadata: input.metadata.unwrap_or_default(),
        retry_policy: parse_policy(input.retry_policy.as_ref())?,
        strict_ordering: input.strict_ordering,
    };
    let secret = match (input.secret, input.signing.as_deref()) {
        (Some(text), _) => Secret::parse(&text)?,
        (None, None | Some("hmac-sha256")) => Secret::generate(),
        (None, Some("ed25519")) => Secret::generate_ed25519(),
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "signing",
                "must be `hmac-sha256` or `ed25519`",
            ))
        }
    };
    let headers = parse_headers(input.headers.unwrap_or_default())?;
    let created = Operations::new(&state, caller)
        .create_endpoint(app, endpoint, headers, secret)
        .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Get an endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get",
    params(EndpointPath),
    responses((status = 200, body = EndpointOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<EndpointOut>> {
    Ok(Json(
        resolve_endpoint(&state, &app, &endpoint).await?.into(),
    ))
}

/// Update an endpoint.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app}/endpoint/{endpoint}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.update",
    params(EndpointPath),
    request_body = EndpointIn,
    responses((status = 200, body = EndpointOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.updated"})))
)]
pub(crate) async fn replace(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Body(input): Body<EndpointIn>,
) -> ApiResult<Json<EndpointOut>> {
    let current = resolve_endpoint(&state, &app, &endpoint).await?;
    let description = input.description.unwrap_or_default();
    check_description(&description)?;
    let update = EndpointInput {
        uid: parse_uid(input.uid.as_deref())?,
        url: EndpointUrl::update(&input.url, &current.url, &state.config.policy)?,
        description,
        disabled: input.disabled,
        filter_types: parse_filter(input.filter_types.as_deref())?,
        channels: crate::messages::parse_channels(input.channels)?,
        rate_limit: input.rate_limit,
        version: input.version.unwrap_or(current.version),
        metadata: input.metadata.unwrap_or_default(),
        retry_policy: parse_policy(input.retry_policy.as_ref())?,
        strict_ordering: input.strict_ordering,
    };
    let updated = Operations::new(&state, caller)
        .update_endpoint(&current, update)
        .await?;
    Ok(Json(updated.into()))
}

/// An endpoint's current settings as input for an update (the portal's
/// enable/disable).
pub(crate) fn input_of(current: &Endpoint) -> ApiResult<EndpointInput> {
    Ok(EndpointInput {
        uid: current.uid.clone(),
        url: current.url.clone(),
        description: current.description.clone(),
        disabled: current.disabled,
        filter_types: parse_filter(current.filter_types.as_deref())?,
        channels: current.channels.clone(),
        rate_limit: current.rate_limit,
        version: current.version,
        metadata: current.metadata.clone(),
        retry_policy: current.retry_policy.clone(),
        strict_ordering: current.strict_ordering,
    })
}

/// Patch an endpoint.
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app}/endpoint/{endpoint}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.patch",
    params(EndpointPath),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.updated"})))
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Body(changes): Body<EndpointPatch>,
) -> ApiResult<Json<EndpointOut>> {
    let current = resolve_endpoint(&state, &app, &endpoint).await?;
    let url = changes.url.unwrap_or_else(|| current.url.to_string());
    let description = changes
        .description
        .unwrap_or_else(|| current.description.clone());
    check_description(&description)?;
    let filter = changes
        .filter_types
        .unwrap_or_else(|| current.filter_types.clone());
    let update = EndpointInput {
        uid: match changes.uid {
            Some(uid) => parse_uid(uid.as_deref())?,
            None => current.uid.clone(),
        },
        url: EndpointUrl::update(&url, &current.url, &state.config.policy)?,
        description,
        disabled: changes.disabled.unwrap_or(current.disabled),
        filter_types: parse_filter(filter.as_deref())?,
        channels: match changes.channels {
            Some(channels) => crate::messages::parse_channels(channels)?,
            None => current.channels.clone(),
        },
        rate_limit: changes.rate_limit.unwrap_or(current.rate_limit),
        version: changes.version.unwrap_or(current.version),
        metadata: changes.metadata.unwrap_or_else(|| current.metadata.clone()),
        retry_policy: match changes.retry_policy {
            Some(spec) => parse_policy(spec.as_ref())?,
            None => current.retry_policy.clone(),
        },
        strict_ordering: changes.strict_ordering.unwrap_or(current.strict_ordering),
    };
    let updated = Operations::new(&state, caller)
        .update_endpoint(&current, update)
        .await?;
    Ok(Json(updated.into()))
}

/// Delete an endpoint.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app}/endpoint/{endpoint}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.delete",
    params(EndpointPath),
    responses((status = 204, description = "Deleted"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.deleted"})))
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    Operations::new(&state, caller)
        .delete_endpoint(&endpoint)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
pub(crate) struct RotateIn {
    key: Option<String>,
}

/// The body is optional: an empty POST generates a new secret.
/// Rotate the signing secret (the old one keeps signing for the grace period).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/secret/rotate",
    tag = "Endpoint",
    operation_id = "v1.endpoint.rotate-secret",
    params(EndpointPath),
    request_body = RotateIn,
    responses((status = 204, description = "Rotated"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.secret_rotated"})))
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let input: RotateIn = if body.iter().all(u8::is_ascii_whitespace) {
        RotateIn::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            code: "invalid_json",
            detail: e.to_string(),
        })?
    };
    let endpoint = resolve_endpoint(&state, &app, &endpoint).await?;
    let key = input.key.map(|text| Secret::parse(&text)).transpose()?;
    Operations::new(&state, caller)
        .rotate_secret(&endpoint, key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HeadersOut {
    headers: Headers,
    sensitive: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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
    }))
}
