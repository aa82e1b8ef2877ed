//! The per-token request rate limit: a token bucket per app-scoped token,
//! in this process's memory (each process keeps the rate for itself). The
//! admin token is not limited: it is the platform's own, sending events.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_domain::TokenId;

/// Requests per second per app-scoped token, with a burst of one second's
/// worth.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<TokenId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets untouched this long are forgotten (they would be full anyway).
const IDLE: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token`'s bucket, or says how long until one
    /// is available.
    pub fn take(&self, token: TokenId, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.updated) < IDLE);
        }
        let bucket = buckets.entry(token).or_insert(Bucket {
            tokens: self.per_second,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.per_second);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_holds() {
        let limiter = RateLimiter::new(10);
        let token = TokenId::generate();
        let start = Instant::now();
        for n in 0..10 {
            assert!(
                limiter.take(token, start).is_ok(),
                "request {n} of the burst"
            );
        }
        let wait = limiter.take(token, start).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(limiter
            .take(token, start + Duration::from_millis(100))
            .is_ok());
        // Another token has its own bucket.
        assert!(limiter.take(TokenId::generate(), start).is_ok());
    }
}
