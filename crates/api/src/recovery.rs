//! Bulk recovery (`POST /app/{app}/endpoint/{ep}/recover/`) and the
//! background tasks that carry it out (`GET /background-task/{task}/`).
//! Recovery re-sends every failed delivery of an endpoint whose message
//! was created in a window, as one manual attempt each; it runs in the
//! background in short steps, and its progress can be read.

use crate::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use herald_domain::ids::IdOrUid;
use herald_domain::{EndpointId, TaskId};
use herald_store::{AuditEntry, BackgroundTask, Recovery};

use crate::apps::resolve;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_time, timestamp, Body};
use crate::middleware::now_ms;
use crate::openapi::{EndpointPath, Errors, TaskPath};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(recover))
        .routes(routes!(read_task))
        .routes(routes!(list_tasks))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RecoverIn {
    since: String,
    until: Option<String>,
}

/// Svix's `RecoverOut` (and `BackgroundTaskOut` with `data`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskOut {
    id: String,
    status: &'static str,
    task: &'static str,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<TaskData>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskData {
    app_id: String,
    endpoint_id: String,
    since: String,
    until: Option<String>,
    /// Failed deliveries queued again so far.
    recovered: u64,
    created_at: String,
    updated_at: String,
}

impl TaskOut {
    fn new(task: &BackgroundTask, with_data: bool) -> Self {
        Self {
            id: task.id.to_string(),
            status: task.status.as_str(),
            task: BackgroundTask::RECOVER,
            updated_at: timestamp(task.updated_at),
            data: with_data.then(|| TaskData {
                app_id: task.app_id.to_string(),
                endpoint_id: task.recovery.endpoint_id.to_string(),
                since: timestamp(task.recovery.since),
                until: task.recovery.until.map(timestamp),
                recovered: task.done,
                created_at: timestamp(task.created_at),
                updated_at: timestamp(task.updated_at),
            }),
        }
    }
}

/// Resend the endpoint's failed (and missed) messages since a time.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/endpoint/{endpoint}/recover",
    tag = "Endpoint",
    operation_id = "v1.endpoint.recover",
    params(EndpointPath),
    request_body = RecoverIn,
    responses((status = 202, body = TaskOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "endpoint.recovery_started"})))
)]
pub(crate) async fn recover(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, endpoint)): Path<(String, String)>,
    Body(input): Body<RecoverIn>,
) -> ApiResult<(StatusCode, Json<TaskOut>)> {
    let app = resolve(&state, &app).await?;
    let reference = IdOrUid::<EndpointId>::parse(&endpoint).map_err(|_| ApiError::NotFound)?;
    let endpoint = state.store.get_endpoint(app, &reference).await?;
    let since = parse_time("since", &input.since)?;
    let until = input
        .until
        .as_deref()
        .map(|until| parse_time("until", until))
        .transpose()?;
    if until.is_some_and(|until| until <= since) {
        return Err(ApiError::invalid("until", "must be later than `since`"));
    }
    if since > now_ms() {
        return Err(ApiError::invalid("since", "is in the future"));
    }
    let task = crate::operations::Operations::new(&state, caller)
        .start_recovery(&endpoint, since, until)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(TaskOut::new(&task, false))))
}

/// Records a recovery of `endpoint` and runs it in this process (the API's
/// recover, the portal's).
pub(crate) async fn start(
    state: &AppState,
    app: herald_domain::AppId,
    endpoint: EndpointId,
    since: i64,
    until: Option<i64>,
    audit: Option<AuditEntry>,
) -> ApiResult<BackgroundTask> {
    let task = state
        .store
        .start_recovery(
            app,
            Recovery {
                endpoint_id: endpoint,
                since,
                until,
            },
            audit,
        )
        .await?;
    spawn(state, task.id);
    Ok(task)
}

/// Runs `task` in this process, waking the local dispatcher as work is queued.
fn spawn(state: &AppState, task: TaskId) {
    let dispatcher = state.dispatcher.clone();
    tokio::spawn(herald_dispatch::run_recovery(
        state.store.clone(),
        task,
        move || {
            if let Some(dispatcher) = &dispatcher {
                dispatcher.nudge();
            }
        },
    ));
}

/// The filters of a task listing (Svix's `BackgroundTaskListOptions`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskListParams {
    limit: Option<usize>,
    iterator: Option<String>,
    /// `running`, `finished` or `failed`.
    status: Option<String>,
    /// The kind: `endpoint.recover` is the only one Herald runs.
    task: Option<String>,
    /// `descending` (newest first) only: `ascending` is refused.
    order: Option<String>,
}

/// List background tasks (recoveries), newest first: an app-scoped token
/// sees its app's, the admin token every app's.
#[utoipa::path(
    get,
    path = "/api/v1/background-task",
    tag = "Background Task",
    operation_id = "v1.background-task.list",
    params(TaskListParams),
    responses((status = 200, body = crate::extract::ListResponse<TaskOut>), Errors),
    extensions(("x-herald" = json!({"access": "anyone"})))
)]
pub(crate) async fn list_tasks(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    crate::extract::Query(params): crate::extract::Query<TaskListParams>,
) -> ApiResult<Json<crate::extract::ListResponse<TaskOut>>> {
    crate::extract::refuse_given(
        "order",
        &params
            .order
            .as_deref()
            .filter(|order| *order != "descending"),
        "tasks are listed newest first (descending) only",
    )?;
    let status = params
        .status
        .as_deref()
        .map(|text| {
            herald_store::TaskStatus::parse(text)
                .ok_or_else(|| ApiError::invalid("status", "is running, finished or failed"))
        })
        .transpose()?;
    let page = crate::extract::ListParams {
        limit: params.limit,
        iterator: params.iterator,
    }
    .page::<TaskId>()?;
    let page = match params.task.as_deref() {
        None | Some(BackgroundTask::RECOVER) => {
            state
                .store
                .list_tasks(principal.app(), status, page)
                .await?
        }
        // A kind Herald does not run has no tasks.
        Some(_) => herald_store::Page {
            data: Vec::new(),
            iterator: None,
            prev_iterator: None,
            done: true,
        },
    };
    Ok(Json(crate::extract::ListResponse::from_page(
        page,
        |task| TaskOut::new(&task, true),
    )))
}

/// Get a background task (a recovery) and its progress.
#[utoipa::path(
    get,
    path = "/api/v1/background-task/{task}",
    tag = "Background Task",
    operation_id = "v1.background-task.get",
    params(TaskPath),
    responses((status = 200, body = TaskOut), Errors),
    extensions(("x-herald" = json!({"access": "anyone"})))
)]
pub(crate) async fn read_task(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(task): Path<String>,
) -> ApiResult<Json<TaskOut>> {
    let task = TaskId::parse(&task).map_err(|_| ApiError::NotFound)?;
    let task = state.store.get_task(task).await?;
    // Another app's task is "not found" to an app-scoped token.
    principal.check(task.app_id)?;
    Ok(Json(TaskOut::new(&task, true)))
}
