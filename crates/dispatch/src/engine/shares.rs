//! Each endpoint's share of the dispatcher: at most so many deliveries in
//! flight to it (as many again waiting), the rest left in the database
//! (claims and new messages take no more than the room left: see
//! [`Dispatcher::room`]); and its pace, when it has a rate limit. An endpoint that
//! answers quickly may borrow idle slots past its share while more than
//! half of them are free: the share is there so a slow endpoint cannot
//! starve the others, not to hold a fast one to `share / round trip` when
//! nobody else wants the room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::Body;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use herald_store::{DeliveryJob, SendSlot, Timestamp};

use super::{now_ms, Dispatcher};

impl Dispatcher {
    /// Sends `job` when its endpoint has a free per-endpoint slot; otherwise
    /// it waits in the endpoint's queue (as long as the limit again, keeping
    /// its global slot), and past that goes back to the database still due,
    /// for a later claim.
    pub(super) fn start(
        self: &Arc<Self>,
        job: DeliveryJob,
        body: Body,
        permit: OwnedSemaphorePermit,
        span: tracing::Span,
    ) {
        let limit = self.endpoint_limit(job.endpoint.rate_limit);
        let decision = {
            let mut per_endpoint = self.per_endpoint.lock().expect("per-endpoint load");
            let load = per_endpoint.entry(job.endpoint.id).or_default();
            load.limit = limit;
            load.paced = job.endpoint.rate_limit.is_some_and(|rate| rate > 0);
            let job_endpoint = job.endpoint.id;
            let decision =
                if load.in_flight < limit || (load.may_borrow() && self.has_spare_slots()) {
                    load.in_flight += 1;
                    Admission::Send(Waiting(job, body, permit, span))
                } else if load.waiting.len() < limit {
                    load.waiting.push_back(Waiting(job, body, permit, span));
                    Admission::Queued
                } else {
                    Admission::GiveBack(job)
                };
            self.note_room(job_endpoint, load);
            decision
        };
        let this = self.clone();
        match decision {
            Admission::Send(first) => {
                self.tasks
                    .spawn(async move { this.run_for_endpoint(first).await });
            }
            Admission::Queued => {}
            Admission::GiveBack(job) => {
                self.config.metrics.delivery_given_back();
                self.tasks.spawn(async move {
                    if let Err(error) = this.store.release(&job).await {
                        // The lease runs out instead; the delivery is only later.
                        tracing::warn!(%error, "releasing a deferred delivery failed");
                    }
                });
            }
        }
    }

    /// How many more jobs `load`'s endpoint takes here without giving any
    /// back (as [`Dispatcher::start`] admits them): one that may borrow
    /// while slots are `spare` takes a claim's worth.
    pub(super) fn room_of(&self, load: &EndpointLoad, spare: bool) -> usize {
        if spare && load.may_borrow() {
            self.config.claim_batch
        } else {
            load.room()
        }
    }

    /// The last moment an attempt of `job` may start: one started later
    /// could outlast its lease.
    fn latest_start(&self, job: &DeliveryJob) -> Timestamp {
        job.lease_until - self.config.timeout.as_millis() as i64
    }

    /// More than half of the global slots are free: nobody is short of one,
    /// and an endpoint that answers quickly may go past its share.
    pub(super) fn has_spare_slots(&self) -> bool {
        self.slots.available_permits() > self.config.max_in_flight / 2
    }

    /// Deliveries one endpoint may have in flight here (and as many again
    /// waiting). With a rate limit, no more than it can send well within a
    /// lease: everything held in memory must be attempted before its lease
    /// runs out, or another worker would send it too.
    fn endpoint_limit(&self, rate: Option<u32>) -> usize {
        let limit = self.config.max_in_flight_per_endpoint;
        match rate {
            Some(rate) if rate > 0 => {
                let margin = self
                    .config
                    .lease
                    .saturating_sub(self.config.timeout + Duration::from_secs(2));
                let budget = margin.as_secs_f64() * f64::from(rate) / 2.0;
                limit.min((budget as usize).max(1))
            }
            _ => limit,
        }
    }

