//! The portal's endpoint pages: creating an endpoint (URL checked by the
//! server's rules, event types chosen as all, by group or one by one) and
//! an endpoint's page (health, subscriptions, a test event and its result).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use herald_domain::ids::IdOrUid;
use herald_domain::{EndpointId, EndpointUrl, Secret};
use herald_store::{EndpointInput, EventType, PageRequest};

use super::{app_of, page, session, Refused, Session};
use crate::error::ApiError;
use crate::AppState;

/// A submitted form, with repeated keys (checkboxes) kept.
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(super) fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

/// What the new-endpoint form shows again after a refusal.
#[derive(Debug, Default)]
pub(super) struct EndpointForm {
    pub url: String,
    pub description: String,
    pub all_events: bool,
    pub types: Vec<String>,
    pub rate_limit: String,
    /// `""` (the server's schedule), `exponential` or `schedule`.
    pub retry_kind: String,
    pub retry_schedule: String,
    pub retry_initial: String,
    pub retry_factor: String,
    pub retry_max_delay: String,
    pub retry_max_attempts: String,
    pub retry_max_age: String,
    /// Custom headers, one `Name: value` per line; a credential's value is
    /// shown masked and kept when left masked.
    pub headers: String,
    pub error: Option<String>,
    /// The result of "Check URL".
    pub check: Option<crate::url_check::CheckOut>,
}

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

/// The endpoint the form describes, or what is wrong with it, in the same
/// words as the API.
fn input(
    state: &AppState,
    form: &EndpointForm,
    current: Option<&EndpointUrl>,
) -> Result<EndpointInput, String> {
    let message = |e: ApiError| match e {
        ApiError::Invalid { field, detail } => format!("{field}: {detail}"),
        other => format!("{other:?}"),
    };
    let url = match current {
        Some(current) => EndpointUrl::update(&form.url, current, &state.config.policy),
        None => EndpointUrl::parse(&form.url, &state.config.policy),
    }
    .map_err(|e| format!("URL: {}", e.reason))?;
    crate::endpoints::check_description(&form.description).map_err(message)?;
    if !form.all_events && form.types.is_empty() {
        return Err("Events: choose at least one event type, or all events".into());
    }
    let filter = if form.all_events {
        None
    } else {
        Some(form.types.clone())
    };
    let filter_types = crate::endpoints::parse_filter(filter.as_deref()).map_err(message)?;
    let rate_limit = match form.rate_limit.as_str() {
        "" => None,
        text => Some(
            text.parse::<u32>()
                .ok()
                .filter(|r| *r > 0)
                .ok_or("Rate limit: a whole number of deliveries per second, or empty")?,
        ),
    };
    Ok(EndpointInput {
        uid: None,
        url,
        description: form.description.clone(),
        disabled: false,
        filter_types,
        channels: None,
        rate_limit,
        version: 1,
        metadata: Default::default(),
        retry_policy: retry_policy(form)?,
        strict_ordering: false,
    })
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

/// The form's fields read from a submitted body.
fn form_of(fields: &Fields) -> EndpointForm {
    let text = |name: &str| fields.get(name).unwrap_or_default().trim().to_owned();
    EndpointForm {
        url: fields.get("url").unwrap_or_default().trim().to_owned(),
        description: fields
            .get("description")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        all_events: fields.get("events") != Some("some"),
        types: fields.all("types"),
        rate_limit: fields
            .get("rate_limit")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        retry_kind: text("retry_kind"),
        retry_schedule: text("retry_schedule"),
        retry_initial: text("retry_initial"),
        retry_factor: text("retry_factor"),
        retry_max_delay: text("retry_max_delay"),
        retry_max_attempts: text("retry_max_attempts"),
        retry_max_age: text("retry_max_age"),
        headers: fields.get("headers").unwrap_or_default().to_owned(),
        error: None,
        check: None,
    }
}

/// The retry policy the form describes (`None`: the server's schedule).
fn retry_policy(form: &EndpointForm) -> Result<Option<herald_domain::RetryPolicy>, String> {
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let spec = match form.retry_kind.as_str() {
        "" => return Ok(None),
        kind => herald_domain::RetryPolicySpec {
            kind: kind.to_owned(),
            schedule: (kind == "schedule").then(|| {
                form.retry_schedule
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            initial_delay: optional(&form.retry_initial),
            factor: match form.retry_factor.as_str() {
                "" => None,
                text => Some(
                    text.parse()
                        .map_err(|_| "Retry factor: a number such as 2".to_owned())?,
                ),
            },
            max_delay: optional(&form.retry_max_delay),
            max_attempts: match form.retry_max_attempts.as_str() {
                "" => None,
                text => Some(
                    text.parse()
                        .map_err(|_| "Retry attempts: a whole number".to_owned())?,
                ),
            },
            max_age: optional(&form.retry_max_age),
        },
    };
    crate::endpoints::parse_policy(Some(&spec)).map_err(|e| match e {
        ApiError::Invalid { field, detail } => format!("retryPolicy {field}: {detail}"),
        other => format!("{other:?}"),
    })
}

/// The custom headers the form describes; a credential left masked keeps
/// its current value.
fn custom_headers(
    form: &EndpointForm,
    current: &herald_store::Headers,
) -> Result<herald_store::Headers, String> {
    let mut headers = herald_store::Headers::new();
    for line in form
        .headers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("Headers: `{line}` is not `Name: value`"));
        };
        let (name, value) = (name.trim(), value.trim());
        let value = if value == herald_domain::headers::MASKED {
            match current.get(&name.to_ascii_lowercase()) {
                Some(kept) => kept.clone(),
                None => return Err(format!("Headers: give `{name}` a value")),
            }
        } else {
            value.to_owned()
        };
        headers.insert(name.to_owned(), value);
    }
    crate::endpoints::parse_headers(headers).map_err(|e| match e {
        ApiError::Invalid { detail, .. } => format!("Headers: {detail}"),
        other => format!("{other:?}"),
    })
}

/// The retry fields of the form for an endpoint's policy.
fn retry_fields(policy: Option<&herald_domain::RetryPolicy>) -> EndpointForm {
    let Some(spec) = policy.map(herald_domain::RetryPolicy::to_spec) else {
        return EndpointForm::default();
    };
    EndpointForm {
        retry_kind: spec.kind,
        retry_schedule: spec.schedule.unwrap_or_default().join(", "),
        retry_initial: spec.initial_delay.unwrap_or_default(),
        retry_factor: spec.factor.map(|f| f.to_string()).unwrap_or_default(),
        retry_max_delay: spec.max_delay.unwrap_or_default(),
        retry_max_attempts: spec.max_attempts.map(|n| n.to_string()).unwrap_or_default(),
        retry_max_age: spec.max_age.unwrap_or_default(),
        ..EndpointForm::default()
    }
}

/// The form's text for an endpoint's headers, credentials masked.
fn headers_text(headers: &herald_store::Headers) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", herald_domain::headers::shown(name, value)))
        .collect::<Vec<_>>()
        .join("\n")
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

/// "Check URL": the form again, with what a test POST to the URL got.
pub(super) async fn check_url(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, Refused> {
    let (session, app) = open(&state, &headers, &app).await?;
    let fields = session.form(&body)?;
    let editing = match fields.get("editing").filter(|e| !e.is_empty()) {
        Some(id) => Some(endpoint_of(&state, app.id, id).await?),
        None => None,
    };
    let mut form = form_of(&fields);
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
