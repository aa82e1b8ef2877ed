//! The endpoint form of the portal: the posted fields, what the form
//! shows, and the endpoint it describes (in the API's words when wrong).

use herald_domain::{expr, DeliveryOptions, EndpointUrl};
use herald_store::EndpointInput;

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
    /// CEL expressions, as typed.
    pub filter: String,
    pub transformation: String,
    pub raw_payload: bool,
    /// Seconds, or empty for the server's timeout.
    pub timeout: String,
    /// The event type whose example "Try it" runs on.
    pub preview_type: String,
    pub error: Option<String>,
    /// The result of "Check URL".
    pub check: Option<crate::url_check::CheckOut>,
    /// The result of "Try it on the example payload".
    pub preview: Option<Preview>,
}

/// What "Try it" shows: the filter's verdict and the body the endpoint
/// would be sent, for an event type's example payload.
#[derive(Debug)]
pub(super) struct Preview {
    pub event_type: String,
    /// `None`: no filter.
    pub filter: Option<Result<bool, String>>,
    pub body: Result<String, String>,
}

/// Runs the form's filter and transformation on the example payload of
/// the chosen event type (else the first one the form subscribes to, else
/// the catalog's first).
pub(super) fn preview(form: &EndpointForm, types: &[herald_store::EventType]) -> Preview {
    let chosen = types
        .iter()
        .find(|t| t.name.as_str() == form.preview_type)
        .or_else(|| {
            types
                .iter()
                .find(|t| form.types.iter().any(|name| name == t.name.as_str()))
        })
        .or(types.first());
    let Some(event_type) = chosen else {
        return Preview {
            event_type: String::new(),
            filter: None,
            body: Err("the catalog has no event types".into()),
        };
    };
    let payload = crate::test_events::example(event_type, 0)
        .map(|example| example.to_string())
        .unwrap_or_else(|_| "{}".into());
    let message = herald_store::Message {
        id: herald_domain::MessageId::generate(),
        app_id: herald_domain::AppId::generate(),
        event_id: None,
        event_type: event_type.name.clone(),
        payload,
        channels: None,
        created_at: chrono::Utc::now().timestamp_millis(),
    };
    let optional = |text: &str| (!text.trim().is_empty()).then(|| text.trim().to_owned());
    let filter = optional(&form.filter).map(|source| {
        let program = expr::compile(&source).map_err(|e| format!("filter: {e}"))?;
        let subject = message.subject().map_err(|e| e.to_string())?;
        program
            .matches(&subject.input())
            .map_err(|e| format!("filter: {e}"))
    });
    let options = DeliveryOptions {
        filter: None,
        transformation: optional(&form.transformation),
        raw_payload: form.raw_payload,
        timeout: None,
    };
    let body = match &options.transformation {
        Some(source) => expr::compile(source)
            .map(|_| ())
            .map_err(|e| format!("transformation: {e}")),
        None => Ok(()),
    }
    .and_then(|()| {
        herald_dispatch::endpoint_body(&message, &options, || herald_dispatch::build_body(&message))
    })
    .map(|bytes| {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
    });
    Preview {
        event_type: event_type.name.to_string(),
        filter,
        body,
    }
}

/// The endpoint the form describes, or what is wrong with it, in the same
/// words as the API.
pub(super) fn input(
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
        options: options(state, form).map_err(message)?,
    })
}

/// The delivery options the form describes, checked as the API checks them.
fn options(state: &AppState, form: &EndpointForm) -> Result<DeliveryOptions, ApiError> {
    let optional = |text: &str| (!text.trim().is_empty()).then(|| text.trim().to_owned());
    let timeout = match form.timeout.trim() {
        "" => None,
        text => Some(
            text.parse::<u32>()
                .map_err(|_| ApiError::invalid("timeout", "a whole number of seconds, or empty"))?,
        ),
    };
    crate::endpoints::check_options(
        state,
        DeliveryOptions {
            filter: optional(&form.filter),
            transformation: optional(&form.transformation),
            raw_payload: form.raw_payload,
            timeout,
        },
    )
}

/// The form's fields read from a submitted body.
pub(super) fn form_of(fields: &Fields) -> EndpointForm {
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
        filter: fields.get("filter").unwrap_or_default().to_owned(),
        transformation: fields.get("transformation").unwrap_or_default().to_owned(),
        raw_payload: fields.get("raw_payload").is_some(),
        timeout: text("timeout"),
        preview_type: text("preview_type"),
        error: None,
        check: None,
        preview: None,
    }
}

/// The retry policy the form describes (`None`: the server's schedule).
pub(super) fn retry_policy(
    form: &EndpointForm,
) -> Result<Option<herald_domain::RetryPolicy>, String> {
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
pub(super) fn custom_headers(
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
pub(super) fn retry_fields(policy: Option<&herald_domain::RetryPolicy>) -> EndpointForm {
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
pub(super) fn headers_text(headers: &herald_store::Headers) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", herald_domain::headers::shown(name, value)))
        .collect::<Vec<_>>()
        .join("\n")
}
