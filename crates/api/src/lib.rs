//! Herald's HTTP API: Svix-compatible routes under `/api/v1`, bearer-token
//! authentication and `Idempotency-Key` handling. Handlers parse input into
//! domain types and call the store and the dispatcher; they never write SQL.

mod alert_rules;
mod apps;
mod attempts;
mod auth;
mod egress;
mod endpoint_details;
mod endpoints;
mod error;
mod event_types;
mod export;
mod extract;
mod filters;
mod inspector;
mod limits;
mod listener;
mod messages;
mod middleware;
mod openapi;
mod operations;
mod portal;
mod recovery;
pub mod schemas;
mod test_events;
mod tokens;
mod url_check;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;
use utoipa_axum::{router::OpenApiRouter, routes};

use herald_dispatch::Dispatcher;
use herald_domain::AddressPolicy;
use herald_store::Store;

pub use egress::Egress;
pub use error::{ApiError, ApiResult};
pub use filters::FilterCache;
pub use limits::{listing_pages, RateLimiter, RequestSlots};
pub use listener::ConnectionLimits;
pub use middleware::hash_token;
pub use openapi::document as openapi_document;

/// What the API needs to know of the configuration.
#[derive(Clone)]
pub struct ApiConfig {
    /// SHA-256 of the admin token; the token itself is never kept.
    pub admin_token_hash: [u8; 32],
    pub policy: AddressPolicy,
    /// Largest request body accepted (default 1 MiB).
    pub body_limit: usize,
    /// How long a rotated-out secret keeps signing (default 24 h).
    pub rotation_grace: Duration,
    /// API requests handled at once; more are refused with 503 at once
    /// rather than queued, so an overload cannot grow memory without bound.
    pub max_concurrent_requests: usize,
    /// Of those, the most one app's requests may hold (more get 429).
    pub max_concurrent_requests_per_app: usize,
    /// How long `send-example?wait=true` waits for its attempt: the
    /// attempt timeout plus a margin.
    pub test_event_wait: Duration,
    /// The longest an attempt may wait for an answer: the bound of an
    /// endpoint's own `timeout`.
    pub request_timeout: Duration,
    /// Endpoints one app may have.
    pub max_endpoints_per_app: usize,
    /// The published egress addresses.
    pub egress: Egress,
    /// Where Herald is reached from outside (portal links).
    pub public_url: String,
    /// Who may embed the portal in a frame (CSP `frame-ancestors`).
    pub portal_frame_ancestors: String,
    /// How long a portal-access session lasts by default (1 h).
    pub portal_session: Duration,
    /// The server's alert defaults, which apps' rules override.
    pub alerts: herald_dispatch::AlertConfig,
    /// Per-endpoint series on `/metrics`.
    pub metrics_per_endpoint: bool,
    /// How long messages are kept (`None`: for ever): a message cannot be
    /// scheduled (`deliverAt`) further ahead than that.
    pub retention: Option<Duration>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("admin_token_hash", &"<redacted>")
            .field("policy", &self.policy)
            .field("body_limit", &self.body_limit)
            .field("rotation_grace", &self.rotation_grace)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("alerts", &self.alerts)
            .finish()
    }
}

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Present when this process also delivers (`--role all`): fresh messages
    /// are then leased to it and sent without waiting for a poll.
    pub dispatcher: Option<Arc<Dispatcher>>,
    pub config: Arc<ApiConfig>,
    /// Per app-scoped token; `None`: unlimited.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// The API's request slots, shared fairly between apps.
    pub request_slots: Arc<RequestSlots>,
    /// Message-listing pages in memory ([`limits::listing_pages`]).
    pub listing_pages: Arc<RequestSlots>,
    /// Apps' endpoint filters, run before messages reach the writer.
    pub filters: Arc<FilterCache>,
    /// Shared with the dispatcher; rendered at `/metrics`.
    pub metrics: Arc<herald_dispatch::Metrics>,
    /// Compiled event-type schemas, for enforcement.
    pub schemas: Arc<schemas::Schemas>,
}

/// The routes behind a bearer token: every one registered with its
/// handler's `#[utoipa::path]` (path, method, OpenAPI operation, and the
/// `x-herald` access and audit rules), so the router, the document
/// and the rules cannot disagree.
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .merge(apps::routes())
        .merge(event_types::routes())
        .merge(endpoints::routes())
        .merge(endpoint_details::routes())
        .merge(messages::routes())
        .merge(attempts::routes())
        .merge(export::routes())
        .merge(test_events::routes())
        .merge(recovery::routes())
        .merge(alert_rules::routes())
        .merge(tokens::routes())
        .merge(egress::routes())
        .merge(url_check::routes())
        .merge(inspector::routes())
}

/// The documented routes open to anyone.
pub(crate) fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(health))
}

/// The complete router (without path normalisation; see [`serve`]).
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let (open, _) = open_routes().split_for_parts();
    let api = api
        // Outermost first: who is asking, a replay of their earlier answer,
        // whether the route is theirs (and the audit of what they change).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::idempotency,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.config.body_limit));
    open.route("/api/v1/openapi.json", get(openapi::serve_document))
        .route("/docs", get(openapi::docs_page))
        .route("/docs/redoc.standalone.js", get(openapi::redoc_script))
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(portal::routes())
        .merge(inspector::receiving_routes(state.config.body_limit))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

/// Only the health route: what a worker-only process serves.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// Serves `router` on `listener` under the connection `limits` until
/// `shutdown` completes. Paths are accepted with or without a trailing
/// slash, as Svix's SDKs send both.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = NormalizePathLayer::trim_trailing_slash().layer(router);
    listener::serve(listener, app, limits, shutdown).await
}

/// `GET /metrics`: Prometheus text format, open like the health route (no
/// label names a tenant).
async fn metrics(State(state): State<AppState>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let snapshot = match state.metrics.recent_snapshot() {
        Some(snapshot) => snapshot,
        None => {
            let queue = state.store.queue_gauges(middleware::now_ms()).await?;
            let endpoints = if state.config.metrics_per_endpoint {
                Some(state.store.endpoint_gauges().await?.into())
            } else {
                None
            };
            let snapshot = herald_dispatch::StoreSnapshot { queue, endpoints };
            state.metrics.remember_snapshot(snapshot.clone());
            snapshot
        }
    };
    let body = state.metrics.render(
        snapshot.queue,
        state.store.pool_usage(),
        snapshot.endpoints.as_deref(),
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            herald_dispatch::Metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

/// Counts every answer by status class for `herald_http_requests_total`.
async fn count_responses(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    state.metrics.http_response(response.status().as_u16());
    response
}

/// Health: the database answers and takes writes. No token needed. A 503
/// names the failing part in its `code`: `database_unavailable` (cannot
/// reach or read it) or `database_writes_failing` (it refuses writes, as
/// on a full disk: accepted messages are safe, new ones are refused).
#[utoipa::path(get, path = "/api/v1/health", tag = "Health", operation_id = "v1.health.get", security(()),
    responses((status = 200, description = "Up: the database answers and takes writes", body = Object), (status = 503, description = "The database is unreachable (`database_unavailable`) or refuses writes (`database_writes_failing`)", body = openapi::ErrorOut)),
    extensions(("x-herald" = json!({"access": "public"})))
)]
async fn health(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    state.store.ping().await?;
    if let Err(error) = state.store.check_writes().await {
        return Err(ApiError::WritesFailing(error.to_string()));
    }
    Ok(Json(
        serde_json::json!({"status": "ok", "database": "ok", "writes": "ok"}),
    ))
}
