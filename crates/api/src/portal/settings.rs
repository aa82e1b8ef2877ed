//! The app's settings pages: its alert rules (which failure notifications
//! it raises, for which event types, with which thresholds and extra
//! recipients) and the egress addresses receivers allowlist.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use herald_domain::alerts::OPERATIONAL_EVENTS;
use herald_domain::{AlertRules, AlertRulesSpec};

use super::endpoint_pages::open;
use super::{page, Refused};
use crate::error::ApiError;
use crate::AppState;

/// The alert form's fields as typed, for showing them again.
#[derive(Debug, Default, Clone)]
pub(super) struct AlertForm {
    pub events: Vec<String>,
    pub filter_types: String,
    pub failing_after: String,
    pub threshold_percent: String,
    pub min_attempts: String,
    pub email_to: String,
}

impl AlertForm {
    fn of(rules: &AlertRules) -> Self {
        let spec = rules.spec();
        Self {
            events: OPERATIONAL_EVENTS
                .iter()
                .filter(|e| rules.raises(e))
                .map(|e| (*e).to_owned())
                .collect(),
            filter_types: spec.filter_types.clone().unwrap_or_default().join(", "),
            failing_after: spec
                .failing_after
                .map(|n| n.to_string())
                .unwrap_or_default(),
            threshold_percent: spec
                .success_rate_threshold
                .map(|t| format!("{}", (t * 100.0 * 100.0).round() / 100.0))
                .unwrap_or_default(),
            min_attempts: spec
                .success_rate_min_attempts
                .map(|n| n.to_string())
                .unwrap_or_default(),
            email_to: spec.email_to.clone().unwrap_or_default().join(", "),
        }
    }

    /// The rules the form describes, or what is wrong, in the API's words.
    fn rules(&self) -> Result<AlertRules, String> {
        let list = |text: &str| -> Option<Vec<String>> {
            let items: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (!items.is_empty()).then_some(items)
        };
        let number = |field: &str, text: &str| -> Result<Option<u64>, String> {
            match text.trim() {
                "" => Ok(None),
                text => text
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{field}: a whole number, or empty for the server's")),
            }
        };
        let threshold = match self.threshold_percent.trim() {
            "" => None,
            text => Some(
                text.parse::<f64>()
                    .map_err(|_| "Success rate threshold: a percentage such as 90".to_owned())?
                    / 100.0,
            ),
        };
        let spec = AlertRulesSpec {
            events: (self.events.len() != OPERATIONAL_EVENTS.len()).then(|| self.events.clone()),
            filter_types: list(&self.filter_types),
            failing_after: number("Consecutive failures", &self.failing_after)?,
            success_rate_threshold: threshold,
            success_rate_min_attempts: number("Minimum attempts", &self.min_attempts)?,
            email_to: list(&self.email_to),
        };
        AlertRules::parse(spec).map_err(|e| format!("{}: {}", e.field, e.reason))
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SavedQuery {
    saved: Option<String>,
}

pub(super) async fn alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(query): Query<SavedQuery>,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let rules = state
        .store
        .alert_rules(vec![app.id])
        .await?
        .pop()
        .map(|(_, rules)| rules)
        .unwrap_or_default();
    Ok(page(
        &state,
        super::settings_pages::alerts(
            &session.csrf(),
            session.writable(),
            &app,
            &AlertForm::of(&rules),
            &defaults(&state),
            query
                .saved
                .is_some()
                .then_some("The alert rules are saved."),
            None,
        ),
    ))
}

/// The server's defaults, shown beside the fields that override them.
pub(super) struct Defaults {
    pub failing_after: u64,
    pub threshold_percent: Option<f64>,
    pub min_attempts: Option<u64>,
}

fn defaults(state: &AppState) -> Defaults {
    let alerts = &state.config.alerts;
    Defaults {
        failing_after: alerts.failing_after,
        threshold_percent: alerts.success_rate.map(|r| r.threshold * 100.0),
        min_attempts: alerts.success_rate.map(|r| r.min_attempts),
    }
}

pub(super) async fn save_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let fields = session.form(&body)?;
    let form = AlertForm {
        events: fields.all("events"),
        filter_types: fields.get("filter_types").unwrap_or_default().to_owned(),
        failing_after: fields.get("failing_after").unwrap_or_default().to_owned(),
        threshold_percent: fields.get("threshold").unwrap_or_default().to_owned(),
        min_attempts: fields.get("min_attempts").unwrap_or_default().to_owned(),
        email_to: fields.get("email_to").unwrap_or_default().to_owned(),
    };
    match form.rules() {
        Ok(rules) => {
            session
                .operations(&state)
                .set_alert_rules(app.id, Some(rules))
                .await?;
            Ok(Redirect::to(&format!("/portal/app/{}/alerts?saved=1", app.id)).into_response())
        }
        Err(error) => {
            let mut response = page(
                &state,
                super::settings_pages::alerts(
                    &session.csrf(),
                    session.writable(),
                    &app,
                    &form,
                    &defaults(&state),
                    None,
                    Some(&error),
                ),
            );
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
    }
}

pub(super) async fn egress(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    Ok(page(
        &state,
        super::settings_pages::egress(&session.csrf(), &app, &state.config.egress),
    ))
}

pub(super) async fn inspector(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let found = state.store.inspector(app.id).await?;
    let (out, requests) = match found {
        Some(found) => (
            Some(crate::inspector::inspector_out(&state, &found)),
            crate::inspector::describe(&state, &found, herald_store::INSPECTED_KEPT).await?,
        ),
        None => (None, Vec::new()),
    };
    Ok(page(
        &state,
        super::settings_pages::inspector(
            &session.csrf(),
            session.writable(),
            &app,
            out.as_ref(),
            &requests,
        ),
    ))
}

pub(super) async fn open_inspector(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    inspector_form(&state, &headers, &app, &body, false).await
}

pub(super) async fn close_inspector(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    inspector_form(&state, &headers, &app, &body, true).await
}

/// Opens (or with `close`, deletes) the inspector, then shows its page.
async fn inspector_form(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    body: &[u8],
    close: bool,
) -> Result<Response, Refused> {
    let (session, app) = open(state, headers, app).await?;
    session.form(body)?;
    let operations = session.operations(state);
    let done = if close {
        match operations.close_inspector(app.id).await {
            Err(ApiError::NotFound) => Ok(()),
            other => other,
        }
    } else {
        operations.open_inspector(app.id).await.map(|_| ())
    };
    done?;
    Ok(Redirect::to(&format!("/portal/app/{}/inspector", app.id)).into_response())
}
