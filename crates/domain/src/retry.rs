//! Retry schedules: how long to wait after each failed attempt, with jitter.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Delays after the first, second, … failed attempt. A delivery gets
/// `len() + 1` attempts in all; after the last failure it is `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Jitter applied to every delay: ±20 %.
const JITTER: f64 = 0.2;

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (SPEC §2).
    fn default() -> Self {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 60 * MINUTE;
        Self(
            [
                5,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self(delays)
    }

    /// Parses a comma-separated list such as `5s,5m,30m,2h` (units ms, s, m, h, d).
    /// An empty string means "never retry".
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "retrySchedule";
        let input = input.trim();
        if input.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let delays = input
            .split(',')
            .map(|part| {
                parse_duration(part.trim()).map_err(|reason| ParseError::new(FIELD, reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err(ParseError::new(FIELD, "at most 50 retries"));
        }
        Ok(Self(delays))
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// Attempts a delivery gets in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.0.len() as u32 + 1
    }

    /// The delay before the next attempt after `attempts_made` attempts have
    /// failed, jittered; `None` when the schedule is exhausted.
    pub fn next_delay(&self, attempts_made: u32) -> Option<Duration> {
        let base = *self.0.get((attempts_made as usize).checked_sub(1)?)?;
        Some(jitter(base, rand::thread_rng().gen::<f64>()))
    }
}

/// An endpoint's own retry policy (the server's schedule applies to
/// endpoints without one). Either policy may also give up once a message is
/// older than `max_age`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub kind: RetryKind,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RetryKind {
    /// Fixed delays, one per retry.
    Schedule(RetrySchedule),
    /// `initial × factor^(n-1)` before retry n, at most `max_delay`, for
    /// `max_attempts` attempts in all (the first included).
    Exponential {
        initial: Duration,
        factor: f64,
        max_delay: Duration,
        max_attempts: u32,
    },
}

/// The JSON form of a [`RetryPolicy`] (`retryPolicy` on endpoints), with
/// durations written like `5s`, `10m`, `2h`, `3d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicySpec {
    /// `schedule` or `exponential`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

const SHORTEST: Duration = Duration::from_millis(10);
const LONGEST_DELAY: Duration = Duration::from_secs(7 * 86_400);
const LONGEST_AGE: Duration = Duration::from_secs(30 * 86_400);

impl RetryPolicy {
    /// Validates the JSON form; errors name the offending field.
    pub fn from_spec(spec: &RetryPolicySpec) -> Result<Self, ParseError> {
        let duration = |name: &'static str, text: &str, longest: Duration| {
            let value = parse_duration(text.trim()).map_err(|r| ParseError::new(name, r))?;
            if value < SHORTEST || value > longest {
                return Err(ParseError::new(
                    name,
                    format!("must be between 10ms and {}d", longest.as_secs() / 86_400),
                ));
            }
            Ok(value)
        };
        let required = |name: &'static str, value: Option<&String>| {
            value
                .cloned()
                .ok_or_else(|| ParseError::new(name, "is required for this type"))
        };
        let max_age = spec
            .max_age
            .as_deref()
            .map(|age| duration("retryPolicy.maxAge", age, LONGEST_AGE))
            .transpose()?;
        let kind = match spec.kind.as_str() {
            "schedule" => {
                if spec.initial_delay.is_some()
                    || spec.factor.is_some()
                    || spec.max_delay.is_some()
                    || spec.max_attempts.is_some()
                {
                    return Err(ParseError::new(
                        "retryPolicy.type",
                        "a schedule takes only `schedule` and `maxAge`",
                    ));
                }
                let delays = spec
                    .schedule
                    .as_ref()
                    .ok_or_else(|| {
                        ParseError::new("retryPolicy.schedule", "is required for this type")
                    })?
                    .iter()
                    .map(|d| duration("retryPolicy.schedule", d, LONGEST_DELAY))
                    .collect::<Result<Vec<_>, _>>()?;
                if delays.len() > 50 {
                    return Err(ParseError::new(
                        "retryPolicy.schedule",
                        "at most 50 retries",
                    ));
                }
                RetryKind::Schedule(RetrySchedule::new(delays))
            }
            "exponential" => {
                if spec.schedule.is_some() {
                    return Err(ParseError::new(
                        "retryPolicy.schedule",
                        "is for `type: schedule`",
                    ));
                }
                let initial = duration(
                    "retryPolicy.initialDelay",
                    &required("retryPolicy.initialDelay", spec.initial_delay.as_ref())?,
                    LONGEST_DELAY,
                )?;
                let max_delay = duration(
                    "retryPolicy.maxDelay",
                    &required("retryPolicy.maxDelay", spec.max_delay.as_ref())?,
                    LONGEST_DELAY,
                )?;
                if max_delay < initial {
                    return Err(ParseError::new(
                        "retryPolicy.maxDelay",
                        "must not be shorter than `initialDelay`",
                    ));
                }
                let factor = spec.factor.unwrap_or(2.0);
                if !(1.0..=10.0).contains(&factor) {
                    return Err(ParseError::new(
                        "retryPolicy.factor",
                        "must be between 1 and 10",
                    ));
                }
                let max_attempts = spec.max_attempts.ok_or_else(|| {
                    ParseError::new("retryPolicy.maxAttempts", "is required for this type")
                })?;
                if !(1..=50).contains(&max_attempts) {
                    return Err(ParseError::new(
                        "retryPolicy.maxAttempts",
                        "must be between 1 and 50",
                    ));
                }
                RetryKind::Exponential {
                    initial,
                    factor,
                    max_delay,
                    max_attempts,
                }
            }
            _ => {
                return Err(ParseError::new(
                    "retryPolicy.type",
                    "must be `schedule` or `exponential`",
                ))
            }
        };
        Ok(Self { kind, max_age })
    }

    /// The JSON form, as stored and shown.
    pub fn to_spec(&self) -> RetryPolicySpec {
        let text = |d: Duration| format!("{}ms", d.as_millis());
        let mut spec = RetryPolicySpec {
            kind: String::new(),
            schedule: None,
            initial_delay: None,
            factor: None,
            max_delay: None,
            max_attempts: None,
            max_age: self.max_age.map(text),
        };
        match &self.kind {
            RetryKind::Schedule(schedule) => {
                spec.kind = "schedule".into();
                spec.schedule = Some(schedule.delays().iter().copied().map(text).collect());
            }
            RetryKind::Exponential {
                initial,
                factor,
                max_delay,
                max_attempts,
            } => {
                spec.kind = "exponential".into();
                spec.initial_delay = Some(text(*initial));
                spec.factor = Some(*factor);
                spec.max_delay = Some(text(*max_delay));
                spec.max_attempts = Some(*max_attempts);
            }
        }
        spec
    }

    /// The delay before the next attempt after `attempts_made` failed ones,
    /// for a message `age` old now; `None` when the policy gives up.
    pub fn next_delay(&self, attempts_made: u32, age: Duration) -> Option<Duration> {
        let delay = match &self.kind {
            RetryKind::Schedule(schedule) => schedule.next_delay(attempts_made)?,
            RetryKind::Exponential {
                initial,
                factor,
                max_delay,
                max_attempts,
            } => {
                if attempts_made >= *max_attempts {
                    return None;
                }
                let exponent = attempts_made.saturating_sub(1).min(64) as i32;
                let base = initial.mul_f64(factor.powi(exponent)).min(*max_delay);
                jitter(base, rand::thread_rng().gen::<f64>())
            }
        };
        match self.max_age {
            Some(max_age) if age + delay > max_age => None,
            _ => Some(delay),
        }
    }
}

