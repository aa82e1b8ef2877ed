//! `/app/{app}/msg/`: accepting events (fan-out happens in the store, in
//! the same transaction) and reading them back.

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{AppId, EventTypeName, MessageId};
use herald_store::{Message, MessageInput, MessageQuery};

use crate::apps::resolve;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_time, timestamp, Body, ListParams, ListResponse};
use crate::openapi::{AppPath, Errors, MessagePath};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read))
        .routes(routes!(destinations))
        .routes(routes!(attempted_messages))
        .routes(routes!(precheck))
        .routes(routes!(remove_content))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MessageIn {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[A-Za-z0-9_-]([A-Za-z0-9._-]*[A-Za-z0-9_-])?$"
    )]
    event_type: String,
    /// Kept as the sender wrote it: key order and numbers reach receivers unchanged.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    /// Your id for the event: a second message with it is refused (409).
    #[schema(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9._-]+$")]
    event_id: Option<String>,
    channels: Option<Vec<String>>,
    /// When to make the first attempts (RFC 3339); absent: at once. At
    /// most a minute in the past (then: at once) and no further ahead than
    /// the server keeps messages.
    #[schema(format = "date-time")]
    deliver_at: Option<String>,
}

/// How far in the past a `deliverAt` may be (clocks differ).
const DELIVER_AT_SKEW_MS: i64 = 60_000;

/// A message's `deliverAt`, checked: not more than a minute past, not
/// further ahead than `retention`.
fn deliver_at(
    text: Option<&str>,
    retention: Option<std::time::Duration>,
) -> ApiResult<Option<i64>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let at = parse_time("deliverAt", text)?;
    let now = crate::middleware::now_ms();
    if at < now - DELIVER_AT_SKEW_MS {
        return Err(ApiError::invalid("deliverAt", "is in the past"));
    }
    if let Some(retention) = retention {
        if at > now + retention.as_millis() as i64 {
            return Err(ApiError::invalid(
                "deliverAt",
                "is further ahead than the server keeps messages (HERALD_RETENTION)",
            ));
        }
    }
    Ok(Some(at))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageOut {
    id: String,
    event_id: Option<String>,
    event_type: String,
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    channels: Option<Vec<String>>,
    timestamp: String,
}

impl MessageOut {
    /// `message` as the API shows it, its payload moved rather than copied.
    fn owned(mut message: Message, with_content: bool) -> Self {
        let payload = std::mem::take(&mut message.payload);
        Self::with_payload(&message, payload, with_content)
    }

    pub(crate) fn new(message: &Message, with_content: bool) -> Self {
        let payload = if with_content {
            message.payload.clone()
        } else {
            String::new()
        };
        Self::with_payload(message, payload, with_content)
    }

