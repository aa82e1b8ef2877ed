//! Limits on API requests, in this process's memory: the per-token request
//! rate (a token bucket per app-scoped token; the admin token is not
//! limited: it is the platform's own, sending events), and the share of the
//! request slots each app may hold at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_domain::{AppId, TokenId};

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

/// The API's request slots (`HERALD_MAX_CONCURRENT_REQUESTS`), shared
/// fairly: the requests of one app, however many tokens it holds, take at
/// most `per_app` of them, and the app-scoped requests together leave
/// `admin_reserve` to the admin token, so no tenant can crowd out the
/// others or the platform.
#[derive(Debug)]
pub struct RequestSlots {
    total: usize,
    per_app: usize,
    admin_reserve: usize,
    taken: Mutex<Taken>,
}

#[derive(Debug, Default)]
struct Taken {
    all: usize,
    by_app: HashMap<AppId, usize>,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Every slot open to this holder is taken.
    Full,
    /// The holder's app has its share in use.
    AppShare,
}

impl RequestSlots {
    /// `total` slots, `per_app` at most for one app, `admin_reserve` kept
    /// for the admin token (both clamped to make sense for `total`).
    pub fn new(total: usize, per_app: usize, admin_reserve: usize) -> Self {
        let total = total.max(1);
        let admin_reserve = admin_reserve.min(total - 1);
        Self {
            total,
            per_app: per_app.clamp(1, total - admin_reserve),
            admin_reserve,
            taken: Mutex::new(Taken::default()),
        }
    }

    /// The defaults for `total` slots: an eighth for one app (at least
    /// one), a tenth kept for the admin token.
    pub fn with_defaults(total: usize) -> Self {
        Self::new(total, total / 8, total / 10)
    }

    /// A slot for a request of `app` (`None`: the admin token), given back
    /// when the returned guard drops.
    pub fn take(self: &Arc<Self>, app: Option<AppId>) -> Result<Slot, NoSlot> {
        let mut taken = self.taken.lock().expect("request slots");
        match app {
            None => {
                if taken.all >= self.total {
                    return Err(NoSlot::Full);
                }
            }
            Some(app) => {
                if taken.all >= self.total - self.admin_reserve {
                    return Err(NoSlot::Full);
                }
                let held = taken.by_app.entry(app).or_default();
                if *held >= self.per_app {
                    return Err(NoSlot::AppShare);
                }
                *held += 1;
            }
        }
        taken.all += 1;
        Ok(Slot {
            slots: self.clone(),
            app,
        })
    }

    fn give_back(&self, app: Option<AppId>) {
        let mut taken = self.taken.lock().expect("request slots");
        taken.all -= 1;
        if let Some(app) = app {
            if let Some(held) = taken.by_app.get_mut(&app) {
                *held -= 1;
                if *held == 0 {
                    taken.by_app.remove(&app);
                }
            }
        }
    }
}

/// The memory message listings may hold at once, in pages of at most
/// [`PAGE_PAYLOAD_BYTES`] of payloads: [`LISTING_PAGES`] in the process,
/// [`LISTING_PAGES_PER_APP`] for one app, two kept for the admin token. A
/// page is held from its query until its last byte is written to the
/// client, so slow readers hold theirs, and past the bound the next
/// listing is refused (429 for the app's share, 503 when all are in use)
/// instead of growing memory with every reader.
pub fn listing_pages() -> RequestSlots {
    RequestSlots::new(LISTING_PAGES, LISTING_PAGES_PER_APP, 2)
}

/// One of the listing pages the process keeps in memory, for `caller`:
/// 429 beyond its app's share, 503 when all are in use.
pub(crate) fn listing_page(
    state: &crate::AppState,
    caller: crate::auth::Principal,
) -> Result<Slot, crate::error::ApiError> {
    Ok(state.listing_pages.take(caller.app())?)
}

/// The payload bytes one page of a message listing holds at most (it ends
/// after the message that reaches this; a message is at most the body
/// limit).
pub const PAGE_PAYLOAD_BYTES: usize = 4 << 20;
/// Message-listing pages in memory at once, in the process.
pub const LISTING_PAGES: usize = 16;
/// Of those, the most one app's listings may hold.
pub const LISTING_PAGES_PER_APP: usize = 4;

/// One request slot, held while the request runs.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<RequestSlots>,
    app: Option<AppId>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(self.app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_app_takes_at_most_its_share_and_the_admin_keeps_a_reserve() {
        let slots = Arc::new(RequestSlots::new(10, 4, 2));
        let (greedy, other) = (AppId::generate(), AppId::generate());

        let held: Vec<Slot> = (0..4).map(|_| slots.take(Some(greedy)).unwrap()).collect();
        assert_eq!(
            slots.take(Some(greedy)).unwrap_err(),
            NoSlot::AppShare,
            "a fifth request of the same app"
        );
        let others: Vec<Slot> = (0..4).map(|_| slots.take(Some(other)).unwrap()).collect();
        assert_eq!(
            slots.take(Some(AppId::generate())).unwrap_err(),
            NoSlot::Full,
            "apps together stop short of the admin's reserve"
        );
        let admin: Vec<Slot> = (0..2).map(|_| slots.take(None).unwrap()).collect();
        assert_eq!(
            slots.take(None).unwrap_err(),
            NoSlot::Full,
            "all ten in use"
        );

        drop(held);
        assert!(
            slots.take(Some(greedy)).is_ok(),
            "slots come back when requests end"
        );
        drop((others, admin));
    }

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
