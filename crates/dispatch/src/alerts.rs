//! Failure notifications (SPEC §5): after each health flush, the runs of
//! failures it reports are turned into operational events — messages of
//! the operations app (`herald-operations`), which Herald delivers, signs
//! and retries like any other to the operators' endpoints. Each event's
//! `eventId` names its episode (the endpoint and when its run of failures
//! began), so it is raised once per episode, however many processes see it.

use std::collections::HashMap;

use serde_json::{json, Value};

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{AlertRules, AppId, EventTypeName};
use herald_store::{
    EndpointRun, HealthUpdate, MessageInput, RateDrop, RateRule, Store, StoreError, Timestamp,
};

/// Where operational events go and when `endpoint.failing` fires.
#[derive(Debug, Clone, Copy)]
pub struct AlertConfig {
    pub operations_app: AppId,
    /// Consecutive failed attempts that make an endpoint `failing`.
    pub failing_after: u64,
    /// When `endpoint.success_rate_dropped` fires; `None`: never.
    pub success_rate: Option<RateRule>,
}

/// One operational event to raise.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Alert {
    pub event_type: &'static str,
    pub app: AppId,
    pub episode: String,
    pub payload: Value,
    /// The app's own e-mail recipients, besides the server's.
    pub email_to: Vec<String>,
}

fn time(at: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The apps' own rules; an app without any follows the server's defaults.
pub(crate) type AppRules = HashMap<AppId, AlertRules>;

fn rules_of(rules: &AppRules, app: AppId) -> &AlertRules {
    static DEFAULT: std::sync::OnceLock<AlertRules> = std::sync::OnceLock::new();
    rules
        .get(&app)
        .unwrap_or_else(|| DEFAULT.get_or_init(AlertRules::default))
}

/// The success-rate rule for an app: its own threshold and volume where it
/// sets them, the server's otherwise; `None` when neither asks for one or
/// the app does not raise the event.
pub(crate) fn rate_rule(config: &AlertConfig, rules: &AppRules, app: AppId) -> Option<RateRule> {
    effective_rate_rule(config, rules_of(rules, app))
}

/// [`rate_rule`] for one app's rules (also what the API shows).
pub fn effective_rate_rule(config: &AlertConfig, rules: &AlertRules) -> Option<RateRule> {
    if !rules.raises(RATE_DROPPED) {
        return None;
    }
    let spec = rules.spec();
    let threshold = spec
        .success_rate_threshold
        .or(config.success_rate.map(|r| r.threshold))?;
    let min_attempts = spec
        .success_rate_min_attempts
        .or(config.success_rate.map(|r| r.min_attempts))
        .unwrap_or(DEFAULT_RATE_MIN_ATTEMPTS);
    Some(RateRule {
        threshold,
        min_attempts,
    })
}

/// The volume judged when an app sets a threshold and the server has none.
const DEFAULT_RATE_MIN_ATTEMPTS: u64 = 20;

/// The events one flush raises (before de-duplication by episode).
pub(crate) fn alerts(
    config: &AlertConfig,
    rules: &AppRules,
    updates: &[HealthUpdate],
    runs: &[EndpointRun],
) -> Vec<Alert> {
    let mut raised = Vec::new();
    for run in runs {
        let Some(update) = updates.iter().find(|u| u.endpoint_id == run.endpoint_id) else {
            continue;
        };
        let Some(app) = update.app_id else { continue };
        if app == config.operations_app {
            continue; // the operators' own endpoints would alert about themselves
        }
        let app_rules = rules_of(rules, app);
        let endpoint = run.endpoint_id;
        let base = json!({"appId": app.to_string(), "endpointId": endpoint.to_string(), "url": update.url});
        let mut push = |event_type: &'static str, episode: String, extra: Value| {
            if !app_rules.raises(event_type) {
                return;
            }
            let mut payload = base.clone();
            if let (Some(payload), Value::Object(extra)) = (payload.as_object_mut(), extra) {
                payload.extend(extra);
            }
            raised.push(Alert {
                event_type,
                app,
                episode,
                payload,
                email_to: app_rules.email_to().to_vec(),
            });
        };
        let since = run.failing_since;
        if run.disabled {
            push(
                DISABLED,
                format!("{DISABLED}.{endpoint}.{}", since.unwrap_or_default()),
                json!({"reason": "failing", "failingSince": since.map(time)}),
            );
        }
        if update.gone {
            push(
                DISABLED,
                format!(
                    "{DISABLED}.{endpoint}.gone.{}",
                    update.last_failure_at.unwrap_or_default()
                ),
                json!({"reason": "gone", "failingSince": since.map(time)}),
            );
        }
        let failing_after = app_rules
            .spec()
            .failing_after
            .unwrap_or(config.failing_after);
        // Narrowed rules count the run as for any endpoint, and raise it once
        // a failure of a type they cover is part of it.
        let covered = update.failed_types.iter().any(|t| app_rules.covers(t));
        if let Some(since) = since.filter(|_| run.consecutive_failures >= failing_after && covered)
        {
            push(
                FAILING,
                format!("{FAILING}.{endpoint}.{since}"),
                json!({"consecutiveFailures": run.consecutive_failures,
                       "failingSince": time(since)}),
            );
        }
        if let Some((event_type, message)) = update
            .exhausted
            .iter()
            .find(|(event_type, _)| app_rules.covers(event_type))
        {
            let episode = since.map_or_else(|| message.to_string(), |s| s.to_string());
            push(
                EXHAUSTED,
                format!("{EXHAUSTED}.{endpoint}.{episode}"),
                json!({"msgId": message.to_string(), "eventType": event_type.as_str(),
                       "failingSince": since.map(time)}),
            );
        }
        if let (Some(ended), Some(message)) = (run.ended_run, update.last_success_message) {
            // Raised only if this run had exhausted deliveries (checked
            // against the stored events before sending).
            push(
                RECOVERED,
                format!("{RECOVERED}.{endpoint}.{ended}"),
                json!({"msgId": message.to_string(), "failingSince": time(ended)}),
            );
        }
    }
    raised
}

