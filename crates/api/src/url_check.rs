//! `POST /app/{app}/url-check/` (Herald's addition): before an endpoint is
//! saved, check its URL the way deliveries will use it — the server's URL
//! rules, the resolved addresses against the network policy, TLS, and what
//! one signed test POST gets back. Nothing is stored.

use crate::extract::Path;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use herald_domain::EndpointUrl;

use crate::apps::resolve;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::openapi::{AppPath, Errors};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(check))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CheckIn {
    #[schema(format = "uri", min_length = 1)]
    url: String,
}

/// What the check found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckOut {
    pub url: String,
    /// The receiver answered 2xx.
    pub ok: bool,
    /// 0 when no HTTP answer came.
    pub status_code: u16,
    pub response: String,
    pub duration_ms: u64,
    /// `forbidden_address`, `dns`, `tls`, `connect`, `timeout`, … when it failed.
    pub error_class: Option<&'static str>,
}

/// Runs the check; the URL must pass the server's rules first (422).
pub(crate) async fn run(
    state: &AppState,
    app: herald_domain::AppId,
    url: &str,
) -> ApiResult<CheckOut> {
    let url = EndpointUrl::parse(url, &state.config.policy)?;
    let Some(dispatcher) = &state.dispatcher else {
        // An API-only process has no delivery client to check with.
        return Err(ApiError::Unavailable);
    };
    let result = dispatcher.check_url(app, &url).await;
    Ok(CheckOut {
        url: url.to_string(),
        ok: result.succeeded(),
        status_code: result.status,
        response: result.body,
        duration_ms: result.duration.as_millis() as u64,
        error_class: result.error.map(|c| c.as_str()),
    })
}

/// Check a URL before saving an endpoint: rules, addresses, TLS and one signed test POST.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/url-check",
    tag = "Endpoint",
    operation_id = "v1.endpoint.url-check",
    params(AppPath),
    request_body = CheckIn,
    responses((status = 200, body = CheckOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "none"})))
)]
pub(crate) async fn check(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Body(input): Body<CheckIn>,
) -> ApiResult<Json<CheckOut>> {
    let app = resolve(&state, &app).await?;
    Ok(Json(run(&state, app, &input.url).await?))
}
