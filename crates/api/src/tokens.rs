//! App-scoped tokens (`/app/{app}/token/`), portal access links
//! (`/auth/app-portal-access/{app}/`) and the audit log (`/audit/`,
//! `/app/{app}/audit/`). A token is shown once, when it is made; the store
//! keeps its SHA-256 only.

use std::time::Duration;

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use herald_domain::token::ApiToken;
use herald_domain::{AppId, TokenId};
use herald_store::{AuditEntry, AuditQuery, Token, TokenInput, TokenKind};

use crate::apps::resolve;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{timestamp, Body, ListParams, ListResponse};
use crate::middleware::now_ms;
use crate::openapi::{AppPath, Errors, TokenPath};
use crate::operations::Operations;
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(portal_access))
        .routes(routes!(logout))
        .routes(routes!(expire_all))
        .routes(routes!(audit_all))
        .routes(routes!(audit_of_app))
}

/// Log out: the app-scoped token making the request (a portal session's,
/// or an API token) stops working at once. The admin token, which is
/// configuration, cannot log out (400).
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "Authentication",
    operation_id = "v1.authentication.logout",
    responses((status = 204, description = "The token no longer works"), Errors),
    extensions(("x-herald" = json!({"access": "anyone", "audit": "token.revoked"})))
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> ApiResult<StatusCode> {
    Operations::new(&state, caller).log_out().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Svix's `ApplicationTokenExpireIn`: what Herald takes of it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExpireAllIn {
    /// Seconds until the sessions end: Herald ends them at once, so only
    /// 0 (or none) is taken.
    expiry: Option<u64>,
    /// Not supported: Herald ends every session of the app (422 when
    /// given, even empty).
    session_ids: Option<Vec<String>>,
}

/// End every portal session of an app at once (its portal-access tokens);
/// its API tokens stay.
#[utoipa::path(
    post,
    path = "/api/v1/auth/app/{app}/expire-all",
    tag = "Authentication",
    operation_id = "v1.authentication.expire-all",
    params(AppPath),
    request_body = ExpireAllIn,
    responses((status = 204, description = "Every portal session of the app ended"), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "token.revoked"})))
)]
pub(crate) async fn expire_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let input: ExpireAllIn = crate::extract::optional_body(&body)?;
    if input.expiry.is_some_and(|seconds| seconds > 0) {
        return Err(ApiError::invalid(
            "expiry",
            "Herald ends the sessions at once; send 0 or leave it out",
        ));
    }
    if input.session_ids.is_some() {
        return Err(ApiError::invalid(
            "sessionIds",
            "Herald ends every session of the app; leave it out",
        ));
    }
    let app = resolve(&state, &app).await?;
    Operations::new(&state, caller)
        .end_portal_sessions(app)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest an API token may be made to last without "never".
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Portal sessions are short: at most a day.
const MAX_PORTAL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TokenIn {
    #[schema(min_length = 1, max_length = 256)]
    name: String,
    /// Seconds until the token stops working; absent: never.
    expires_in: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenOut {
    id: String,
    app_id: String,
    kind: &'static str,
    name: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    /// Only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<Token> for TokenOut {
    fn from(token: Token) -> Self {
        Self {
            id: token.id.to_string(),
            app_id: token.app_id.to_string(),
            kind: token.kind.as_str(),
            name: token.name,
            created_at: timestamp(token.created_at),
            expires_at: token.expires_at.map(timestamp),
            revoked_at: token.revoked_at.map(timestamp),
            token: None,
        }
    }
}

fn expiry(field: &'static str, seconds: u64, max: Duration) -> ApiResult<i64> {
    if seconds == 0 || seconds > max.as_secs() {
        return Err(ApiError::invalid(
            field,
            format!("must be 1 to {} seconds", max.as_secs()),
        ));
    }
    Ok(now_ms() + seconds as i64 * 1000)
}

/// Makes a token for `app` and returns it with its record.
pub(crate) async fn issue(
    state: &AppState,
    app: AppId,
    kind: TokenKind,
    name: String,
    expires_at: Option<i64>,
    audit: Option<AuditEntry>,
) -> ApiResult<(ApiToken, Token)> {
    let token = ApiToken::generate();
    let record = state
        .store
        .create_token(
            TokenInput {
                app_id: app,
                kind,
                name,
                hash: token.hash(),
                expires_at,
            },
            audit,
        )
        .await?;
    Ok((token, record))
}

/// Create an app-scoped API token (shown in this answer only).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/token",
    tag = "Token",
    operation_id = "v1.token.create",
    params(AppPath),
    request_body = TokenIn,
    responses((status = 201, body = TokenOut), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "token.created"})))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
    Body(input): Body<TokenIn>,
) -> ApiResult<(StatusCode, Json<TokenOut>)> {
    let app = resolve(&state, &app).await?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.len() > 256 {
        return Err(ApiError::invalid("name", "must be 1 to 256 characters"));
    }
    let expires_at = input
        .expires_in
        .map(|s| expiry("expiresIn", s, MAX_TOKEN_LIFETIME))
        .transpose()?;
    let (token, record) = Operations::new(&state, caller)
        .issue_token(app, TokenKind::Api, name, expires_at)
        .await?;
    let mut out = TokenOut::from(record);
    out.token = Some(token.reveal().to_owned());
    Ok((StatusCode::CREATED, Json(out)))
}

