//! Who is asking, and what they may reach. Every API request presents a
//! bearer token: the admin token (all apps) or an app-scoped token (API or
//! portal). Each route has one access rule; an app-scoped token that names
//! another app gets 404, exactly as if it did not exist. Changes that pass
//! are written to the audit log.

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use herald_domain::ids::IdOrUid;
use herald_domain::{token, AppId, AuditId, TokenId};
use herald_store::AuditEntry;

use crate::error::{ApiError, ApiResult};
use crate::middleware::now_ms;
use crate::AppState;

/// The holder of the presented token, put into each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    App {
        app: AppId,
        token: TokenId,
        /// A `readOnly` portal token: every write is refused (403).
        read_only: bool,
    },
}

impl Principal {
    /// How the audit log and idempotency scopes name the holder.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::App { token, .. } => token.to_string(),
        }
    }

    /// Whether the holder may only read.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            Self::App {
                read_only: true,
                ..
            }
        )
    }

    /// The one app the holder may reach, if scoped.
    pub fn app(&self) -> Option<AppId> {
        match self {
            Self::Admin => None,
            Self::App { app, .. } => Some(*app),
        }
    }

    /// 404 unless the holder may see `app`'s data.
    pub fn check(&self, app: AppId) -> ApiResult<()> {
        match self.app() {
            Some(own) if own != app => Err(ApiError::NotFound),
            _ => Ok(()),
        }
    }
}

