//! The attempt log: attempts by endpoint and by message with filters, one
//! attempt with the request it made, and resending one delivery.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use herald_domain::headers;
use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, AttemptId, DeliveryStatus, EndpointId, MessageId};
use herald_store::{Attempt, AttemptFilter, AttemptQuery, AuditEntry, Claim, Endpoint, Message};

use crate::apps::resolve;
use crate::error::{ApiError, ApiResult};
use crate::extract::{timestamp, ListParams, ListResponse};
use crate::messages::{event_types, optional_time};
use crate::middleware::now_ms;
use crate::openapi::{AttemptPath, EndpointPath, Errors, MessagePath, ResendPath};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(attempts_by_endpoint))
        .routes(routes!(attempts_by_message))
        .routes(routes!(attempt, expunge_content))
        .routes(routes!(resend))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageAttemptOut {
    pub(crate) id: String,
    pub(crate) msg_id: String,
    pub(crate) endpoint_id: String,
    pub(crate) url: String,
    pub(crate) response: String,
    pub(crate) response_status_code: u16,
    pub(crate) response_duration_ms: u64,
    pub(crate) status: i64,
    pub(crate) status_text: &'static str,
    pub(crate) trigger_type: i64,
    /// Herald's addition: why the attempt failed (`timeout`, `connect`, …).
    pub(crate) error_class: Option<&'static str>,
    pub(crate) timestamp: String,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AttemptListParams {
    limit: Option<usize>,
    iterator: Option<String>,
    status: Option<i64>,
    status_code_class: Option<u16>,
    /// Comma-separated.
    event_types: Option<String>,
    before: Option<String>,
    after: Option<String>,
    /// Herald's addition: each entry with the request it made.
    #[serde(default)]
    with_request: bool,
    /// Svix's: refused when given (Herald does not filter attempts by them).
    tag: Option<String>,
    channel: Option<String>,
    endpoint_id: Option<String>,
    /// Svix's: `true` (each attempt with its message) is refused; Herald
    /// offers `with_request` instead.
    with_msg: Option<bool>,
}

impl AttemptListParams {
    fn query(&self, filter: AttemptFilter) -> ApiResult<AttemptQuery> {
        use crate::extract::refuse_given;
        refuse_given("tag", &self.tag, "messages carry no tags in Herald")?;
        refuse_given(
            "channel",
            &self.channel,
            "attempts are not listed by channel in Herald",
        )?;
        refuse_given(
            "endpoint_id",
            &self.endpoint_id,
            "list an endpoint's attempts with /attempt/endpoint/{endpoint}/",
        )?;
        refuse_given(
            "with_msg",
            &self.with_msg.filter(|with| *with),
            "attempts come without their message; use with_request=true",
        )?;
        let page = ListParams {
            limit: self.limit,
            iterator: self.iterator.clone(),
        }
        .page::<herald_domain::AttemptId>()?;
        self.filters().query(filter, page)
    }

    /// `None` without requests; else whether the page is read forwards
    /// (not from a `prevIterator`, which starts with `-`).
    fn request_shape(&self) -> Option<bool> {
        self.with_request.then(|| {
            !self
                .iterator
                .as_deref()
                .is_some_and(|iterator| iterator.starts_with('-'))
        })
    }

    fn filters(&self) -> AttemptFilters {
        AttemptFilters {
            status: self.status,
            status_code_class: self.status_code_class,
            event_types: self.event_types.clone(),
            before: self.before.clone(),
            after: self.after.clone(),
        }
    }
}

/// The activity log's filters, as a query string gives them (the listings
/// and the export share them).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AttemptFilters {
    /// 0 succeeded, 1 pending, 2 failed, 3 sending.
    pub(crate) status: Option<i64>,
    /// 0 (no answer), 100, 200, 300, 400 or 500.
    pub(crate) status_code_class: Option<u16>,
    /// Comma-separated.
    pub(crate) event_types: Option<String>,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
}

impl AttemptFilters {
    pub(crate) fn query(
        &self,
        filter: AttemptFilter,
        page: herald_store::PageRequest,
    ) -> ApiResult<AttemptQuery> {
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
            ..AttemptQuery::new(filter, page)
        })
    }
}

pub(crate) async fn endpoint_id(
    state: &AppState,
    app: herald_domain::AppId,
    segment: &str,
) -> ApiResult<EndpointId> {
    let reference = IdOrUid::<EndpointId>::parse(segment).map_err(|_| ApiError::NotFound)?;
    Ok(state.store.get_endpoint(app, &reference).await?.id)
}