    fn with_payload(message: &Message, payload: String, with_content: bool) -> Self {
        let payload = if with_content {
            RawValue::from_string(payload)
        } else {
            RawValue::from_string("{}".to_owned())
        }
        .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("valid JSON"));
        Self {
            id: message.id.to_string(),
            event_id: message.event_id.as_ref().map(Uid::to_string),
            event_type: message.event_type.to_string(),
            payload,
            channels: message.channels.clone(),
            timestamp: timestamp(message.created_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ContentOption {
    with_content: Option<bool>,
}

/// Channels of a message or an endpoint: at most 10, each a uid
/// (`[A-Za-z0-9._-]`, 1–256 characters).
pub(crate) fn parse_channels(channels: Option<Vec<String>>) -> ApiResult<Option<Vec<String>>> {
    if let Some(list) = &channels {
        if list.len() > 10 {
            return Err(ApiError::invalid("channels", "at most 10 channels"));
        }
        for channel in list {
            Uid::parse("channels", channel)?;
        }
    }
    Ok(channels)
}

/// Send a message: it fans out to every matching endpoint.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/msg",
    tag = "Message",
    operation_id = "v1.message.create",
    params(AppPath, ContentOption),
    request_body = MessageIn,
    responses((status = 202, body = MessageOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "none"})))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(app): Path<String>,
    Query(options): Query<ContentOption>,
    Body(input): Body<MessageIn>,
) -> ApiResult<(StatusCode, Json<MessageOut>)> {
    // An app id is checked by the store in the same transaction that writes
    // the message (missing: 404), saving a round trip on the hottest route.
    let app = match IdOrUid::<AppId>::parse(&app).map_err(|_| ApiError::NotFound)? {
        IdOrUid::Id(id) => id,
        IdOrUid::Uid(_) => resolve(&state, &app).await?,
    };
    if !input.payload.get().trim_start().starts_with('{') {
        return Err(ApiError::invalid("payload", "must be a JSON object"));
    }
    herald_domain::payload::check_strings(input.payload.get())?;
    let message = MessageInput {
        event_type: EventTypeName::parse(&input.event_type)?,
        event_id: input
            .event_id
            .as_deref()
            .map(|e| Uid::parse("eventId", e))
            .transpose()?,
        payload: input.payload.get().trim().to_owned(),
        channels: parse_channels(input.channels)?,
        to_endpoint: None,
        filters: Default::default(),
        deliver_at: deliver_at(input.deliver_at.as_deref(), state.config.retention)?,
    };
    let created = crate::operations::Operations::new(&state, caller)
        .create_message(app, message)
        .await?;
    state.metrics.message_accepted();
    let out = MessageOut::new(&created.message, options.with_content.unwrap_or(true));
    Ok((StatusCode::ACCEPTED, Json(out)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MessageListParams {
    limit: Option<usize>,
    iterator: Option<String>,
    with_content: Option<bool>,
    before: Option<String>,
    after: Option<String>,
    /// Comma-separated.
    event_types: Option<String>,
    channel: Option<String>,
    /// Not supported: messages carry no tags in Herald (422 when given).
    tag: Option<String>,
}

impl MessageListParams {
    /// The store's query: the page, the filters, and the page's payload
    /// budget.
    fn query(&self) -> ApiResult<MessageQuery> {
        crate::extract::refuse_given("tag", &self.tag, "messages carry no tags in Herald")?;
        Ok(MessageQuery {
            page: ListParams {
                limit: self.limit,
                iterator: self.iterator.clone(),
            }
            .page::<herald_domain::MessageId>()?,
            event_types: event_types(self.event_types.as_deref())?,
            before: optional_time("before", self.before.as_deref())?,
            after: optional_time("after", self.after.as_deref())?,
            channel: self
                .channel
                .clone()
                .map(|channel| Uid::parse("channel", &channel).map(|_| channel))
                .transpose()?,
            max_payload_bytes: Some(crate::limits::PAGE_PAYLOAD_BYTES),
        })
    }
}

/// A comma-separated list of event-type names.
pub(crate) fn event_types(text: Option<&str>) -> ApiResult<Vec<EventTypeName>> {
    Ok(text
        .map(|text| {
            text.split(',')
                .filter(|t| !t.is_empty())
                .map(EventTypeName::parse)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default())
}

pub(crate) fn optional_time(
    field: &'static str,
    text: Option<&str>,
) -> ApiResult<Option<herald_store::Timestamp>> {
    text.map(|t| parse_time(field, t)).transpose()
}

/// List an app's messages, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/msg",
    tag = "Message",
    operation_id = "v1.message.list",
    params(AppPath, MessageListParams),
    responses((status = 200, body = ListResponse<MessageOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(app): Path<String>,
    Query(params): Query<MessageListParams>,
) -> ApiResult<axum::response::Response> {
    let app = resolve(&state, &app).await?;
    // Payloads make pages large: a page takes one of the listing pages
    // the process keeps in memory at once, and holds it until its answer
    // has been written, however slowly the client reads.
    let page_slot = crate::limits::listing_page(&state, caller)?;
    let query = params.query()?;
    let with_content = params.with_content.unwrap_or(true);
    let page = state.store.list_messages(app, query).await?;
    let page = ListResponse::from_page(page, |m| MessageOut::owned(m, with_content));
    crate::extract::json_holding(&page, page_slot)
}

/// The query of an endpoint's attempted messages beyond the message
/// listing's: the delivery's status.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EndpointMessageParams {
    /// 0 delivered, 1 pending, 2 failed, 3 being sent now.
    status: Option<i64>,
    /// `false`: a delivery being sent shows as pending (1), as in Svix's
    /// older statuses; default `true`.
    expanded_statuses: Option<bool>,
}

/// Where one (message, endpoint) delivery stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveryOut {
    /// 0 delivered, 1 pending (waiting for its next attempt), 2 failed,
    /// 3 being sent now.
    status: i64,
    /// `success`, `pending`, `fail` or `sending`.
    status_text: &'static str,
    /// When a pending delivery is tried next.
    next_attempt: Option<String>,
}

impl DeliveryOut {
    fn new(
        status: herald_domain::DeliveryStatus,
        next_attempt: Option<herald_store::Timestamp>,
    ) -> Self {
        Self {
            status: status.code(),
            status_text: status.text(),
            next_attempt: next_attempt.map(timestamp),
        }
    }
}

/// A message as one endpoint has it (Svix's `EndpointMessageOut`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EndpointMessageOut {
    #[serde(flatten)]
    message: MessageOut,
    #[serde(flatten)]
    delivery: DeliveryOut,
}

/// List the messages sent to an endpoint, newest first, each with where
/// its delivery stands.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/msg",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-attempted-messages",
    params(crate::openapi::EndpointPath, MessageListParams, EndpointMessageParams),
    responses((status = 200, body = ListResponse<EndpointMessageOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn attempted_messages(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Query(messages): Query<MessageListParams>,
    Query(params): Query<EndpointMessageParams>,
) -> ApiResult<axum::response::Response> {
    let status = params
        .status
        .map(|code| {
            herald_domain::DeliveryStatus::from_code(code)
                .ok_or_else(|| ApiError::invalid("status", "is 0, 1, 2 or 3"))
        })
        .transpose()?;
    let endpoint = crate::endpoints::resolve_endpoint(&state, &app, &endpoint).await?;
    let page_slot = crate::limits::listing_page(&state, caller)?;
    let query = herald_store::EndpointMessageQuery {
        endpoint: endpoint.id,
        messages: messages.query()?,
        status,
    };
    let with_content = messages.with_content.unwrap_or(true);
    let page = state
        .store
        .list_endpoint_messages(endpoint.app_id, query)
        .await?;
    let expanded = params.expanded_statuses.unwrap_or(true);
    let page = ListResponse::from_page(page, |m| EndpointMessageOut {
        delivery: DeliveryOut::new(
            match m.status {
                herald_domain::DeliveryStatus::Sending if !expanded => {
                    herald_domain::DeliveryStatus::Pending
                }
                status => status,
            },
            m.next_attempt,
        ),
        message: MessageOut::owned(m.message, with_content),
    });
    crate::extract::json_holding(&page, page_slot)
}

/// Svix's `MessagePrecheckIn`: a message that might be sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PrecheckIn {
    event_type: String,
    channels: Option<Vec<String>>,
}

/// Whether any enabled endpoint subscribes to it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PrecheckOut {
    active: bool,
}

/// Whether a message of this type (on these channels) would go anywhere:
/// `active` when an enabled endpoint of the app subscribes to it (its
/// filter, which needs the payload, may still keep it out). Lets a
/// platform skip building events nobody listens to.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/msg/precheck/active",
    tag = "Message",
    operation_id = "v1.message.precheck",
    params(AppPath),
    request_body = PrecheckIn,
    responses((status = 200, body = PrecheckOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "none"})))
)]
pub(crate) async fn precheck(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Body(input): Body<PrecheckIn>,
) -> ApiResult<Json<PrecheckOut>> {
    let app = resolve(&state, &app).await?;
    let event_type = EventTypeName::parse(&input.event_type)?;
    let channels = parse_channels(input.channels)?;
    let endpoints = crate::extract::every(|page| state.store.list_endpoints(app, page)).await?;
    let active = endpoints.iter().any(|endpoint| {
        !endpoint.disabled
            && crate::endpoints::subscriptions(endpoint).is_some_and(|subscriptions| {
                herald_store::subscribes_to(
                    &subscriptions,
                    endpoint.channels.as_deref(),
                    &event_type,
                    channels.as_deref(),
                )
            })
    });
    Ok(Json(PrecheckOut { active }))
}