/// List the app's tokens (never the tokens themselves).
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/token",
    tag = "Token",
    operation_id = "v1.token.list",
    params(AppPath, ListParams),
    responses((status = 200, body = ListResponse<TokenOut>), Errors),
    extensions(("x-herald" = json!({"access": "admin"})))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListResponse<TokenOut>>> {
    let app = resolve(&state, &app).await?;
    let page = state
        .store
        .list_tokens(app, params.page::<herald_domain::TokenId>()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, TokenOut::from)))
}

/// Revoke a token.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app}/token/{token}",
    tag = "Token",
    operation_id = "v1.token.revoke",
    params(TokenPath),
    responses((status = 204, description = "Revoked"), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "token.revoked"})))
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((app, token)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let app = resolve(&state, &app).await?;
    let token = TokenId::parse(&token).map_err(|_| ApiError::NotFound)?;
    // Scoped to the app: another app's token id is "not found".
    Operations::new(&state, caller)
        .revoke_token(app, token)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Svix's `AppPortalAccessIn`, the fields Herald uses (others are refused
/// with 422: `application`, `capabilities`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct PortalAccessIn {
    /// Seconds the session lasts (default: the server's, 1 h).
    expiry: Option<u64>,
    session_id: Option<String>,
    /// Not supported: a non-empty list is refused (422) rather than ignored.
    feature_flags: Option<Vec<String>>,
    /// `true`: a token (and portal session) with which every write, through
    /// the API or the portal, is refused with 403.
    read_only: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PortalAccessOut {
    url: String,
    token: String,
}

/// A portal link and token for the app.
#[utoipa::path(
    post,
    path = "/api/v1/auth/app-portal-access/{app}",
    tag = "Authentication",
    operation_id = "v1.authentication.app-portal-access",
    params(AppPath),
    request_body = PortalAccessIn,
    responses((status = 200, body = PortalAccessOut), Errors),
    extensions(("x-herald" = json!({"access": "admin", "audit": "portal_access.created"})))
)]
pub(crate) async fn portal_access(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<PortalAccessOut>> {
    let app = resolve(&state, &app).await?;
    // The SDKs send `{}`; curl users may send nothing.
    let input: PortalAccessIn = crate::extract::optional_body(&body)?;
    let seconds = input
        .expiry
        .unwrap_or(state.config.portal_session.as_secs());
    let expires_at = expiry("expiry", seconds, MAX_PORTAL_LIFETIME)?;
    let name = format!(
        "portal session{}",
        input
            .session_id
            .map(|s| format!(" {}", s.chars().take(64).collect::<String>()))
            .unwrap_or_default()
    );
    if input
        .feature_flags
        .as_ref()
        .is_some_and(|flags| !flags.is_empty())
    {
        return Err(ApiError::invalid(
            "featureFlags",
            "feature flags are not supported by Herald's portal; send none",
        ));
    }
    let kind = if input.read_only == Some(true) {
        TokenKind::PortalReadOnly
    } else {
        TokenKind::Portal
    };
    let (token, _) = Operations::new(&state, caller)
        .issue_token(app, kind, name, Some(expires_at))
        .await?;
    let url = format!(
        "{}/portal/#token={}",
        state.config.public_url.trim_end_matches('/'),
        token.reveal()
    );
    Ok(Json(PortalAccessOut {
        url,
        token: token.reveal().to_owned(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditOut {
    id: String,
    /// `admin`, or the id of the token used.
    actor: String,
    app_id: Option<String>,
    action: String,
    target: String,
    created_at: String,
}

impl From<AuditEntry> for AuditOut {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id.to_string(),
            actor: entry.actor,
            app_id: entry.app_id.map(|a| a.to_string()),
            action: entry.action,
            target: entry.target,
            created_at: timestamp(entry.created_at),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    limit: Option<usize>,
    iterator: Option<String>,
    app_id: Option<String>,
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "Audit",
    operation_id = "v1.audit.list",
    params(AuditParams),
    responses((status = 200, body = ListResponse<AuditOut>), Errors),
    extensions(("x-herald" = json!({"access": "admin"})))
)]
pub(crate) async fn audit_all(
    State(state): State<AppState>,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<ListResponse<AuditOut>>> {
    let app = match params.app_id.as_deref() {
        Some(segment) => Some(resolve(&state, segment).await?),
        None => None,
    };
    audit(&state, app, params).await
}

/// The app's audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/audit",
    tag = "Audit",
    operation_id = "v1.audit.list-by-app",
    params(AppPath, AuditParams),
    responses((status = 200, body = ListResponse<AuditOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn audit_of_app(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<ListResponse<AuditOut>>> {
    let app = resolve(&state, &app).await?;
    audit(&state, Some(app), params).await
}

pub(crate) async fn audit(
    state: &AppState,
    app: Option<AppId>,
    params: AuditParams,
) -> ApiResult<Json<ListResponse<AuditOut>>> {
    let page = ListParams {
        limit: params.limit,
        iterator: params.iterator,
    }
    .page::<herald_domain::AuditId>()?;
    let entries = state.store.list_audit(AuditQuery { app, page }).await?;
    Ok(Json(ListResponse::from_page(entries, AuditOut::from)))
}
