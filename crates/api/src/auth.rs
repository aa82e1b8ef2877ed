//! Who is asking, and what they may reach. Every API request presents a
//! bearer token: the admin token (all apps) or an app-scoped token (API or
//! portal). Each route has one access rule; an app-scoped token that names
//! another app gets 404, exactly as if it did not exist. Changes that pass
//! are written to the audit log.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use herald_domain::ids::IdOrUid;
use herald_domain::{token, AppId, TokenId};

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
    // (Logging out ends the session; it changes nothing of the app's.)
    if principal.read_only()
        && !matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path().trim_end_matches('/') != "/api/v1/auth/logout"
    {
        return ApiError::ReadOnly.into_response();
    }
    // Held until the answer is ready: one app cannot take more than its
    // share of the slots, and the admin token keeps a reserve.
    let _slot = match state.request_slots.take(principal.app()) {
        Ok(slot) => slot,
        Err(refused) => return ApiError::from(refused).into_response(),
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

impl Access {
    /// What a route declares in its `#[utoipa::path(extensions(…))]`, where
    /// it is registered, as `x-herald.access`: `admin`, `tenant`, `anyone`
    /// or `public`; anything else is admin-only. (Its other key, the audit
    /// action of a change, is recorded by [`crate::operations`]; the test
    /// below holds the two lists equal.)
    fn declared(access: Option<&str>) -> Self {
        match access {
            Some("tenant") => Self::Tenant,
            Some("anyone" | "public") => Self::Anyone,
            _ => Self::Admin,
        }
    }
}

/// Every route's access rule, by path as matched and then method (looked
/// up without allocating), read once from the document the router was
/// built with.
fn route_rules() -> &'static HashMap<String, HashMap<String, Access>> {
    static RULES: OnceLock<HashMap<String, HashMap<String, Access>>> = OnceLock::new();
    RULES.get_or_init(|| {
        let document = serde_json::to_value(crate::openapi::spec()).unwrap_or_default();
        let mut rules = HashMap::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let access = Access::declared(operation["x-herald"]["access"].as_str());
                rules
                    .entry(path.clone())
                    .or_insert_with(HashMap::new)
                    .insert(method.to_ascii_uppercase(), access);
            }
        }
        rules
    })
}

/// The declared access rule of a matched route, if it declares one.
fn route_rule(path: &str, method: &Method) -> Option<Access> {
    route_rules().get(path)?.get(method.as_str()).copied()
}

/// The access rule of a matched route; a route that declares none is
/// admin-only (and the router-walking test fails).
fn access(path: &str, method: &Method) -> Access {
    route_rule(path, method).unwrap_or(Access::Admin)
}

/// Applies the route's access rule. (Changes are audited by
/// [`crate::operations`], in the change's own transaction.)
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
    next.run(request).await
}

/// The app a path segment names (an id needs no read).
async fn path_app(state: &AppState, segment: &str) -> ApiResult<AppId> {
    match IdOrUid::<AppId>::parse(segment).map_err(|_| ApiError::NotFound)? {
        IdOrUid::Id(id) => Ok(id),
        reference => Ok(state.store.get_app(&reference).await?.id),
    }
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

    /// Walks what the router serves (its routes and their document are
    /// registered together by `routes!`): every operation says who may use
    /// it, and every change names its audit action (`none` on purpose).
    #[test]
    fn every_routed_operation_declares_its_access_rule_and_every_change_its_audit_action() {
        let (_, served) = crate::api_routes().split_for_parts();
        let served = serde_json::to_value(served).unwrap();
        let mut declared = std::collections::HashSet::new();
        let mut walked = 0;
        for (path, item) in served["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                walked += 1;
                let access = operation["x-herald"]["access"].as_str();
                assert!(
                    matches!(access, Some("admin" | "tenant" | "anyone")),
                    "{method} {path} declares no access rule ({access:?})"
                );
                if method != "get" {
                    let audit = operation["x-herald"]["audit"].as_str();
                    assert!(
                        audit.is_some_and(|a| a == "none" || a.contains('.')),
                        "{method} {path} changes something but declares no audit action"
                    );
                    declared.extend(audit.map(str::to_owned));
                }
                // The rule the middleware applies is the declared one.
                let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                let rule = route_rule(path, &verb)
                    .unwrap_or_else(|| panic!("{method} {path} has no rule"));
                assert_eq!(rule, Access::declared(access), "{method} {path}");
            }
        }
        assert!(walked > 0, "the router serves operations");
        declared.remove("none");
        for action in crate::operations::ACTIONS {
            assert!(
                declared.contains(*action),
                "operations record `{action}`, which no route declares"
            );
        }
        for action in &declared {
            assert!(
                crate::operations::ACTIONS.contains(&action.as_str()),
                "a route declares `{action}`, which no operation records"
            );
        }
    }
}
