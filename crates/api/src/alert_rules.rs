//! An app's alert rules (Herald's addition, SPEC §5):
//! `GET|PUT|DELETE /app/{app}/alert-rules/`. They choose which operational
//! events the app's endpoints raise, narrow them to event types, override
//! the server's thresholds and add e-mail recipients.

use crate::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use herald_domain::alerts::OPERATIONAL_EVENTS;
use herald_domain::{AlertRules, AlertRulesSpec};

use crate::apps::resolve;
use crate::error::ApiResult;
use crate::extract::Body;
use crate::openapi::{AppPath, Errors};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(read, replace, reset))
}

/// The rules as set (absent fields follow the server) and as applied.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AlertRulesOut {
    rules: AlertRulesSpec,
    effective: Effective,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Effective {
    events: Vec<&'static str>,
    /// `null`: every event type.
    filter_types: Option<Vec<String>>,
    failing_after: u64,
    /// `null`: `endpoint.success_rate_dropped` is not raised.
    success_rate_threshold: Option<f64>,
    success_rate_min_attempts: Option<u64>,
    /// The app's own recipients (the server's are added when SMTP is set up).
    email_to: Vec<String>,
}

fn out(state: &AppState, rules: AlertRules) -> AlertRulesOut {
    let defaults = &state.config.alerts;
    let rate = herald_dispatch::effective_rate_rule(defaults, &rules);
    let spec = rules.spec().clone();
    AlertRulesOut {
        effective: Effective {
            events: OPERATIONAL_EVENTS
                .into_iter()
                .filter(|e| rules.raises(e))
                .collect(),
            filter_types: spec.filter_types.clone(),
            failing_after: spec.failing_after.unwrap_or(defaults.failing_after),
            success_rate_threshold: rate.map(|r| r.threshold),
            success_rate_min_attempts: rate.map(|r| r.min_attempts),
            email_to: rules.email_to().to_vec(),
        },
        rules: spec,
    }
}

/// Get the app's alert rules, as set and as applied.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/alert-rules",
    tag = "Alert Rules",
    operation_id = "v1.alert-rules.get",
    params(AppPath),
    responses((status = 200, body = AlertRulesOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AlertRulesOut>> {
    let app = resolve(&state, &app).await?;
    let rules = state
        .store
        .alert_rules(vec![app])
        .await?
        .pop()
        .map(|(_, rules)| rules)
        .unwrap_or_default();
    Ok(Json(out(&state, rules)))
}

/// Set the app's alert rules.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app}/alert-rules",
    tag = "Alert Rules",
    operation_id = "v1.alert-rules.update",
    params(AppPath),
    request_body = AlertRulesSpec,
    responses((status = 200, body = AlertRulesOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "alert_rules.updated"})))
)]
pub(crate) async fn replace(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(app): Path<String>,
    Body(spec): Body<AlertRulesSpec>,
) -> ApiResult<Json<AlertRulesOut>> {
    let app = resolve(&state, &app).await?;
    let rules = AlertRules::parse(spec)?;
    crate::operations::Operations::new(&state, caller)
        .set_alert_rules(app, Some(rules.clone()))
        .await?;
    Ok(Json(out(&state, rules)))
}

/// Back to the server's defaults.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app}/alert-rules",
    tag = "Alert Rules",
    operation_id = "v1.alert-rules.delete",
    params(AppPath),
    responses((status = 204, description = "Reset"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "alert_rules.reset"})))
)]
pub(crate) async fn reset(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let app = resolve(&state, &app).await?;
    crate::operations::Operations::new(&state, caller)
        .set_alert_rules(app, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
