//! `/event-type/`: the global event catalog.

use crate::extract::{either, Path, Query, Unknown};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use herald_domain::EventTypeName;
use herald_store::{EventType, EventTypeInput};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{patch_field, timestamp, Body, ListParams, ListResponse};
use crate::openapi::{Errors, EventTypePath};
use crate::operations::Operations;
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, patch, remove))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventTypeIn {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[A-Za-z0-9_-]([A-Za-z0-9._-]*[A-Za-z0-9_-])?$"
    )]
    name: String,
    #[serde(flatten)]
    fields: EventTypeUpdate,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventTypeUpdate {
    description: String,
    schemas: Option<Value>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    deprecated: bool,
    feature_flag: Option<String>,
    /// Svix's newer form of `featureFlag`: Herald keeps one flag per event
    /// type, so a list of more than one is refused (422).
    feature_flags: Option<Vec<String>>,
    group_name: Option<String>,
    /// Herald's addition: refuse (422) a message whose payload does not
    /// validate against the newest of `schemas`.
    #[serde(default)]
    enforce_schema: bool,
    /// Fields Herald does not know, refused by name.
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: Unknown,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventTypePatch {
    description: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Value>)]
    schemas: Option<Option<Value>>,
    archived: Option<bool>,
    deprecated: Option<bool>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    feature_flag: Option<Option<String>>,
    /// Svix's newer form of `featureFlag` (one flag at most).
    feature_flags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    group_name: Option<Option<String>>,
    enforce_schema: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventTypeOut {
    name: String,
    description: String,
    archived: bool,
    deprecated: bool,
    schemas: Option<Value>,
    feature_flag: Option<String>,
    group_name: Option<String>,
    /// Herald's addition.
    enforce_schema: bool,
    created_at: String,
    updated_at: String,
}

impl EventTypeUpdate {
    fn into_input(self, name: EventTypeName) -> ApiResult<EventTypeInput> {
        self.unknown.refuse()?;
        check_schemas(&self.schemas)?;
        let feature_flag = either(
            ("featureFlag", self.feature_flag),
            ("featureFlags", one_flag(self.feature_flags)?),
        )?;
        if self.enforce_schema {
            crate::schemas::newest_validator(self.schemas.as_ref())
                .map_err(|why| ApiError::invalid("schemas", why))?
                .ok_or_else(|| {
                    ApiError::invalid("enforceSchema", "needs a schema in `schemas` to enforce")
                })?;
        }
        Ok(EventTypeInput {
            name,
            description: self.description,
            schemas: self.schemas,
            archived: self.archived,
            deprecated: self.deprecated,
            feature_flag,
            group_name: self.group_name,
            enforce_schema: self.enforce_schema,
        })
    }
}

impl EventTypeOut {
    fn new(event_type: EventType, with_content: bool) -> Self {
        Self {
            name: event_type.name.to_string(),
            description: event_type.description,
            archived: event_type.archived,
            deprecated: event_type.deprecated,
            schemas: event_type.schemas.filter(|_| with_content),
            feature_flag: event_type.feature_flag,
            group_name: event_type.group_name,
            enforce_schema: event_type.enforce_schema,
            created_at: timestamp(event_type.created_at),
            updated_at: timestamp(event_type.updated_at),
        }
    }
}

fn check_schemas(schemas: &Option<Value>) -> ApiResult<()> {
    match schemas {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "schemas",
            "must be an object mapping versions to JSON Schemas",
        )),
    }
}

fn parse_name(name: &str) -> ApiResult<EventTypeName> {
    EventTypeName::parse(name).map_err(|_| ApiError::NotFound)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListOptions {
    limit: Option<usize>,
    iterator: Option<String>,
    #[serde(default)]
    include_archived: bool,
    with_content: Option<bool>,
}

/// List event types.
#[utoipa::path(
    get,
    path = "/api/v1/event-type",
    tag = "Event Type",
    operation_id = "v1.event-type.list",
    params(ListOptions),
    responses((status = 200, body = ListResponse<EventTypeOut>), Errors),
    extensions(("x-herald" = json!({"access": "anyone"})))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(options): Query<ListOptions>,
) -> ApiResult<Json<ListResponse<EventTypeOut>>> {
    let page = state
        .store
        .list_event_types(
            ListParams {
                limit: options.limit,
                iterator: options.iterator.clone(),
            }
            .page::<herald_domain::EventTypeName>()?,
            options.include_archived,
        )
        .await?;
    let with_content = options.with_content.unwrap_or(true);
    Ok(Json(ListResponse::from_page(page, |t| {
        EventTypeOut::new(t, with_content)
    })))
}

