//! `GET /egress/` (Herald's addition): the addresses Herald's deliveries
//! come from, for receivers to allowlist. Any valid token may read it.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::openapi::Errors;
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

/// What the operator published about outbound traffic.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// Addresses or ranges deliveries come from (`HERALD_EGRESS_ADDRESSES`).
    pub addresses: Vec<String>,
    /// Whether deliveries leave through a proxy.
    pub proxied: bool,
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(read))
}

/// The addresses deliveries come from (for receivers' allow-lists).
#[utoipa::path(
    get,
    path = "/api/v1/egress",
    tag = "Egress",
    operation_id = "v1.egress.get",
    responses((status = 200, body = Egress), Errors),
    extensions(("x-herald" = json!({"access": "anyone"})))
)]
pub(crate) async fn read(State(state): State<AppState>) -> Json<Egress> {
    Json(state.config.egress.clone())
}
