//! An app's alert rules (SPEC §5): which operational events its endpoints
//! raise, narrowed to the message event types that matter, with thresholds
//! that override the server's and extra e-mail recipients.

use serde::{Deserialize, Serialize};

use crate::{EventTypeName, FilterTypes, ParseError};

/// The operational events Herald raises.
pub const OPERATIONAL_EVENTS: [&str; 5] = [
    "endpoint.disabled",
    "endpoint.failing",
    "endpoint.success_rate_dropped",
    "message.attempt.exhausted",
    "message.attempt.recovered",
];

/// The stored and API form. Every field is optional: `None` means the
/// server's default (all events, all event types, the configured
/// thresholds, the configured recipients only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRulesSpec {
    /// The operational events raised for this app; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Message event types (`call.completed`, `call.*`) that the
    /// `message.attempt.*` and `endpoint.failing` events are narrowed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_types: Option<Vec<String>>,
    /// Consecutive failures that make an endpoint `failing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_after: Option<u64>,
    /// Last-hour success rate under which `endpoint.success_rate_dropped` fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate_threshold: Option<f64>,
    /// Attempts in the hour below which the success rate is not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate_min_attempts: Option<u64>,
    /// Addresses that receive this app's events by e-mail, besides the
    /// server's (when SMTP is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_to: Option<Vec<String>>,
}

/// Validated rules, as the engine applies them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertRules {
    spec: AlertRulesSpec,
    filter: FilterTypes,
}

const MAX_RECIPIENTS: usize = 10;

impl AlertRules {
    pub fn parse(spec: AlertRulesSpec) -> Result<Self, ParseError> {
        if let Some(events) = &spec.events {
            if let Some(unknown) = events
                .iter()
                .find(|e| !OPERATIONAL_EVENTS.contains(&e.as_str()))
            {
                return Err(ParseError::new(
                    "events",
                    format!(
                        "`{unknown}` is not an operational event (one of {})",
                        OPERATIONAL_EVENTS.join(", ")
                    ),
                ));
            }
        }
        let filter = match &spec.filter_types {
            Some(types) if types.is_empty() => {
                return Err(ParseError::new(
                    "filterTypes",
                    "must not be empty (leave it out to alert on every event type)",
                ))
            }
            Some(types) => FilterTypes::parse(types)?,
            None => FilterTypes::all(),
        };
        if spec
            .failing_after
            .is_some_and(|n| !(1..=10_000).contains(&n))
        {
            return Err(ParseError::new("failingAfter", "must be 1..=10000"));
        }
        if spec
            .success_rate_threshold
            .is_some_and(|t| !(t > 0.0 && t <= 1.0))
        {
            return Err(ParseError::new(
                "successRateThreshold",
                "must be a fraction above 0 and at most 1",
            ));
        }
        if spec
            .success_rate_min_attempts
            .is_some_and(|n| !(1..=1_000_000).contains(&n))
        {
            return Err(ParseError::new(
                "successRateMinAttempts",
                "must be 1..=1000000",
            ));
        }
        if let Some(to) = &spec.email_to {
            if to.len() > MAX_RECIPIENTS {
                return Err(ParseError::new(
                    "emailTo",
                    format!("at most {MAX_RECIPIENTS} addresses"),
                ));
            }
            if let Some(bad) = to.iter().find(|a| !plausible_address(a)) {
                return Err(ParseError::new(
                    "emailTo",
                    format!("`{bad}` is not an e-mail address"),
                ));
            }
        }
        Ok(Self { spec, filter })
    }

    pub fn spec(&self) -> &AlertRulesSpec {
        &self.spec
    }

    /// Whether this app raises `event` at all.
    pub fn raises(&self, event: &str) -> bool {
        self.spec
            .events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == event))
    }

    /// Whether a failure of a message of type `name` is worth an alert.
    pub fn covers(&self, name: &EventTypeName) -> bool {
        self.filter.matches(name)
    }

    pub fn narrowed(&self) -> bool {
        !self.filter.is_all()
    }

    pub fn email_to(&self) -> &[String] {
        self.spec.email_to.as_deref().unwrap_or_default()
    }
}

/// `local@domain` with no spaces or angle brackets; the mailer parses it
/// fully when it sends.
fn plausible_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    address.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<AlertRules, ParseError> {
        AlertRules::parse(serde_json::from_value(json).expect("shape"))
    }

    #[test]
    fn empty_rules_raise_everything_for_every_type() {
        let rules = parse(serde_json::json!({})).unwrap();
        assert!(OPERATIONAL_EVENTS.iter().all(|e| rules.raises(e)));
        assert!(rules.covers(&EventTypeName::parse("contact.updated").unwrap()));
        assert!(!rules.narrowed());
    }

    #[test]
    fn rules_narrow_events_and_event_types() {
        let rules = parse(serde_json::json!({
            "events": ["message.attempt.exhausted"],
            "filterTypes": ["call.*", "contact.created"],
        }))
        .unwrap();
        assert!(rules.raises("message.attempt.exhausted"));
        assert!(!rules.raises("endpoint.failing"));
        let name = |n| EventTypeName::parse(n).unwrap();
        assert!(rules.covers(&name("call.completed")));
        assert!(rules.covers(&name("contact.created")));
        assert!(!rules.covers(&name("contact.updated")));
    }

    #[test]
    fn invalid_rules_name_their_field() {
        let cases = [
            (
                serde_json::json!({"events": ["endpoint.exploded"]}),
                "events",
            ),
            (serde_json::json!({"filterTypes": []}), "filterTypes"),
            (
                serde_json::json!({"filterTypes": ["not a type"]}),
                "filterTypes",
            ),
            (serde_json::json!({"failingAfter": 0}), "failingAfter"),
            (
                serde_json::json!({"successRateThreshold": 1.5}),
                "successRateThreshold",
            ),
            (
                serde_json::json!({"successRateThreshold": 0.0}),
                "successRateThreshold",
            ),
            (
                serde_json::json!({"successRateMinAttempts": 0}),
                "successRateMinAttempts",
            ),
            (serde_json::json!({"emailTo": ["ops"]}), "emailTo"),
            (
                serde_json::json!({"emailTo": ["a b@example.com"]}),
                "emailTo",
            ),
            (
                serde_json::json!({"emailTo": ["a@b@example.com"]}),
                "emailTo",
            ),
        ];
        for (json, field) in cases {
            let error = parse(json.clone()).expect_err(&json.to_string());
            assert_eq!(error.field, field, "{json}");
        }
        assert!(parse(serde_json::json!({"emailTo": ["ops@example.com"]})).is_ok());
    }
}
