//! `POST /app/{app}/endpoint/{ep}/send-example/`: a test event — the
//! catalog example of an event type, sent to one endpoint only (whatever it
//! subscribes to) as a single manual attempt without retries. It is an
//! ordinary message otherwise: stored, signed, logged. With `?wait=true`
//! the call returns once that attempt is recorded, with its outcome, for a
//! "send a test event and see what the receiver said" button.

use std::time::{Duration, Instant};

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use herald_domain::ids::IdOrUid;
use herald_domain::{EndpointId, EventTypeName, MessageId};
use herald_store::{
    Attempt, AttemptFilter, AttemptQuery, Cursor, EventType, MessageInput, PageRequest, StoreError,
};

use crate::apps::resolve;
use crate::attempts::MessageAttemptOut;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::messages::MessageOut;
use crate::openapi::{EndpointPath, Errors};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(send_example))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventExampleIn {
    event_type: String,
    #[serde(default)]
    example_index: usize,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitOption {
    #[serde(default)]
    wait: bool,
}

/// The answer of `?wait=true`: the message, and the attempt once it is
/// recorded (`null` if it was not within the wait).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TestEventOut {
    message: MessageOut,
    attempt: Option<MessageAttemptOut>,
}

/// Send an example event to this endpoint only; with `wait=true`, answer with its first attempt.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/send-example",
    tag = "Endpoint",
    operation_id = "v1.endpoint.send-example",
    params(EndpointPath, WaitOption),
    request_body = EventExampleIn,
    responses((status = 202, body = MessageOut), (status = 200, body = TestEventOut, description = "`wait=true`: the message and its first attempt"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.test_event_sent"})))
)]
pub(crate) async fn send_example(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Query(options): Query<WaitOption>,
    Body(input): Body<EventExampleIn>,
) -> ApiResult<Response> {
    let app = resolve(&state, &app).await?;
    let reference = IdOrUid::<EndpointId>::parse(&endpoint).map_err(|_| ApiError::NotFound)?;
    let endpoint = state.store.get_endpoint(app, &reference).await?;
    let message = crate::operations::Operations::new(&state, caller)
        .send_test_event(&endpoint, &input.event_type, input.example_index)
        .await?;
    let out = MessageOut::new(&message, true);
    if !options.wait {
        return Ok((StatusCode::ACCEPTED, Json(out)).into_response());
    }
    let attempt = first_attempt(&state, app, message.id).await?;
    Ok(Json(TestEventOut {
        message: out,
        attempt: attempt.map(MessageAttemptOut::from),
    })
    .into_response())
}

/// The message of a test event: example `index` of `event_type`, for
/// `endpoint` only (sent by `Operations::send_test_event`).
pub(crate) async fn message_of(
    state: &AppState,
    endpoint: &herald_store::Endpoint,
    event_type: &str,
    index: usize,
) -> ApiResult<MessageInput> {
    if endpoint.disabled {
        return Err(ApiError::invalid(
            "endpoint",
            "is disabled; enable it before sending test events",
        ));
    }
    let name = EventTypeName::parse(event_type)?;
    let event_type = match state.store.get_event_type(&name).await {
        Err(StoreError::NotFound) => {
            return Err(ApiError::invalid(
                "eventType",
                format!("unknown event type `{name}`"),
            ))
        }
        other => other?,
    };
    let payload = example(&event_type, index)?;
    Ok(MessageInput {
        event_type: name,
        event_id: None,
        payload: payload.to_string(),
        channels: None,
        to_endpoint: Some(endpoint.id),
        filters: Default::default(),
        deliver_at: None,
    })
}

/// Example `index` of the newest schema version of `event_type`; `{}` for a
/// type that has no examples at all.
pub(crate) fn example(event_type: &EventType, index: usize) -> ApiResult<Value> {
    let examples = crate::schemas::newest(event_type.schemas.as_ref())
        .and_then(|schema| schema.get("examples"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match examples.get(index) {
        Some(example) if example.is_object() => Ok(example.clone()),
        Some(_) => Err(ApiError::invalid(
            "exampleIndex",
            "that example is not a JSON object",
        )),
        None if examples.is_empty() && index == 0 => Ok(Value::Object(Default::default())),
        None => Err(ApiError::invalid(
            "exampleIndex",
            format!("`{}` has {} example(s)", event_type.name, examples.len()),
        )),
    }
}

/// Waits for the one attempt of a test event, reading the log: this works
/// whichever process sends it. Bounded by the attempt timeout plus a margin.
pub(crate) async fn first_attempt(
    state: &AppState,
    app: herald_domain::AppId,
    message: MessageId,
) -> ApiResult<Option<Attempt>> {
    let deadline = Instant::now() + state.config.test_event_wait;
    let mut pause = Duration::from_millis(10);
    loop {
        let page = state
            .store
            .list_attempts(
                app,
                AttemptQuery::new(
                    AttemptFilter::Message(message),
                    PageRequest {
                        limit: 1,
                        cursor: Cursor::Start,
                    },
                ),
            )
            .await?;
        if let Some(attempt) = page.data.into_iter().next() {
            return Ok(Some(attempt));
        }
        if Instant::now() + pause > deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