pub(crate) async fn message_id(
    state: &AppState,
    app: herald_domain::AppId,
    segment: &str,
) -> ApiResult<MessageId> {
    let reference = IdOrUid::<MessageId>::parse(segment).map_err(|_| ApiError::NotFound)?;
    Ok(state.store.get_message(app, &reference).await?.id)
}

/// List an endpoint's attempts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/attempt/endpoint/{endpoint}",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-by-endpoint",
    params(EndpointPath, AttemptListParams),
    responses((status = 200, body = ListResponse<AttemptEntryOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn attempts_by_endpoint(
    State(state): State<AppState>,
    Path((app, endpoint)): Path<(String, String)>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Query(params): Query<AttemptListParams>,
) -> ApiResult<axum::response::Response> {
    let app = resolve(&state, &app).await?;
    let endpoint = endpoint_id(&state, app, &endpoint).await?;
    let page = state
        .store
        .list_attempts(app, params.query(AttemptFilter::Endpoint(endpoint))?)
        .await?;
    entries(&state, caller, app, page, params.request_shape()).await
}

/// List a message's attempts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/attempt/msg/{msg}",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-by-msg",
    params(MessagePath, AttemptListParams),
    responses((status = 200, body = ListResponse<AttemptEntryOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn attempts_by_message(
    State(state): State<AppState>,
    Path((app, msg)): Path<(String, String)>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Query(params): Query<AttemptListParams>,
) -> ApiResult<axum::response::Response> {
    let app = resolve(&state, &app).await?;
    let message = message_id(&state, app, &msg).await?;
    let page = state
        .store
        .list_attempts(app, params.query(AttemptFilter::Message(message))?)
        .await?;
    entries(&state, caller, app, page, params.request_shape()).await
}

/// A listed attempt, with the request it made when asked for
/// (`with_request=true`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AttemptEntryOut {
    #[serde(flatten)]
    attempt: MessageAttemptOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<RequestOut>,
}

/// The attempts of `page` as the API lists them. With their requests, the
/// messages' bodies make the page large: it takes one of the listing
/// pages the process keeps in memory (held until written), and a page
/// read forwards (`with_request` is `Some(true)`; `None`: no requests)
/// ends early, with an iterator to the rest, once its bodies
/// reach [`crate::limits::PAGE_PAYLOAD_BYTES`].
pub(crate) async fn entries(
    state: &AppState,
    caller: crate::auth::Principal,
    app: AppId,
    mut page: herald_store::Page<Attempt>,
    with_request: Option<bool>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let Some(forwards) = with_request else {
        return Ok(
            Json(ListResponse::from_page(page, |attempt| AttemptEntryOut {
                request: None,
                attempt: attempt.into(),
            }))
            .into_response(),
        );
    };
    let page_slot = crate::limits::listing_page(state, caller)?;
    let mut requests = HashMap::new();
    let mut bytes = 0usize;
    let mut kept = page.data.len();
    {
        // A page names few messages and endpoints; each is read once.
        let mut messages: HashMap<MessageId, Arc<Message>> = HashMap::new();
        let mut endpoints: HashMap<EndpointId, Endpoint> = HashMap::new();
        for attempt in &page.data {
            if let Entry::Vacant(entry) = messages.entry(attempt.message_id) {
                let reference = IdOrUid::Id(attempt.message_id);
                entry.insert(Arc::new(state.store.get_message(app, &reference).await?));
            }
            if let Entry::Vacant(entry) = endpoints.entry(attempt.endpoint_id) {
                let reference = IdOrUid::Id(attempt.endpoint_id);
                entry.insert(state.store.get_endpoint(app, &reference).await?);
            }
            let request = request_of(
                &messages[&attempt.message_id],
                &endpoints[&attempt.endpoint_id],
                attempt,
            )
            .await?;
            bytes += request.body.get().len();
            requests.insert(attempt.id, request);
            if forwards && bytes >= crate::limits::PAGE_PAYLOAD_BYTES {
                kept = requests.len();
                break;
            }
        }
    }
    if kept < page.data.len() {
        page.data.truncate(kept);
        page.iterator = page.data.last().map(|attempt| attempt.id.to_string());
        page.done = false;
    }
    let page = ListResponse::from_page(page, |attempt| AttemptEntryOut {
        request: requests.remove(&attempt.id),
        attempt: attempt.into(),
    });
    crate::extract::json_holding(&page, page_slot)
}

/// One attempt, with Herald's addition: the request it made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AttemptDetailOut {
    #[serde(flatten)]
    attempt: MessageAttemptOut,
    request: RequestOut,
}

/// The request an attempt made. The body is rebuilt exactly from the
/// stored message, in the shape the endpoint gives it now (its
/// transformation or raw payload; a transformation that fails shows as its
/// error, a JSON string); the headers are the standard ones with the
/// signature masked, plus the endpoint's custom headers as they are now,
/// with the values of those that look like credentials masked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RequestOut {
    pub(crate) headers: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub(crate) body: Box<RawValue>,
}

pub(crate) async fn request_of(
    message: &Arc<Message>,
    endpoint: &Endpoint,
    attempt: &Attempt,
) -> ApiResult<RequestOut> {
    let mut headers: BTreeMap<String, String> = endpoint
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), headers::shown(name, value).to_owned()))
        .collect();
    let id = message.id.to_string();
    let seconds = (attempt.created_at / 1000).to_string();
    for prefix in ["webhook", "svix"] {
        headers.insert(format!("{prefix}-id"), id.clone());
        headers.insert(format!("{prefix}-timestamp"), seconds.clone());
        headers.insert(format!("{prefix}-signature"), headers::MASKED.to_owned());
    }
    headers.insert("content-type".into(), "application/json".into());
    // A transformation runs off the API's worker threads, as it does for
    // deliveries.
    let body = if endpoint.options.transformation.is_some() {
        herald_dispatch::transformed_body(message.clone(), endpoint.options.clone()).await
    } else {
        herald_dispatch::endpoint_body(message, &endpoint.options, || {
            herald_dispatch::build_body(message)
        })
    }
    .unwrap_or_else(|why| serde_json::to_string(&why).unwrap_or_default().into());
    let body = RawValue::from_string(String::from_utf8_lossy(&body).into_owned())
        .map_err(|e| ApiError::Internal(format!("rebuilding a request body: {e}")))?;
    Ok(RequestOut { headers, body })
}

