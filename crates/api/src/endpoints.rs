//! `/app/{app}/endpoint/`: receivers' URLs, subscriptions, secrets and headers.

use crate::extract::{either, Path, Query};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{
    DeliveryOptions, EndpointId, EndpointUrl, FilterTypes, RetryPolicy, RetryPolicySpec, Secret,
};
use herald_store::{Endpoint, EndpointInput, Headers, Metadata};

use crate::apps::resolve;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{patch_field, timestamp, Body, ListParams, ListResponse};
use crate::openapi::{AppPath, EndpointPath, Errors};
use crate::operations::Operations;
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, patch, remove))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EndpointIn {
    #[schema(format = "uri", min_length = 1)]
    url: String,
    #[schema(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9._-]+$")]
    uid: Option<String>,
    description: Option<String>,
    #[serde(default)]
    disabled: bool,
    /// The event types it receives (none: all). Svix's SDK 2 name; the
    /// same as `filterTypes` (422 when both are sent and differ).
    event_types: Option<Vec<String>>,
    filter_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    /// Deliveries per second at most. Svix's SDK 2 name; the same as
    /// `rateLimit`.
    throttle_rate: Option<u32>,
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
    /// Herald's addition: a CEL expression over the message (`type`,
    /// `data`, `channels`, `eventId`, `timestamp`); the endpoint gets the
    /// messages for which it is `true`.
    filter: Option<String>,
    /// Herald's addition: a CEL expression yielding the JSON body to send.
    transformation: Option<String>,
    /// Herald's addition: send the payload (`data`) alone.
    #[serde(default)]
    raw_payload: bool,
    /// Herald's addition: seconds the receiver has to answer (at most the
    /// server's request timeout); absent: the server's.
    #[schema(minimum = 1)]
    timeout: Option<u32>,
}

impl EndpointIn {
    /// Merges the fields sent under two names into `filter_types` and
    /// `rate_limit`.
    fn merged(mut self) -> ApiResult<Self> {
        self.filter_types = either(
            ("filterTypes", self.filter_types.take()),
            ("eventTypes", self.event_types.take()),
        )?;
        self.rate_limit = either(
            ("rateLimit", self.rate_limit.take()),
            ("throttleRate", self.throttle_rate.take()),
        )?;
        Ok(self)
    }

    fn options(&self) -> DeliveryOptions {
        DeliveryOptions {
            filter: self.filter.clone(),
            transformation: self.transformation.clone(),
            raw_payload: self.raw_payload,
            timeout: self.timeout,
        }
    }
}

/// Checks delivery options a client sent (422 naming the field).
pub(crate) fn check_options(
    state: &AppState,
    options: DeliveryOptions,
) -> ApiResult<DeliveryOptions> {
    let max = state
        .config
        .request_timeout
        .as_secs()
        .clamp(1, u64::from(u32::MAX)) as u32;
    options.check(max)?;
    Ok(options)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
    /// Svix's SDK 2 name for `filterTypes`.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    channels: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    rate_limit: Option<Option<u32>>,
    /// Svix's SDK 2 name for `rateLimit`.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    throttle_rate: Option<Option<u32>>,
    version: Option<i32>,
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<RetryPolicySpec>)]
    retry_policy: Option<Option<RetryPolicySpec>>,
    strict_ordering: Option<bool>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    filter: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    transformation: Option<Option<String>>,
    raw_payload: Option<bool>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    timeout: Option<Option<u32>>,
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
    /// The same as `rateLimit`, under Svix's SDK 2 name.
    throttle_rate: Option<u32>,
    disabled: bool,
    filter_types: Option<Vec<String>>,
    /// The same as `filterTypes`, under Svix's SDK 2 name.
    event_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    metadata: Metadata,
    /// `null`: the server's retry schedule.
    retry_policy: Option<RetryPolicySpec>,
    /// Herald's addition: `manual`, `gone` (it answered 410) or `failing`
    /// (disabled automatically), with when.
    disabled_reason: Option<String>,
    disabled_at: Option<String>,
    strict_ordering: bool,
    filter: Option<String>,
    transformation: Option<String>,
    raw_payload: bool,
    /// Seconds; `null`: the server's request timeout.
    timeout: Option<u32>,
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
            throttle_rate: endpoint.rate_limit,
            disabled: endpoint.disabled,
            event_types: endpoint.filter_types.clone(),
            filter_types: endpoint.filter_types,
            channels: endpoint.channels,
            metadata: endpoint.metadata,
            retry_policy: endpoint.retry_policy.as_ref().map(RetryPolicy::to_spec),
            disabled_reason: endpoint.disabled_reason,
            disabled_at: endpoint.disabled_at.map(timestamp),
            strict_ordering: endpoint.strict_ordering,
            filter: endpoint.options.filter,
            transformation: endpoint.options.transformation,
            raw_payload: endpoint.options.raw_payload,
            timeout: endpoint.options.timeout,
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

/// The event types `endpoint` subscribes to (`None`: its stored list does
/// not read, which the writer reports).
pub(crate) fn subscriptions(endpoint: &Endpoint) -> Option<herald_domain::FilterTypes> {
    match &endpoint.filter_types {
        Some(names) => herald_domain::FilterTypes::stored(names).ok(),
        None => Some(herald_domain::FilterTypes::all()),
    }
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
    let input = input.merged()?;
    let app = resolve(&state, &app).await?;
    let options = check_options(&state, input.options())?;
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
        options,
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
    let input = input.merged()?;
    let current = resolve_endpoint(&state, &app, &endpoint).await?;
    let options = check_options(&state, input.options())?;
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
        options,
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
        options: current.options.clone(),
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
    Body(mut changes): Body<EndpointPatch>,
) -> ApiResult<Json<EndpointOut>> {
    changes.filter_types = either(
        ("filterTypes", changes.filter_types.take()),
        ("eventTypes", changes.event_types.take()),
    )?;
    changes.rate_limit = either(
        ("rateLimit", changes.rate_limit.take()),
        ("throttleRate", changes.throttle_rate.take()),
    )?;
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
        options: check_options(
            &state,
            DeliveryOptions {
                filter: changes
                    .filter
                    .unwrap_or_else(|| current.options.filter.clone()),
                transformation: changes
                    .transformation
                    .unwrap_or_else(|| current.options.transformation.clone()),
                raw_payload: changes.raw_payload.unwrap_or(current.options.raw_payload),
                timeout: changes.timeout.unwrap_or(current.options.timeout),
            },
        )?,
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
