//! Retry schedules: how long to wait after each failed attempt, with jitter.

use std::time::Duration;

use rand::Rng;

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

/// Spreads `base` over ±20 %; `unit` is a number in [0, 1).
pub fn jitter(base: Duration, unit: f64) -> Duration {
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
    base.mul_f64(factor)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
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
}