/// Remove an attempt's response body (one a receiver should not have sent
/// back); the attempt's status, code and timing stay.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app}/msg/{msg}/attempt/{attempt}/content",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.expunge-content",
    params(AttemptPath),
    responses((status = 204, description = "Removed"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "attempt.content_removed"})))
)]
pub(crate) async fn expunge_content(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path((app, msg, attempt)): Path<(String, String, String)>,
) -> ApiResult<axum::http::StatusCode> {
    let app = resolve(&state, &app).await?;
    let message = message_id(&state, app, &msg).await?;
    let attempt = AttemptId::parse(&attempt).map_err(|_| ApiError::NotFound)?;
    crate::operations::Operations::new(&state, caller)
        .expunge_attempt_content(app, message, attempt)
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Get an attempt, with the request it made.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/msg/{msg}/attempt/{attempt}",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.get",
    params(AttemptPath),
    responses((status = 200, body = AttemptDetailOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn attempt(
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
    let request = request_of(&Arc::new(message), &endpoint, &attempt).await?;
    Ok(Json(AttemptDetailOut {
        attempt: attempt.into(),
        request,
    }))
}

/// Queues one manual attempt of (message, endpoint), leased to this
/// process's dispatcher when there is one (the API's resend, the portal's
/// retry).
pub(crate) async fn resend_one(
    state: &AppState,
    app: AppId,
    message: MessageId,
    endpoint: EndpointId,
    audit: Option<AuditEntry>,
) -> ApiResult<()> {
    // Without a dispatcher in this process the lease ends at once, so any
    // worker claims the resend on its next look.
    let claim = state
        .dispatcher
        .as_ref()
        .and_then(|d| d.claim_for_new_work())
        .unwrap_or_else(|| {
            let now = now_ms();
            Claim::new(now, now)
        });
    let job = state
        .store
        .resend(app, message, endpoint, claim, audit)
        .await?;
    if let Some(dispatcher) = &state.dispatcher {
        dispatcher.submit(vec![job]);
    }
    Ok(())
}

/// Send the message to the endpoint again.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/msg/{msg}/endpoint/{endpoint}/resend",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.resend",
    params(ResendPath),
    responses((status = 202, body = Object, description = "Queued (an empty object)"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "message.resent"})))
)]
pub(crate) async fn resend(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path((app, msg, endpoint)): Path<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let app = resolve(&state, &app).await?;
    let message = message_id(&state, app, &msg).await?;
    let endpoint = endpoint_id(&state, app, &endpoint).await?;
    crate::operations::Operations::new(&state, caller)
        .resend(app, message, endpoint)
        .await?;
    // Svix answers `{}` (its SDKs parse the body as an empty object).
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}
