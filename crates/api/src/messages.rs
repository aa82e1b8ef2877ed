//! `/app/{app}/msg/` and the attempt log: accepting events (fan-out happens
//! in the store, in the same transaction), reading them back, resending.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{AppId, AttemptId, DeliveryStatus, EndpointId, EventTypeName, MessageId};
use herald_store::{
    Attempt, AttemptFilter, AttemptQuery, Claim, Message, MessageInput, MessageQuery,
};

use crate::apps::resolve;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_time, timestamp, Body, ListParams, ListResponse};
use crate::middleware::now_ms;
use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/{app}/msg", get(list).post(create))
        .route("/app/{app}/msg/{msg}", get(read))
        .route(
            "/app/{app}/attempt/endpoint/{endpoint}",
            get(attempts_by_endpoint),
        )
        .route("/app/{app}/attempt/msg/{msg}", get(attempts_by_message))
        .route("/app/{app}/msg/{msg}/attempt/{attempt}", get(attempt))
        .route(
            "/app/{app}/msg/{msg}/endpoint/{endpoint}/resend",
            post(resend),
        )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageIn {
    event_type: String,
    /// Kept as the sender wrote it: key order and numbers reach receivers unchanged.
    payload: Box<RawValue>,
    event_id: Option<String>,
    channels: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageOut {
    id: String,
    event_id: Option<String>,
    event_type: String,
    payload: Box<RawValue>,
    channels: Option<Vec<String>>,
    timestamp: String,
}

impl MessageOut {
    pub(crate) fn new(message: &Message, with_content: bool) -> Self {
        let payload = if with_content {
            RawValue::from_string(message.payload.clone())
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

#[derive(Debug, Deserialize)]
struct ContentOption {
    with_content: Option<bool>,
}

fn parse_channels(channels: Option<Vec<String>>) -> ApiResult<Option<Vec<String>>> {
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

async fn create(
    State(state): State<AppState>,
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
    };
    let claim = state
        .dispatcher
        .as_ref()
        .and_then(|d| d.claim_for_new_work());
    let created = state.store.create_message(app, message, claim).await?;
    let out = MessageOut::new(&created.message, options.with_content.unwrap_or(true));
    if let Some(dispatcher) = &state.dispatcher {
        // Deliveries not leased here (strictly ordered endpoints) are
        // claimed in order by the run loop.
        if created.jobs.len() < created.deliveries {
            dispatcher.nudge();
        }
        dispatcher.submit(created.jobs);
    }
    Ok((StatusCode::ACCEPTED, Json(out)))
}

#[derive(Debug, Deserialize)]
struct MessageListParams {
    limit: Option<usize>,
    iterator: Option<String>,
    with_content: Option<bool>,
    before: Option<String>,
    after: Option<String>,
    /// Comma-separated.
    event_types: Option<String>,
    channel: Option<String>,
}

/// A comma-separated list of event-type names.
fn event_types(text: Option<&str>) -> ApiResult<Vec<EventTypeName>> {
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

fn optional_time(
    field: &'static str,
    text: Option<&str>,
) -> ApiResult<Option<herald_store::Timestamp>> {
    text.map(|t| parse_time(field, t)).transpose()
}

async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<MessageListParams>,
) -> ApiResult<Json<ListResponse<MessageOut>>> {
    let app = resolve(&state, &app).await?;
    let query = MessageQuery {
        page: ListParams {
            limit: params.limit,
            iterator: params.iterator,
        }
        .page(),
        event_types: event_types(params.event_types.as_deref())?,
        before: optional_time("before", params.before.as_deref())?,
        after: optional_time("after", params.after.as_deref())?,
        channel: params
            .channel
            .map(|channel| Uid::parse("channel", &channel).map(|_| channel))
            .transpose()?,
    };
    let with_content = params.with_content.unwrap_or(true);
    let page = state.store.list_messages(app, query).await?;
    Ok(Json(ListResponse::from_page(page, |m| {
        MessageOut::new(&m, with_content)
    })))
}

async fn read(
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageAttemptOut {
    id: String,
    msg_id: String,
    endpoint_id: String,
    url: String,
    response: String,
    response_status_code: u16,
    response_duration_ms: u64,
    status: i64,
    status_text: &'static str,
    trigger_type: i64,
    /// Herald's addition: why the attempt failed (`timeout`, `connect`, …).
    error_class: Option<&'static str>,
    timestamp: String,
}

impl From<Attempt> for MessageAttemptOut {
    fn from(attempt: Attempt) -> Self {
        Self {
            id: attempt.id.to_string(),
            msg_id: attempt.message_id.to_string(),
            endpoint_id: attempt.endpoint_id.to_string(),
            url: attempt.url,
            response: attempt.response,
            response_status_code: attempt.response_status_code,
            response_duration_ms: attempt.response_duration_ms,
            status: attempt.status.code(),
            status_text: attempt.status.text(),
            trigger_type: attempt.trigger.code(),
            error_class: attempt.error_class.map(|c| c.as_str()),
            timestamp: timestamp(attempt.created_at),
        }
    }
}

#[derive(Debug, Deserialize)]
struct AttemptListParams {
    limit: Option<usize>,
    iterator: Option<String>,
    status: Option<i64>,
    status_code_class: Option<u16>,
    /// Comma-separated.
    event_types: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

impl AttemptListParams {
    fn query(self, filter: AttemptFilter) -> ApiResult<AttemptQuery> {
        let status = self
            .status
            .map(|code| {
                DeliveryStatus::from_code(code)
                    .ok_or_else(|| ApiError::invalid("status", "must be 0, 1, 2 or 3"))
            })
            .transpose()?;
        if self
            .status_code_class
            .is_some_and(|class| class > 500 || class % 100 != 0)
        {
            return Err(ApiError::invalid(
                "status_code_class",
                "must be 0, 100, 200, 300, 400 or 500",
            ));
        }
        Ok(AttemptQuery {
            status,
            status_code_class: self.status_code_class,
            event_types: event_types(self.event_types.as_deref())?,
            before: optional_time("before", self.before.as_deref())?,
            after: optional_time("after", self.after.as_deref())?,
            ..AttemptQuery::new(
                filter,
                ListParams {
                    limit: self.limit,
                    iterator: self.iterator,
                }
                .page(),
            )
        })
    }
}

async fn endpoint_id(
    state: &AppState,
    app: herald_domain::AppId,
    segment: &str,
) -> ApiResult<EndpointId> {
    let reference = IdOrUid::<EndpointId>::parse(segment).map_err(|_| ApiError::NotFound)?;
    Ok(state.store.get_endpoint(app, &reference).await?.id)
}

async fn message_id(
    state: &AppState,
    app: herald_domain::AppId,
    segment: &str,
) -> ApiResult<MessageId> {
    let reference = IdOrUid::<MessageId>::parse(segment).map_err(|_| ApiError::NotFound)?;
    Ok(state.store.get_message(app, &reference).await?.id)
}

async fn attempts_by_endpoint(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
    Query(params): Query<AttemptListParams>,
) -> ApiResult<Json<ListResponse<MessageAttemptOut>>> {
    let app = resolve(&state, &app).await?;
    let endpoint = endpoint_id(&state, app, &endpoint).await?;
    let page = state
        .store
        .list_attempts(app, params.query(AttemptFilter::Endpoint(endpoint))?)
        .await?;
    Ok(Json(ListResponse::from_page(page, MessageAttemptOut::from)))
}

async fn attempts_by_message(
    State(state): State<AppState>,
    Path((app, msg)): Path<(String, String)>,
    Query(params): Query<AttemptListParams>,
) -> ApiResult<Json<ListResponse<MessageAttemptOut>>> {
    let app = resolve(&state, &app).await?;
    let message = message_id(&state, app, &msg).await?;
    let page = state
        .store
        .list_attempts(app, params.query(AttemptFilter::Message(message))?)
        .await?;
    Ok(Json(ListResponse::from_page(page, MessageAttemptOut::from)))
}

/// One attempt, with Herald's addition: the request it made. The body is
/// rebuilt exactly from the stored message; the headers are the standard
/// ones with the signature masked, plus the endpoint's custom headers as
/// they are now.
#[derive(Debug, Serialize)]
struct AttemptDetailOut {
    #[serde(flatten)]
    attempt: MessageAttemptOut,
    request: RequestOut,
}

#[derive(Debug, Serialize)]
struct RequestOut {
    headers: std::collections::BTreeMap<String, String>,
    body: Box<RawValue>,
}

async fn attempt(
    State(state): State<AppState>,
    Path((app, msg, attempt)): Path<(String, String, String)>,
) -> ApiResult<Json<AttemptDetailOut>> {
    let app = resolve(&state, &app).await?;
    let message = state
        .store
        .get_message(
            app,
            &IdOrUid::<MessageId>::parse(&msg).map_err(|_| ApiError::NotFound)?,
        )
        .await?;
    let attempt = AttemptId::parse(&attempt).map_err(|_| ApiError::NotFound)?;
    let attempt = state.store.get_attempt(app, message.id, attempt).await?;
    let endpoint = state
        .store
        .get_endpoint(app, &IdOrUid::Id(attempt.endpoint_id))
        .await?;
    let mut headers = endpoint.headers.clone();
    let id = message.id.to_string();
    let seconds = (attempt.created_at / 1000).to_string();
    for prefix in ["webhook", "svix"] {
        headers.insert(format!("{prefix}-id"), id.clone());
        headers.insert(format!("{prefix}-timestamp"), seconds.clone());
        headers.insert(format!("{prefix}-signature"), "v1,<redacted>".to_owned());
    }
    headers.insert("content-type".into(), "application/json".into());
    let body = herald_dispatch::build_body(&message);
    let body = RawValue::from_string(String::from_utf8_lossy(&body).into_owned())
        .map_err(|e| ApiError::Internal(format!("rebuilding a request body: {e}")))?;
    Ok(Json(AttemptDetailOut {
        attempt: attempt.into(),
        request: RequestOut { headers, body },
    }))
}

async fn resend(
    State(state): State<AppState>,
    Path((app, msg, endpoint)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let app = resolve(&state, &app).await?;
    let message = message_id(&state, app, &msg).await?;
    let endpoint = endpoint_id(&state, app, &endpoint).await?;
    // Without a dispatcher in this process the lease ends at once, so any
    // worker claims the resend on its next look.
    let claim = state
        .dispatcher
        .as_ref()
        .and_then(|d| d.claim_for_new_work())
        .unwrap_or_else(|| {
            let now = now_ms();
            Claim { now, until: now }
        });
    let job = state.store.resend(app, message, endpoint, claim).await?;
    if let Some(dispatcher) = &state.dispatcher {
        dispatcher.submit(vec![job]);
    }
    Ok(StatusCode::ACCEPTED)
}
