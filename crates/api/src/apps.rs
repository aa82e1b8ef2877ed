//! `/app/`: applications (tenants).

use crate::extract::{either, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::AppId;
use herald_store::{App, AppInput, Metadata, StoreError};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{patch_field, timestamp, Body, ListParams, ListResponse};
use crate::openapi::{AppPath, Errors};
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
pub(crate) struct ApplicationIn {
    #[schema(min_length = 1, max_length = 256, pattern = "\\S")]
    name: String,
    /// Your own id for the app, usable wherever its id is.
    #[schema(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9._-]+$")]
    uid: Option<String>,
    rate_limit: Option<u32>,
    /// Svix's SDK 2 name for `rateLimit` (422 when both are sent and differ).
    throttle_rate: Option<u32>,
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ApplicationPatch {
    name: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    uid: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    rate_limit: Option<Option<u32>>,
    /// Svix's SDK 2 name for `rateLimit`.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<u32>)]
    throttle_rate: Option<Option<u32>>,
    metadata: Option<Metadata>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApplicationOut {
    id: String,
    uid: Option<String>,
    name: String,
    rate_limit: Option<u32>,
    /// The same as `rateLimit`, under Svix's SDK 2 name.
    throttle_rate: Option<u32>,
    metadata: Metadata,
    created_at: String,
    updated_at: String,
}

impl From<App> for ApplicationOut {
    fn from(app: App) -> Self {
        Self {
            id: app.id.to_string(),
            uid: app.uid.map(|u| u.to_string()),
            name: app.name,
            rate_limit: app.rate_limit,
            throttle_rate: app.rate_limit,
            metadata: app.metadata,
            created_at: timestamp(app.created_at),
            updated_at: timestamp(app.updated_at),
        }
    }
}

impl ApplicationIn {
    fn parse(self) -> ApiResult<AppInput> {
        Ok(AppInput {
            uid: parse_uid(self.uid.as_deref())?,
            name: parse_name(self.name)?,
            rate_limit: either(
                ("rateLimit", self.rate_limit),
                ("throttleRate", self.throttle_rate),
            )?,
            metadata: self.metadata.unwrap_or_default(),
        })
    }
}

fn parse_uid(uid: Option<&str>) -> ApiResult<Option<Uid>> {
    uid.map(|u| {
        // A uid that looks like an id would make `/app/{app}` ambiguous.
        if AppId::parse(u).is_ok() {
            return Err(ApiError::invalid(
                "uid",
                "must not have the form of an app id",
            ));
        }
        Uid::parse("uid", u).map_err(ApiError::from)
    })
    .transpose()
}

fn parse_name(name: String) -> ApiResult<String> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.len() > 256 {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 256 characters long",
        ));
    }
    Ok(name)
}

/// Resolves an `{app}` path segment (id or uid) to an existing app's id.
pub(crate) async fn resolve(state: &AppState, segment: &str) -> ApiResult<AppId> {
    let reference = IdOrUid::<AppId>::parse(segment).map_err(|_| ApiError::NotFound)?;
    Ok(state.store.get_app(&reference).await?.id)
}