    /// With a rate limit, waits for the endpoint's next send time: on a
    /// store shared by processes (PostgreSQL) the slot is reserved in the
    /// database, so the limit holds across all of them; on SQLite this
    /// process's own schedule is the only one. `Err(at)`: no slot before the
    /// job's lease would run out; give it back, due `at`, when one frees.
    async fn pace(&self, job: &DeliveryJob) -> Result<(), Timestamp> {
        let Some(rate) = job.endpoint.rate_limit.filter(|r| *r > 0) else {
            return Ok(());
        };
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let now = now_ms();
        // The attempt must end within the lease: start by its latest
        // start, less a margin.
        let deadline = self.latest_start(job) - 2_000;
        let interval_ms = (interval.as_millis() as i64).max(1);
        match self
            .store
            .reserve_send(job.endpoint.id, interval_ms, now, deadline)
            .await
        {
            Ok(SendSlot::At(at)) => {
                let wait = (at - now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                return Ok(());
            }
            Ok(SendSlot::NotBefore(at)) => return Err(at),
            Ok(SendSlot::Local) => {}
            Err(error) => {
                // Paced here alone rather than not sent.
                tracing::warn!(%error, endpoint = %job.endpoint.id, "reserving a send slot failed");
            }
        }
        let at = {
            let mut per_endpoint = self.per_endpoint.lock().expect("per-endpoint load");
            let Some(load) = per_endpoint.get_mut(&job.endpoint.id) else {
                return Ok(());
            };
            let now = Instant::now();
            let at = load.next_send.map_or(now, |next| next.max(now));
            load.next_send = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
        Ok(())
    }

    /// Delivers `job` once its endpoint's pace allows; gives it back when
    /// no slot frees within its lease. Returns what [`Dispatcher::deliver`]
    /// does (`None` when nothing was sent).
    async fn paced_delivery(
        self: &Arc<Self>,
        job: DeliveryJob,
        body: Body,
        permit: OwnedSemaphorePermit,
    ) -> Option<Option<Duration>> {
        match self.pace(&job).await {
            Ok(()) => self.deliver(&job, body, permit).await,
            Err(free_at) => {
                // Other processes hold the endpoint's slots until past this
                // lease: back to the database, due when one frees.
                if let Err(error) = self.store.release_until(&job, free_at).await {
                    tracing::warn!(%error, "giving back a paced delivery failed");
                }
                None
            }
        }
    }

    /// Delivers `job`, then the endpoint's waiting jobs one after another on
    /// the same per-endpoint slot, then gives the slot back.
    pub(super) async fn run_for_endpoint(self: Arc<Self>, first: Waiting) {
        use tracing::Instrument;
        let endpoint = first.0.endpoint.id;
        let mut next = Some(first);
        while let Some(Waiting(job, body, permit, span)) = next.take() {
            let answered = if now_ms() > self.latest_start(&job) {
                // It waited here (for a slot, behind its endpoint's queue)
                // until its lease can no longer cover an attempt: once the
                // lease runs out another claim (of any process) may take
                // it, and sending it now could deliver it twice. Left to
                // that claim (the permit drops); it is due when the lease
                // ends.
                tracing::debug!(message = %job.message.id, endpoint = %job.endpoint.id, "lease too short for an attempt; left to the next claim");
                self.config.metrics.lease_ran_out();
                None
            } else {
                self.paced_delivery(job, body, permit)
                    .instrument(span)
                    .await
            };
            let mut per_endpoint = self.per_endpoint.lock().expect("per-endpoint load");
            let Some(load) = per_endpoint.get_mut(&endpoint) else {
                break;
            };
            if let Some(answer) = answered {
                load.observe(answer);
            }
            next = load.waiting.pop_front();
            if next.is_none() {
                let was_saturated = load.in_flight >= load.limit;
                load.in_flight -= 1;
                self.note_room(endpoint, load);
                // A rate-limited endpoint's pace outlives its last attempt.
                let paced = load.next_send.is_some_and(|at| at > Instant::now());
                if load.in_flight == 0 && !paced && load.answer_ms.is_none() {
                    per_endpoint.remove(&endpoint);
                } else if per_endpoint.len() > KEPT_IDLE {
                    // Idle endpoints' answer times are kept for their next
                    // burst, up to so many; past it they are all forgotten.
                    let now = Instant::now();
                    per_endpoint.retain(|_, load| {
                        load.in_flight > 0 || load.next_send.is_some_and(|at| at > now)
                    });
                }
                drop(per_endpoint);
                if was_saturated {
                    // Work left in the database for this endpoint can be
                    // claimed again.
                    self.wake.notify_one();
                }
                break;
            }
            self.note_room(endpoint, load);
            if load.waiting.len() == load.limit / 2 {
                // Half its queue is free again: room for a claim worth
                // making, made while the other half keeps its slots busy.
                drop(per_endpoint);
                self.wake.notify_one();
            }
        }
    }

    /// Keeps the set of endpoints with no room here (see
    /// [`Dispatcher::room`]) up to date after `load` changed: those whose
    /// next job [`Dispatcher::start`] would give back. One that may borrow
    /// has room while slots are spare; that is judged at each change of
    /// its load, which for an endpoint busy enough to fill is often.
    fn note_room(&self, endpoint: herald_domain::EndpointId, load: &mut EndpointLoad) {
        let full = self.room_of(load, self.has_spare_slots()) == 0;
        if full != load.full {
            load.full = full;
            let mut set = self.full.lock().expect("full endpoints");
            let set = Arc::make_mut(&mut set);
            if full {
                set.insert(endpoint);
            } else {
                set.remove(&endpoint);
            }
        }
    }
}

/// What happens to a job given to [`Dispatcher::start`].
enum Admission {
    Send(Waiting),
    Queued,
    /// The endpoint's share is full: back to the database (the global slot
    /// is freed as the permit drops).
    GiveBack(DeliveryJob),
}

/// A job with its body, its global slot and the span it was started in.
#[derive(Debug)]
pub(super) struct Waiting(DeliveryJob, Body, OwnedSemaphorePermit, tracing::Span);

/// Per-endpoint share of the dispatcher: attempts in flight and jobs
/// waiting for one of them to end.
#[derive(Debug, Default)]
pub(super) struct EndpointLoad {
    pub(super) in_flight: usize,
    waiting: VecDeque<Waiting>,
    /// Deliveries in flight at once, at most (as many again may wait),
    /// unless the endpoint may borrow.
    pub(super) limit: usize,
    /// With a rate limit: when the next attempt may start.
    next_send: Option<Instant>,
    /// The endpoint has a rate limit: its share is what it may send within
    /// a lease, never more.
    paced: bool,
    /// In the dispatcher's set of endpoints with no room.
    full: bool,
    /// Moving average of its answers' times (ms) since its last failure;
    /// `None` before a first answer or after a failure.
    answer_ms: Option<f64>,
}

/// Idle endpoints whose answer times are remembered, at most.
const KEPT_IDLE: usize = 4096;

/// An endpoint whose answers take less than this on average (and the last
/// one a success) counts as quick: it turns its slots over fast enough that
/// more of them cost the others nothing.
const QUICK_ANSWER_MS: f64 = 250.0;

impl EndpointLoad {
    /// May go past its share while slots are spare.
    pub(super) fn may_borrow(&self) -> bool {
        !self.paced && self.answer_ms.is_some_and(|ms| ms < QUICK_ANSWER_MS)
    }

    /// Deliveries it can take now without giving any back: free slots and
    /// free places in its queue (an endpoint that borrowed slots past its
    /// share still has its queue).
    pub(super) fn room(&self) -> usize {
        self.limit.saturating_sub(self.in_flight) + self.limit.saturating_sub(self.waiting.len())
    }

    /// Takes in one attempt's answer: `Some(time)` for a success, `None` for
    /// a failure (an error status, a timeout, no connection).
    fn observe(&mut self, answer: Option<Duration>) {
        self.answer_ms = answer.map(|time| {
            let ms = time.as_secs_f64() * 1000.0;
            self.answer_ms
                .map_or(ms, |average| 0.9 * average + 0.1 * ms)
        });
    }
}