/// Create an event type (or unarchive one).
#[utoipa::path(
    post,
    path = "/api/v1/event-type",
    tag = "Event Type",
    operation_id = "v1.event-type.create",
    request_body = EventTypeIn,
    responses((status = 201, body = EventTypeOut), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "event_type.created"})))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Body(input): Body<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    let name =
        EventTypeName::parse(&input.name).map_err(|e| ApiError::invalid("name", e.reason))?;
    let created = Operations::new(&state, caller)
        .create_event_type(input.fields.into_input(name)?)
        .await?;
    Ok((StatusCode::CREATED, Json(EventTypeOut::new(created, true))))
}

/// Get an event type.
#[utoipa::path(
    get,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.get",
    params(EventTypePath),
    responses((status = 200, body = EventTypeOut), Errors),
    extensions(("x-herald" = json!({"access": "anyone"})))
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeOut>> {
    let found = state.store.get_event_type(&parse_name(&name)?).await?;
    Ok(Json(EventTypeOut::new(found, true)))
}

/// Update (or create) an event type.
#[utoipa::path(
    put,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.update",
    params(EventTypePath),
    request_body = EventTypeUpdate,
    responses((status = 200, body = EventTypeOut), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "event_type.updated"})))
)]
pub(crate) async fn replace(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    Body(input): Body<EventTypeUpdate>,
) -> ApiResult<Json<EventTypeOut>> {
    let name = EventTypeName::parse(&name).map_err(|e| ApiError::invalid("name", e.reason))?;
    let updated = Operations::new(&state, caller)
        .update_event_type(input.into_input(name)?)
        .await?;
    Ok(Json(EventTypeOut::new(updated, true)))
}

/// Patch an event type.
#[utoipa::path(
    patch,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.patch",
    params(EventTypePath),
    request_body = EventTypePatch,
    responses((status = 200, body = EventTypeOut), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "event_type.updated"})))
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    Body(changes): Body<EventTypePatch>,
) -> ApiResult<Json<EventTypeOut>> {
    let current = state.store.get_event_type(&parse_name(&name)?).await?;
    let merged = EventTypeUpdate {
        description: changes.description.unwrap_or(current.description),
        schemas: changes.schemas.unwrap_or(current.schemas),
        archived: changes.archived.unwrap_or(current.archived),
        deprecated: changes.deprecated.unwrap_or(current.deprecated),
        feature_flag: either(
            ("featureFlag", changes.feature_flag),
            (
                "featureFlags",
                changes
                    .feature_flags
                    .map(|flags| one_flag(Some(flags)))
                    .transpose()?,
            ),
        )?
        .unwrap_or(current.feature_flag),
        feature_flags: None,
        group_name: changes.group_name.unwrap_or(current.group_name),
        enforce_schema: changes.enforce_schema.unwrap_or(current.enforce_schema),
        unknown: Unknown::default(),
    };
    let updated = Operations::new(&state, caller)
        .update_event_type(merged.into_input(current.name)?)
        .await?;
    Ok(Json(EventTypeOut::new(updated, true)))
}

/// A `featureFlags` list as Herald's single flag: none, or its one entry.
fn one_flag(flags: Option<Vec<String>>) -> ApiResult<Option<String>> {
    match flags.as_deref() {
        None | Some([]) => Ok(None),
        Some([flag]) => Ok(Some(flag.clone())),
        Some(_) => Err(ApiError::invalid(
            "featureFlags",
            "Herald keeps one feature flag per event type; send at most one",
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteOptions {
    #[serde(default)]
    expunge: bool,
}

/// Archive (or with `expunge`, delete) an event type.
#[utoipa::path(
    delete,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.delete",
    params(EventTypePath, DeleteOptions),
    responses((status = 204, description = "Archived or deleted"), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "event_type.deleted"})))
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    Query(options): Query<DeleteOptions>,
) -> ApiResult<StatusCode> {
    Operations::new(&state, caller)
        .delete_event_type(&parse_name(&name)?, options.expunge)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