/// List apps.
#[utoipa::path(get, path = "/api/v1/app", tag = "Application", operation_id = "v1.application.list", params(ListParams),
    responses((status = 200, body = ListResponse<ApplicationOut>), Errors),
    extensions(("x-herald" = json!({"access": "admin"})))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListResponse<ApplicationOut>>> {
    let page = state
        .store
        .list_apps(params.page::<herald_domain::AppId>()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, ApplicationOut::from)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CreateParams {
    /// With a `uid` that exists: answer that app (200) instead of a conflict.
    #[serde(default)]
    get_if_exists: bool,
}

/// Create an app.
#[utoipa::path(post, path = "/api/v1/app", tag = "Application", operation_id = "v1.application.create", params(CreateParams),
    request_body = ApplicationIn,
    responses((status = 201, body = ApplicationOut), (status = 200, body = ApplicationOut, description = "`get_if_exists`: the existing app"), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "app.created"})))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Query(params): Query<CreateParams>,
    Extension(caller): Extension<Principal>,
    Body(input): Body<ApplicationIn>,
) -> ApiResult<(StatusCode, Json<ApplicationOut>)> {
    let input = input.parse()?;
    if params.get_if_exists {
        if let Some(uid) = &input.uid {
            match state.store.get_app(&IdOrUid::Uid(uid.clone())).await {
                Ok(app) => return Ok((StatusCode::OK, Json(app.into()))),
                Err(StoreError::NotFound) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    let app = Operations::new(&state, caller).create_app(input).await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

/// Get an app.
#[utoipa::path(get, path = "/api/v1/app/{app}", tag = "Application", operation_id = "v1.application.get", params(AppPath),
    responses((status = 200, body = ApplicationOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<ApplicationOut>> {
    let reference = IdOrUid::<AppId>::parse(&app).map_err(|_| ApiError::NotFound)?;
    Ok(Json(state.store.get_app(&reference).await?.into()))
}

/// Update an app.
#[utoipa::path(put, path = "/api/v1/app/{app}", tag = "Application", operation_id = "v1.application.update", params(AppPath),
    request_body = ApplicationIn, responses((status = 200, body = ApplicationOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "app.updated"})))
)]
pub(crate) async fn replace(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
    Body(input): Body<ApplicationIn>,
) -> ApiResult<Json<ApplicationOut>> {
    let id = resolve(&state, &app).await?;
    let app = Operations::new(&state, caller)
        .update_app(id, input.parse()?)
        .await?;
    Ok(Json(app.into()))
}

/// Patch an app.
#[utoipa::path(patch, path = "/api/v1/app/{app}", tag = "Application", operation_id = "v1.application.patch", params(AppPath),
    request_body = ApplicationPatch, responses((status = 200, body = ApplicationOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "app.updated"})))
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
    Body(mut changes): Body<ApplicationPatch>,
) -> ApiResult<Json<ApplicationOut>> {
    changes.rate_limit = either(
        ("rateLimit", changes.rate_limit.take()),
        ("throttleRate", changes.throttle_rate.take()),
    )?;
    let reference = IdOrUid::<AppId>::parse(&app).map_err(|_| ApiError::NotFound)?;
    let current = state.store.get_app(&reference).await?;
    let input = AppInput {
        uid: match changes.uid {
            Some(uid) => parse_uid(uid.as_deref())?,
            None => current.uid,
        },
        name: match changes.name {
            Some(name) => parse_name(name)?,
            None => current.name,
        },
        rate_limit: changes.rate_limit.unwrap_or(current.rate_limit),
        metadata: changes.metadata.unwrap_or(current.metadata),
    };
    Ok(Json(
        Operations::new(&state, caller)
            .update_app(current.id, input)
            .await?
            .into(),
    ))
}

/// Delete an app, its endpoints, messages and attempts.
#[utoipa::path(delete, path = "/api/v1/app/{app}", tag = "Application", operation_id = "v1.application.delete", params(AppPath),
    responses((status = 204, description = "Deleted"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "app.deleted"})))
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let reference = IdOrUid::<AppId>::parse(&app).map_err(|_| ApiError::NotFound)?;
    let found = state.store.get_app(&reference).await?;
    // Herald raises its operational events there; without it they would
    // fail until the next start re-creates it.
    if found.uid.as_ref().map(|u| u.as_str()) == Some(herald_domain::catalog::OPERATIONS_APP_UID) {
        return Err(ApiError::Conflict {
            detail: format!(
                "`{}` is built in: Herald's failure notifications go there (remove its endpoints instead)",
                herald_domain::catalog::OPERATIONS_APP_UID
            ),
        });
    }
    Operations::new(&state, caller).delete_app(found.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