/// Finds the principal of the bearer token, or answers 401.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(presented) = presented else {
        return ApiError::Unauthorized.into_response();
    };
    let principal = match principal_of(&state, presented).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(error) => return error.into_response(),
    };
    if let (Principal::App { token, .. }, Some(limiter)) = (principal, &state.rate_limiter) {
        if let Err(wait) = limiter.take(token, std::time::Instant::now()) {
            return ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
            .into_response();
        }
    }
    // A read-only token reads: every other method is a write (or, like a
    // URL check or a test event, has effects outside Herald).
    if principal.read_only() && !matches!(*request.method(), Method::GET | Method::HEAD) {
        return ApiError::ReadOnly.into_response();
    }
    // Held until the answer is ready: one app cannot take more than its
    // share of the slots, and the admin token keeps a reserve.
    let _slot = match state.request_slots.take(principal.app()) {
        Ok(slot) => slot,
        Err(crate::limits::NoSlot::AppShare) => return ApiError::AppBusy.into_response(),
        Err(crate::limits::NoSlot::Full) => return ApiError::Overloaded.into_response(),
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The holder of `presented`, if it is a valid token.
pub(crate) async fn principal_of(
    state: &AppState,
    presented: &str,
) -> ApiResult<Option<Principal>> {
    let hash = token::hash(presented);
    if bool::from(hash.ct_eq(&state.config.admin_token_hash)) {
        return Ok(Some(Principal::Admin));
    }
    // Looked up by hash: the token itself is never stored, and an equal
    // hash is only found by holding the token.
    Ok(match state.store.token_by_hash(hash).await? {
        Some(token) if token.is_valid_at(now_ms()) => Some(Principal::App {
            app: token.app_id,
            token: token.id,
            read_only: token.kind.read_only(),
        }),
        _ => None,
    })
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Only the admin token.
    Admin,
    /// The admin, or a token of the app named in the path.
    Tenant,
    /// Any valid token (the handler narrows what it shows).
    Anyone,
}

/// The access rule of a matched route (path relative to `/api/v1`).
fn access(path: &str, method: &Method) -> Access {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    if path.starts_with("/auth/") || path.starts_with("/app/{app}/token") || path == "/audit" {
        return Access::Admin;
    }
    if path.starts_with("/app/{app}") {
        return Access::Tenant;
    }
    if path.starts_with("/event-type") && method == Method::GET {
        return Access::Anyone; // the catalog is global and read by portals
    }
    if path == "/egress" {
        return Access::Anyone; // receivers' allowlists, shown in portals
    }
    if path.starts_with("/background-task/") {
        return Access::Anyone; // the handler checks the task's app
    }
    Access::Admin
}

/// Applies the route's access rule, then records successful changes in the
/// audit log.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    matched: MatchedPath,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let Some(principal) = request.extensions().get::<Principal>().copied() else {
        return ApiError::Unauthorized.into_response();
    };
    let method = request.method().clone();
    let path = matched.as_str().to_owned();
    let app_segment = params
        .iter()
        .find(|(name, _)| *name == "app")
        .map(|(_, value)| value.to_owned());
    match access(&path, &method) {
        Access::Admin if principal != Principal::Admin => {
            return ApiError::Forbidden.into_response()
        }
        Access::Tenant => {
            if let (Some(own), Some(segment)) = (principal.app(), app_segment.as_deref()) {
                match path_app(&state, segment).await {
                    Ok(app) if app == own => {}
                    Ok(_) | Err(ApiError::NotFound) => return ApiError::NotFound.into_response(),
                    Err(error) => return error.into_response(),
                }
            }
        }
        _ => {}
    }
    let Some(action) = audited_action(&path, &method) else {
        return next.run(request).await;
    };
    let resource = params
        .iter()
        .filter(|(name, _)| *name != "app")
        .last()
        .map(|(_, value)| value.to_owned());
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return ApiError::Internal("reading a response to audit".into()).into_response();
    };
    let created: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let created_id = created
        .as_ref()
        .and_then(|c| c.get("id").or_else(|| c.get("name")))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let app = match app_segment.as_deref() {
        Some(segment) => path_app(&state, segment).await.ok(),
        // Creating an app: the new app's id.
        None if action == "app.created" => {
            created_id.as_deref().and_then(|id| AppId::parse(id).ok())
        }
        None => None,
    };
    let entry = AuditEntry {
        id: AuditId::generate(),
        actor: principal.actor(),
        app_id: app,
        action: action.to_owned(),
        target: resource
            .or(created_id)
            .or_else(|| app.map(|a| a.to_string()))
            .unwrap_or_default(),
        detail: None,
        created_at: now_ms(),
    };
    if let Err(error) = state.store.record_audit(entry).await {
        tracing::error!(%error, action, "recording an audit entry failed");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The app a path segment names (an id needs no read).
async fn path_app(state: &AppState, segment: &str) -> ApiResult<AppId> {
    match IdOrUid::<AppId>::parse(segment).map_err(|_| ApiError::NotFound)? {
        IdOrUid::Id(id) => Ok(id),
        reference => Ok(state.store.get_app(&reference).await?.id),
    }
}

/// The audit action of a change made only through the API (apps, event
/// types, tokens, portal access). The changes the portal also offers —
/// endpoints, their secrets and headers, recoveries, test events, resends,
/// alert rules — are audited by `operations`, whichever door they come
/// through. Messages are not (they are their own log).
fn audited_action(path: &str, method: &Method) -> Option<&'static str> {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let verb = match *method {
        Method::POST => "created",
        Method::PUT | Method::PATCH => "updated",
        Method::DELETE => "deleted",
        _ => return None,
    };
    Some(match (path, verb) {
        ("/app", "created") => "app.created",
        ("/app/{app}", "updated") => "app.updated",
        ("/app/{app}", "deleted") => "app.deleted",
        ("/event-type", "created") => "event_type.created",
        ("/event-type/{name}", "updated") => "event_type.updated",
        ("/event-type/{name}", "deleted") => "event_type.deleted",
        ("/app/{app}/token", "created") => "token.created",
        ("/app/{app}/token/{token}", "deleted") => "token.revoked",
        ("/auth/app-portal-access/{app}", _) => "portal_access.created",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_family_has_the_intended_rule() {
        let cases = [
            ("/api/v1/app", Method::GET, Access::Admin),
            ("/api/v1/app", Method::POST, Access::Admin),
            ("/api/v1/app/{app}", Method::GET, Access::Tenant),
            (
                "/api/v1/app/{app}/endpoint/{endpoint}/secret",
                Method::GET,
                Access::Tenant,
            ),
            ("/api/v1/app/{app}/token", Method::POST, Access::Admin),
            (
                "/api/v1/auth/app-portal-access/{app}",
                Method::POST,
                Access::Admin,
            ),
            ("/api/v1/event-type", Method::GET, Access::Anyone),
            ("/api/v1/event-type", Method::POST, Access::Admin),
            ("/api/v1/event-type/{name}", Method::DELETE, Access::Admin),
            (
                "/api/v1/background-task/{task}",
                Method::GET,
                Access::Anyone,
            ),
            ("/api/v1/audit", Method::GET, Access::Admin),
            ("/api/v1/egress", Method::GET, Access::Anyone),
            ("/api/v1/something-new", Method::GET, Access::Admin),
        ];
        for (path, method, expected) in cases {
            assert_eq!(access(path, &method), expected, "{method} {path}");
        }
    }
}