/// Get a message.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/msg/{msg}",
    tag = "Message",
    operation_id = "v1.message.get",
    params(MessagePath, ContentOption),
    responses((status = 200, body = MessageOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path((app, msg)): Path<(String, String)>,
    Query(options): Query<ContentOption>,
) -> ApiResult<Json<MessageOut>> {
    let app = resolve(&state, &app).await?;
    let reference = IdOrUid::<MessageId>::parse(&msg).map_err(|_| ApiError::NotFound)?;
    let message = state.store.get_message(app, &reference).await?;
    Ok(Json(MessageOut::new(
        &message,
        options.with_content.unwrap_or(true),
    )))
}

/// An endpoint a message was fanned out to, with where its delivery stands
/// (Svix's `MessageEndpointOut`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageEndpointOut {
    #[serde(flatten)]
    endpoint: crate::endpoints::EndpointOut,
    #[serde(flatten)]
    delivery: DeliveryOut,
}

/// List the endpoints a message was sent to, each with its delivery's
/// status and, while pending, its next attempt.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/msg/{msg}/endpoint",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-attempted-destinations",
    params(MessagePath, ListParams),
    responses((status = 200, body = ListResponse<MessageEndpointOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn destinations(
    State(state): State<AppState>,
    Path((app, msg)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListResponse<MessageEndpointOut>>> {
    let app = resolve(&state, &app).await?;
    let message = crate::attempts::message_id(&state, app, &msg).await?;
    let page = params.page::<herald_domain::EndpointId>()?;
    let page = state.store.list_destinations(app, message, page).await?;
    Ok(Json(ListResponse::from_page(page, |d| {
        MessageEndpointOut {
            endpoint: d.endpoint.into(),
            delivery: DeliveryOut::new(d.status, d.next_attempt),
        }
    })))
}

/// Remove a message's content: its payload is erased for good (it reads
/// `{}` from now on and cannot be resent), and deliveries still pending
/// end as failed with an attempt of class `content_removed`.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app}/msg/{msg}/content",
    tag = "Message",
    operation_id = "v1.message.expunge-content",
    params(MessagePath),
    responses((status = 204, description = "Removed"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "message.content_removed"})))
)]
pub(crate) async fn remove_content(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path((app, msg)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let app = resolve(&state, &app).await?;
    let message = crate::attempts::message_id(&state, app, &msg).await?;
    crate::operations::Operations::new(&state, caller)
        .remove_content(app, message)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
