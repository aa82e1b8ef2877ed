//! The portal's endpoint pages: creating an endpoint (URL checked by the
//! server's rules, event types chosen as all, by group or one by one) and
//! an endpoint's page (health, subscriptions, a test event and its result).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use herald_domain::ids::IdOrUid;
use herald_domain::{EndpointId, Secret};
use herald_store::{EventType, PageRequest};

use super::endpoint_form::{custom_headers, form_of, headers_text, input, retry_fields};
pub(super) use super::endpoint_form::{EndpointForm, Fields};
use super::{app_of, page, session, Refused, Session};
use crate::error::ApiError;
use crate::AppState;

async fn catalog(state: &AppState) -> Result<Vec<EventType>, Refused> {
    state
        .store
        .list_event_types(
            PageRequest {
                limit: 250,
                cursor: Default::default(),
            },
            false,
        )
        .await
        .map(|page| page.data)
        .map_err(Refused::from)
}

/// One of `app`'s endpoints, by id or uid; the portal's 404 page when it
/// is not there (or not this app's).
pub(super) async fn endpoint_of(
    state: &AppState,
    app: herald_domain::AppId,
    segment: &str,
) -> Result<herald_store::Endpoint, Refused> {
    let missing = || Refused::new(super::not_found(state));
    let reference = IdOrUid::<EndpointId>::parse(segment).map_err(|_| missing())?;
    match state.store.get_endpoint(app, &reference).await {
        Ok(endpoint) => Ok(endpoint),
        Err(herald_store::StoreError::NotFound) => Err(missing()),
        Err(error) => Err(ApiError::from(error).into()),
    }
}

pub(super) async fn open(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
) -> Result<(Session, herald_store::App), Refused> {
    let session = session(state, headers).await?;
    let app = app_of(state, &session, app).await?;
    Ok((session, app))
}

/// `?url=` fills the URL in (the test inspector's "add an endpoint
/// pointing here").
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct NewFormParams {
    url: Option<String>,
}

pub(super) async fn new_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    axum::extract::Query(params): axum::extract::Query<NewFormParams>,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    session.require_writable()?;
    let types = catalog(&state).await?;
    let form = EndpointForm {
        url: params.url.unwrap_or_default(),
        all_events: true,
        ..EndpointForm::default()
    };
    Ok(page(
        &state,
        super::pages::new_endpoint(&session.csrf(), &app, &types, &form, None),
    ))
}

pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let fields = session.form(&body)?;
    let form = form_of(&fields);
    let described = input(&state, &form, None)
        .and_then(|input| Ok((input, custom_headers(&form, &Default::default())?)));
    match described {
        Ok((input, custom)) => {
            let created = session
                .operations(&state)
                .create_endpoint(app.id, input, custom, Secret::generate())
                .await;
            match created {
                Ok(endpoint) => Ok(Redirect::to(&format!(
                    "/portal/app/{}/endpoint/{}",
                    app.id, endpoint.id
                ))
                .into_response()),
                // Refused as the API refuses it (the endpoint limit):
                // shown on the form.
                Err(ApiError::Invalid { field, detail }) => {
                    let types = catalog(&state).await?;
                    let form = EndpointForm {
                        error: Some(format!("{field}: {detail}")),
                        ..form
                    };
                    let mut response = page(
                        &state,
                        super::pages::new_endpoint(&session.csrf(), &app, &types, &form, None),
                    );
                    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                    Ok(response)
                }
                Err(error) => Err(error.into()),
            }
        }
        Err(error) => {
            let types = catalog(&state).await?;
            let form = EndpointForm {
                error: Some(error),
                ..form
            };
            let mut response = page(
                &state,
                super::pages::new_endpoint(&session.csrf(), &app, &types, &form, None),
            );
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
    }
}

/// What an endpoint's page shows besides the endpoint: a test event's
/// result, the secret once revealed, a notice after an action.
#[derive(Default)]
pub(super) struct Extras {
    pub result: Option<TestResult>,
    /// The secret and, for ed25519, its public key.
    pub secret: Option<(String, Option<String>)>,
    pub notice: Option<&'static str>,
}

/// The result of a test event, shown on the endpoint's page.
pub(super) struct TestResult {
    pub event_type: String,
    pub attempt: Option<herald_store::Attempt>,
    pub error: Option<String>,
}

pub(super) async fn detail_page(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: &str,
    extras: Extras,
) -> Result<Response, Refused> {
    let (session, app) = open(state, headers, app).await?;
    let endpoint = endpoint_of(state, app.id, endpoint).await?;
    let health = state
        .store
        .endpoint_health(app.id, endpoint.id, crate::middleware::now_ms())
        .await?;
    let types = catalog(state).await?;
    let subscribed: Vec<&EventType> = types
        .iter()
        .filter(|t| {
            herald_domain::FilterTypes::parse(endpoint.filter_types.as_deref().unwrap_or_default())
                .map(|f| f.matches(&t.name))
                .unwrap_or(false)
        })
        .collect();
    let examples: Vec<(String, String)> = subscribed
        .iter()
        .map(|t| {
            let example = crate::test_events::example(t, 0).unwrap_or_default();
            (
                t.name.to_string(),
                serde_json::to_string_pretty(&example).unwrap_or_default(),
            )
        })
        .collect();
    Ok(page(
        state,
        super::pages::endpoint(
            &session.csrf(),
            session.writable(),
            &app,
            &endpoint,
            &health,
            &examples,
            &extras,
        ),
    ))
}