/// `endpoint.success_rate_dropped` for an endpoint whose last hour fell
/// below the rule; the episode is when the drop was first seen.
pub(crate) fn rate_alert(
    update: &HealthUpdate,
    rules: &AppRules,
    drop: &RateDrop,
    rule: RateRule,
) -> Option<Alert> {
    let app = update.app_id?;
    let endpoint = update.endpoint_id;
    Some(Alert {
        event_type: RATE_DROPPED,
        app,
        episode: format!("{RATE_DROPPED}.{endpoint}.{}", drop.since),
        payload: json!({
            "appId": app.to_string(), "endpointId": endpoint.to_string(), "url": update.url,
            "successRate": drop.last_hour.success_rate().unwrap_or(0.0),
            "attempts": drop.last_hour.attempts(),
            "threshold": rule.threshold,
        }),
        email_to: rules_of(rules, app).email_to().to_vec(),
    })
}

const DISABLED: &str = "endpoint.disabled";
const FAILING: &str = "endpoint.failing";
const RATE_DROPPED: &str = "endpoint.success_rate_dropped";
const EXHAUSTED: &str = "message.attempt.exhausted";
const RECOVERED: &str = "message.attempt.recovered";

/// Stores one alert as a message of the operations app, unless its episode
/// was raised already (or, for `recovered`, had no exhausted deliveries).
/// Returns the created message with its leased jobs, if any.
pub(crate) async fn raise(
    store: &dyn Store,
    config: &AlertConfig,
    alert: &Alert,
    claim: Option<herald_store::Claim>,
) -> Result<Option<herald_store::CreatedMessage>, StoreError> {
    if alert.event_type == RECOVERED {
        let exhausted = alert.episode.replacen(RECOVERED, EXHAUSTED, 1);
        let Ok(uid) = Uid::parse("eventId", &exhausted) else {
            return Ok(None);
        };
        match store
            .get_message(config.operations_app, &IdOrUid::Uid(uid))
            .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Ok(None),
            Err(error) => return Err(error),
        }
    }
    let (Ok(event_type), Ok(episode)) = (
        EventTypeName::parse(alert.event_type),
        Uid::parse("eventId", &alert.episode),
    ) else {
        return Ok(None);
    };
    let input = MessageInput {
        event_type,
        event_id: Some(episode),
        payload: alert.payload.to_string(),
        // Operators' endpoints can subscribe to one app's events by channel.
        channels: Some(vec![alert.app.to_string()]),
        to_endpoint: None,
        filters: Default::default(),
        deliver_at: None,
    };
    match store
        .create_message(config.operations_app, input, claim, None)
        .await
    {
        Ok(created) => {
            tracing::info!(event = alert.event_type, episode = %alert.episode, "raised an operational event");
            Ok(Some(created))
        }
        Err(StoreError::Conflict { .. }) => Ok(None), // raised before in this episode
        Err(error) => Err(error),
    }
}

/// E-mail copies of operational events (SPEC §5), over SMTP.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// `smtp://host:port` (plain), `smtp://…?tls=required` (STARTTLS) or
    /// `smtps://host:port`, with `user:password@` when the server wants it.
    pub smtp_url: String,
    pub from: String,
    pub to: Vec<String>,
}

/// Sends each new operational event to the configured addresses.
pub(crate) struct Mailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("to", &self.to.len())
            .finish()
    }
}

impl Mailer {
    pub(crate) fn new(config: &EmailConfig) -> Result<Self, String> {
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&config.smtp_url)
                .map_err(|e| format!("SMTP URL: {e}"))?
                .timeout(Some(std::time::Duration::from_secs(15)))
                .build();
        let mailbox = |text: &str| {
            text.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("`{text}` is not an e-mail address: {e}"))
        };
        Ok(Self {
            transport,
            from: mailbox(&config.from)?,
            to: config
                .to
                .iter()
                .map(|to| mailbox(to))
                .collect::<Result<_, _>>()?,
        })
    }

    pub(crate) async fn send(&self, alert: &Alert) {
        use lettre::AsyncTransport;
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(format!(
                "[Herald] {}: {}",
                alert.event_type,
                alert.payload["endpointId"].as_str().unwrap_or("")
            ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        for to in &alert.email_to {
            match to.parse::<lettre::message::Mailbox>() {
                Ok(to) if !self.to.contains(&to) => builder = builder.to(to),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "an app's alert recipient is not an address"),
            }
        }
        let body = format!(
            "Herald raised `{}`.\n\n{}\n",
            alert.event_type,
            serde_json::to_string_pretty(&alert.payload).unwrap_or_default()
        );
        match builder.body(body) {
            Ok(email) => {
                if let Err(error) = self.transport.send(email).await {
                    tracing::warn!(%error, event = alert.event_type, "e-mailing an operational event failed");
                }
            }
            Err(error) => tracing::warn!(%error, "building an operational e-mail failed"),
        }
    }
}