/// Spreads `base` over ±20 %; `unit` is a number in [0, 1).
pub fn jitter(base: Duration, unit: f64) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
    base.mul_f64(factor)
}

/// Parses `250ms`, `5s`, `10m`, `2h` or `3d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` needs a unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number followed by a unit"))?;
    let millis = match unit {
        "ms" => number,
        "s" => number * 1_000,
        "m" => number * 60_000,
        "h" => number * 3_600_000,
        "d" => number * 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_the_specified_one() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 8);
        assert_eq!(schedule.delays()[0], Duration::from_secs(5));
        assert_eq!(schedule.delays()[6], Duration::from_secs(36_000));
    }

    #[test]
    fn schedules_parse_from_text() {
        let schedule = RetrySchedule::parse("1s, 250ms,2m,1h,1d").unwrap();
        assert_eq!(
            schedule.delays(),
            &[
                Duration::from_secs(1),
                Duration::from_millis(250),
                Duration::from_secs(120),
                Duration::from_secs(3600),
                Duration::from_secs(86400)
            ]
        );
        for bad in ["1", "s", "1x", "1s,,2s", "-1s"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad:?} must fail");
        }
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_secs(100);
        assert_eq!(jitter(base, 0.0), Duration::from_secs(80));
        assert_eq!(jitter(base, 1.0), Duration::from_secs(120));
        assert_eq!(jitter(base, 0.5), Duration::from_secs(100));
    }

    #[test]
    fn the_schedule_ends_after_its_last_delay() {
        let schedule = RetrySchedule::parse("1s,2s").unwrap();
        assert!(schedule.next_delay(0).is_none(), "no attempt made yet");
        assert!(schedule.next_delay(1).is_some());
        assert!(schedule.next_delay(2).is_some());
        assert!(schedule.next_delay(3).is_none());
    }

    fn spec(json: &str) -> RetryPolicySpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn exponential_policies_grow_to_their_cap_and_stop_at_their_count() {
        let policy = RetryPolicy::from_spec(&spec(
            r#"{"type":"exponential","initialDelay":"1s","factor":3,"maxDelay":"20s","maxAttempts":5}"#,
        ))
        .unwrap();
        let bases = [1.0, 3.0, 9.0, 20.0];
        for (made, base) in (1..).zip(bases) {
            let delay = policy
                .next_delay(made, Duration::ZERO)
                .unwrap()
                .as_secs_f64();
            assert!(
                (base * 0.8..=base * 1.2).contains(&delay),
                "after {made}: {delay}"
            );
        }
        assert_eq!(
            policy.next_delay(5, Duration::ZERO),
            None,
            "five attempts in all"
        );
        assert_eq!(RetryPolicy::from_spec(&policy.to_spec()).unwrap(), policy);
    }

    #[test]
    fn max_age_ends_retries_of_old_messages() {
        let policy = RetryPolicy::from_spec(&spec(
            r#"{"type":"schedule","schedule":["1m","1h"],"maxAge":"30m"}"#,
        ))
        .unwrap();
        assert!(policy.next_delay(1, Duration::from_secs(60)).is_some());
        assert_eq!(
            policy.next_delay(2, Duration::from_secs(60)),
            None,
            "an hour more is too old"
        );
        assert_eq!(
            policy.next_delay(3, Duration::ZERO),
            None,
            "schedule exhausted"
        );
    }

    #[test]
    fn invalid_policies_name_the_field() {
        for (json, field) in [
            (r#"{"type":"linear"}"#, "retryPolicy.type"),
            (r#"{"type":"schedule"}"#, "retryPolicy.schedule"),
            (
                r#"{"type":"schedule","schedule":["5x"]}"#,
                "retryPolicy.schedule",
            ),
            (
                r#"{"type":"schedule","schedule":["1s"],"factor":2}"#,
                "retryPolicy.type",
            ),
            (
                r#"{"type":"exponential","initialDelay":"1s","maxDelay":"1h"}"#,
                "retryPolicy.maxAttempts",
            ),
            (
                r#"{"type":"exponential","initialDelay":"1h","maxDelay":"1s","maxAttempts":3}"#,
                "retryPolicy.maxDelay",
            ),
            (
                r#"{"type":"exponential","initialDelay":"1s","maxDelay":"1h","maxAttempts":3,"factor":0.5}"#,
                "retryPolicy.factor",
            ),
            (
                r#"{"type":"exponential","initialDelay":"1s","maxDelay":"1h","maxAttempts":99}"#,
                "retryPolicy.maxAttempts",
            ),
            (
                r#"{"type":"schedule","schedule":["1s"],"maxAge":"90d"}"#,
                "retryPolicy.maxAge",
            ),
        ] {
            let error = RetryPolicy::from_spec(&spec(json)).unwrap_err();
            assert_eq!(error.field, field, "{json}: {error:?}");
        }
    }
}