#[derive(serde::Deserialize)]
pub(super) struct NoticeQuery {
    notice: Option<String>,
    /// A test event sent from this page: its result is shown (a GET after
    /// the POST, so reloading shows it again instead of sending again).
    test: Option<String>,
}

pub(super) async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<NoticeQuery>,
) -> Result<Response, Refused> {
    let notice = match query.notice.as_deref() {
        Some("rotated") => {
            Some("The secret was rotated; the previous one keeps signing during the grace period.")
        }
        Some("disabled") => {
            Some("The endpoint is disabled: nothing is sent to it until it is enabled again.")
        }
        Some("enabled") => Some("The endpoint is enabled again; recover what it missed below."),
        Some("recovering") => {
            Some("Recovery started: the failed deliveries since then are being sent again.")
        }
        Some("bad-since") => Some("Choose a time in the past to recover from."),
        Some("saved") => Some("The endpoint is saved."),
        _ => None,
    };
    let test = match query.test.as_deref() {
        Some(message) => Some(test_result(&state, &headers, &app, &endpoint, message).await?),
        None => None,
    };
    let extras = Extras {
        notice,
        result: test,
        ..Extras::default()
    };
    detail_page(&state, &headers, &app, &endpoint, extras).await
}

/// The test message `message` of this endpoint and its attempt here, as
/// recorded (no waiting: the POST waited before redirecting).
async fn test_result(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: &str,
    message: &str,
) -> Result<TestResult, Refused> {
    let (_, app) = open(state, headers, app).await?;
    let endpoint = endpoint_of(state, app.id, endpoint).await?;
    let reference = herald_domain::ids::IdOrUid::<herald_domain::MessageId>::parse(message)
        .map_err(|_| Refused::from(ApiError::NotFound))?;
    let message = state.store.get_message(app.id, &reference).await?;
    let attempts = state
        .store
        .list_attempts(
            app.id,
            herald_store::AttemptQuery::new(
                herald_store::AttemptFilter::Message(message.id),
                herald_store::PageRequest {
                    limit: 50,
                    cursor: herald_store::Cursor::Start,
                },
            ),
        )
        .await?;
    Ok(TestResult {
        event_type: message.event_type.to_string(),
        // The first attempt at this endpoint (the list is newest first).
        attempt: attempts
            .data
            .into_iter()
            .rev()
            .find(|a| a.endpoint_id == endpoint.id),
        error: None,
    })
}

pub(super) async fn send_test(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app_record) = open(&state, &headers, &app).await?;
    let fields = session.form(&body)?;
    let event_type = fields.get("event_type").unwrap_or_default().to_owned();
    let record = endpoint_of(&state, app_record.id, &endpoint).await?;
    let outcome = match session
        .operations(&state)
        .send_test_event(&record, &event_type, 0)
        .await
    {
        Ok(message) => {
            // Wait for the attempt here, then show it at a URL of its
            // own (post/redirect/get: a reload does not send again).
            crate::test_events::first_attempt(&state, app_record.id, message.id).await?;
            return Ok(Redirect::to(&format!(
                "/portal/app/{}/endpoint/{}?test={}#test-result",
                app_record.id, record.id, message.id
            ))
            .into_response());
        }
        Err(ApiError::Invalid { field, detail }) => TestResult {
            event_type,
            attempt: None,
            error: Some(format!("{field}: {detail}")),
        },
        Err(error) => return Err(error.into()),
    };
    let extras = Extras {
        result: Some(outcome),
        ..Extras::default()
    };
    detail_page(&state, &headers, &app, &endpoint, extras).await
}

pub(super) async fn event_catalog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let types = catalog(&state).await?;
    let described: Vec<(EventType, String, String)> = types
        .into_iter()
        .map(|t| {
            let example = crate::test_events::example(&t, 0).unwrap_or_default();
            let schema = t
                .schemas
                .as_ref()
                .and_then(|s| s.as_object())
                .and_then(|versions| {
                    // The newest schema version, as test events use.
                    versions
                        .iter()
                        .max_by_key(|(version, _)| version.parse::<u32>().unwrap_or(0))
                        .map(|(_, schema)| schema.clone())
                })
                .map(|mut schema| {
                    if let Some(object) = schema.as_object_mut() {
                        object.remove("examples");
                    }
                    serde_json::to_string_pretty(&schema).unwrap_or_default()
                })
                .unwrap_or_else(|| "(no schema)".to_owned());
            let example = serde_json::to_string_pretty(&example).unwrap_or_default();
            (t, schema, example)
        })
        .collect();
    Ok(page(
        &state,
        super::pages::catalog(&session.csrf(), &app, &described),
    ))
}

