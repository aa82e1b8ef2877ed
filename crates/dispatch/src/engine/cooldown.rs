//! The dispatcher's cool-down after Herald's own failures.
//!
//! A delivery that failed for want of Herald's own resources (descriptors,
//! memory, local ports) is not charged to its receiver: it keeps its
//! attempts and is tried again soon. Alone, that turns a backlog into a hot
//! loop when the resource stays short: every claimed batch fails at once, a
//! failed attempt is written per delivery, and the next batch is claimed
//! straight away. So the first such failure pauses the whole dispatcher:
//! nothing is claimed (and fresh messages are left to the claim loop) until
//! the pause ends; then a single delivery is sent as a probe. If it reaches
//! its receiver (whatever the receiver answers), dispatch resumes; if it
//! fails the same way, the pause doubles, up to [`LONGEST`].

use std::time::{Duration, Instant};

/// The first pause.
pub(super) const FIRST: Duration = Duration::from_secs(2);
/// The longest pause.
pub(super) const LONGEST: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Dispatching normally.
    Running,
    /// Nothing is claimed before `until`.
    Paused { until: Instant },
    /// The pause is over: one delivery at a time goes out until one of
    /// them says whether Herald can send again.
    Probing { probe_out: bool },
}

/// What a settled attempt says of Herald's own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// The request reached the network (the receiver answered, refused,
    /// timed out …): Herald could send.
    Sent,
    /// Herald itself failed to send (class `local`).
    LocalFailure,
    /// Nothing either way (the endpoint's transformation failed).
    Neither,
}

/// What [`Cooldown::settle`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    None,
    /// A pause of this length began.
    Paused(Duration),
    /// Dispatch resumed.
    Resumed,
}

#[derive(Debug)]
pub(super) struct Cooldown {
    state: State,
    /// The length of the current (or next) pause.
    pause: Duration,
}

impl Cooldown {
    pub(super) fn new() -> Self {
        Self {
            state: State::Running,
            pause: FIRST,
        }
    }

    /// How long claims must still wait, if the dispatcher is paused.
    pub(super) fn remaining(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Paused { until } if until > now => Some(until - now),
            _ => None,
        }
    }

    /// Whether fresh work may be sent at once (no pause, no probe).
    pub(super) fn running(&self) -> bool {
        self.state == State::Running
    }

    /// How many of `free` slots a claim may use now.
    pub(super) fn allowance(&mut self, now: Instant, free: usize) -> usize {
        if let State::Paused { until } = self.state {
            if until > now {
                return 0;
            }
            self.state = State::Probing { probe_out: false };
        }
        match self.state {
            State::Running => free,
            State::Probing { probe_out: false } => free.min(1),
            _ => 0,
        }
    }

    /// Records that a claim made under [`Self::allowance`] took `claimed`.
    pub(super) fn claimed(&mut self, claimed: usize) {
        if claimed > 0 {
            if let State::Probing { probe_out } = &mut self.state {
                *probe_out = true;
            }
        }
    }

    /// Takes in what an attempt's outcome says. While running, a local
    /// failure starts the first pause; while paused, outcomes of attempts
    /// that were already out change nothing; while probing, the next
    /// outcome decides.
    pub(super) fn settle(&mut self, now: Instant, signal: Signal) -> Change {
        match (self.state, signal) {
            (State::Running, Signal::LocalFailure) => {
                self.pause = FIRST;
                self.state = State::Paused {
                    until: now + self.pause,
                };
                Change::Paused(self.pause)
            }
            (State::Probing { .. }, Signal::LocalFailure) => {
                self.pause = (self.pause * 2).min(LONGEST);
                self.state = State::Paused {
                    until: now + self.pause,
                };
                Change::Paused(self.pause)
            }
            (State::Probing { .. }, Signal::Sent) => {
                self.pause = FIRST;
                self.state = State::Running;
                Change::Resumed
            }
            (State::Probing { .. }, Signal::Neither) => {
                self.state = State::Probing { probe_out: false };
                Change::None
            }
            _ => Change::None,
        }
    }

    /// When a delivery that failed locally at `now` should be tried again:
    /// after the pause, spread over its next fifth so that the deliveries
    /// do not all come due at the same instant.
    pub(super) fn retry_delay(&self, now: Instant, unit: f64) -> Duration {
        let base = self.remaining(now).unwrap_or(FIRST);
        base + base.mul_f64(0.2 * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_failure_pauses_claims_then_one_probe_decides() {
        let start = Instant::now();
        let mut cooldown = Cooldown::new();
        assert_eq!(cooldown.allowance(start, 256), 256);
        assert!(cooldown.running());

        assert_eq!(
            cooldown.settle(start, Signal::LocalFailure),
            Change::Paused(FIRST)
        );
        assert!(!cooldown.running());
        assert_eq!(cooldown.remaining(start), Some(FIRST));
        assert_eq!(cooldown.allowance(start + FIRST / 2, 256), 0);
        // Attempts already out when the pause began change nothing.
        assert_eq!(cooldown.settle(start, Signal::LocalFailure), Change::None);
        assert_eq!(cooldown.settle(start, Signal::Sent), Change::None);
        let retry = cooldown.retry_delay(start, 1.0);
        assert!(retry >= FIRST && retry <= FIRST.mul_f64(1.2), "{retry:?}");

        // The pause is over: one probe, and no second while it is out.
        let later = start + FIRST;
        assert_eq!(cooldown.remaining(later), None);
        assert_eq!(cooldown.allowance(later, 256), 1);
        cooldown.claimed(0);
        assert_eq!(cooldown.allowance(later, 256), 1, "nothing was due");
        cooldown.claimed(1);
        assert_eq!(cooldown.allowance(later, 256), 0, "the probe is out");
        assert!(!cooldown.running(), "fresh work waits for the probe");

        // It failed the same way: the pause doubles, up to the longest.
        assert_eq!(
            cooldown.settle(later, Signal::LocalFailure),
            Change::Paused(FIRST * 2)
        );
        let mut now = later;
        for _ in 0..10 {
            now += LONGEST;
            assert_eq!(cooldown.allowance(now, 256), 1);
            cooldown.claimed(1);
            cooldown.settle(now, Signal::LocalFailure);
        }
        assert_eq!(cooldown.remaining(now), Some(LONGEST));

        // A probe whose transformation failed says nothing: another goes.
        now += LONGEST;
        assert_eq!(cooldown.allowance(now, 256), 1);
        cooldown.claimed(1);
        assert_eq!(cooldown.settle(now, Signal::Neither), Change::None);
        assert_eq!(cooldown.allowance(now, 256), 1);
        cooldown.claimed(1);

        // One that reached its receiver resumes dispatch, and the next
        // failure starts again from the first pause.
        assert_eq!(cooldown.settle(now, Signal::Sent), Change::Resumed);
        assert!(cooldown.running());
        assert_eq!(cooldown.allowance(now, 256), 256);
        assert_eq!(
            cooldown.settle(now, Signal::LocalFailure),
            Change::Paused(FIRST)
        );
    }
}