async fn editable(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    endpoint: &str,
) -> Result<(Session, herald_store::App, herald_store::Endpoint), Refused> {
    let (session, app) = open(state, headers, app).await?;
    session.require_writable()?;
    let endpoint = endpoint_of(state, app.id, endpoint).await?;
    Ok((session, app, endpoint))
}

pub(super) async fn edit_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
) -> Result<Response, Refused> {
    let (session, app, endpoint) = editable(&state, &headers, &app, &endpoint).await?;
    let types = catalog(&state).await?;
    let form = EndpointForm {
        url: endpoint.url.to_string(),
        description: endpoint.description.clone(),
        all_events: endpoint.filter_types.is_none(),
        types: endpoint.filter_types.clone().unwrap_or_default(),
        rate_limit: endpoint
            .rate_limit
            .map(|r| r.to_string())
            .unwrap_or_default(),
        headers: headers_text(&endpoint.headers),
        filter: endpoint.options.filter.clone().unwrap_or_default(),
        transformation: endpoint.options.transformation.clone().unwrap_or_default(),
        raw_payload: endpoint.options.raw_payload,
        timeout: endpoint
            .options
            .timeout
            .map(|t| t.to_string())
            .unwrap_or_default(),
        error: None,
        check: None,
        ..retry_fields(endpoint.retry_policy.as_ref())
    };
    Ok(page(
        &state,
        super::pages::new_endpoint(&session.csrf(), &app, &types, &form, Some(&endpoint)),
    ))
}

pub(super) async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((app, endpoint)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app, endpoint) = editable(&state, &headers, &app, &endpoint).await?;
    let fields = session.form(&body)?;
    let form = form_of(&fields);
    let changed = input(&state, &form, Some(&endpoint.url)).and_then(|changed| {
        // What the form does not show is kept.
        let mut update = crate::endpoints::input_of(&endpoint).map_err(|e| format!("{e:?}"))?;
        update.url = changed.url;
        update.description = changed.description;
        update.filter_types = changed.filter_types;
        update.rate_limit = changed.rate_limit;
        update.retry_policy = changed.retry_policy;
        update.options = changed.options;
        Ok((update, custom_headers(&form, &endpoint.headers)?))
    });
    match changed {
        Ok((update, custom)) => {
            let operations = session.operations(&state);
            operations.update_endpoint(&endpoint, update).await?;
            if custom != endpoint.headers {
                operations.set_endpoint_headers(&endpoint, custom).await?;
            }
            Ok(Redirect::to(&format!(
                "/portal/app/{}/endpoint/{}?notice=saved",
                app.id, endpoint.id
            ))
            .into_response())
        }
        Err(error) => {
            let types = catalog(&state).await?;
            let form = EndpointForm {
                error: Some(error),
                ..form
            };
            let mut response = page(
                &state,
                super::pages::new_endpoint(&session.csrf(), &app, &types, &form, Some(&endpoint)),
            );
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
    }
}

/// The endpoint form as submitted to one of its side buttons ("Check
/// URL", "Try it"), with the endpoint being edited, if any.
async fn submitted(
    state: &AppState,
    headers: &HeaderMap,
    app: &str,
    body: &[u8],
) -> Result<
    (
        Session,
        herald_store::App,
        EndpointForm,
        Option<herald_store::Endpoint>,
    ),
    Refused,
> {
    let (session, app) = open(state, headers, app).await?;
    let fields = session.form(body)?;
    let editing = match fields.get("editing").filter(|e| !e.is_empty()) {
        Some(id) => Some(endpoint_of(state, app.id, id).await?),
        None => None,
    };
    Ok((session, app, form_of(&fields), editing))
}

/// "Try it on the example payload": the form again, with what its filter
/// and transformation make of an event type's example.
pub(super) async fn try_expressions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app, mut form, editing) = submitted(&state, &headers, &app, &body).await?;
    let types = catalog(&state).await?;
    form.preview = Some(super::endpoint_form::preview(&form, &types));
    Ok(page(
        &state,
        super::pages::new_endpoint(&session.csrf(), &app, &types, &form, editing.as_ref()),
    ))
}

/// "Check URL": the form again, with what a test POST to the URL got.
pub(super) async fn check_url(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app, mut form, editing) = submitted(&state, &headers, &app, &body).await?;
    match crate::url_check::run(&state, app.id, &form.url).await {
        Ok(check) => form.check = Some(check),
        Err(ApiError::Invalid { detail, .. }) => form.error = Some(format!("URL: {detail}")),
        Err(error) => return Err(error.into()),
    }
    let types = catalog(&state).await?;
    Ok(page(
        &state,
        super::pages::new_endpoint(&session.csrf(), &app, &types, &form, editing.as_ref()),
    ))
}
