//! The dispatcher: a loop around [`Dispatcher::try_dispatch_due`], plus the
//! fast path that sends deliveries the API has just committed and leased.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use herald_domain::{
    AddressPolicy, AppId, AttemptId, DeliveryStatus, EndpointId, ErrorClass, RetrySchedule, Trigger,
};
use herald_store::{
    Attempt, AttemptOutcome, AutoDisable, Claim, DeliveryJob, HealthUpdate, NextStep, Room, Store,
    Timestamp,
};

use crate::alerts::{AlertConfig, EmailConfig, Mailer};
use crate::http::{build_body, endpoint_body, transformed_body, HttpSender, SendResult};
use crate::metrics::{AttemptRecord, Metrics};

mod cooldown;
mod health;
mod shares;
use cooldown::{Change, Cooldown, Signal};
use shares::EndpointLoad;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub retry_schedule: RetrySchedule,
    /// Per-attempt timeout (default 15 s).
    pub timeout: Duration,
    /// How long a claimed delivery stays ours before others may take it.
    pub lease: Duration,
    /// Deliveries queued or in flight at once, at most.
    pub max_in_flight: usize,
    /// Deliveries in flight to one endpoint at once, at most: a slow or
    /// timing-out endpoint can hold no more slots than this, so the others
    /// keep theirs.
    pub max_in_flight_per_endpoint: usize,
    /// Deliveries claimed per store round trip.
    pub claim_batch: usize,
    /// Longest idle wait between looks at the store (lease expiries need a look).
    pub idle_poll: Duration,
    /// Response body bytes kept in the attempt log.
    pub response_limit: usize,
    /// How often the health counts gathered in memory are added to the
    /// store's aggregates.
    pub health_flush: Duration,
    /// Disable endpoints whose every attempt has failed this long (and at
    /// least so many times); `None` never does.
    pub auto_disable: Option<AutoDisable>,
    /// Raise operational events (failure notifications); `None` never does.
    pub alerts: Option<AlertConfig>,
    /// Also e-mail each new operational event.
    pub email: Option<EmailConfig>,
    pub policy: AddressPolicy,
    /// Resolver, proxy and source address of deliveries.
    pub network: crate::http::Network,
    /// Where attempts are counted (shared with the API's `/metrics`).
    pub metrics: Arc<Metrics>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            retry_schedule: RetrySchedule::default(),
            timeout: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            max_in_flight: 4096,
            max_in_flight_per_endpoint: 64,
            claim_batch: 256,
            idle_poll: Duration::from_secs(5),
            response_limit: 4096,
            health_flush: Duration::from_secs(1),
            auto_disable: Some(AutoDisable {
                after: 5 * 24 * 3_600_000,
                min_attempts: 10,
            }),
            alerts: None,
            email: None,
            policy: AddressPolicy::default(),
            network: crate::http::Network::default(),
            metrics: Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))),
        }
    }
}

/// What one dispatch step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// This many deliveries were claimed and handed to senders.
    Claimed(usize),
    /// Every slot is busy; nothing was claimed.
    Saturated,
    /// Herald's own resources failed a delivery: claims wait for the
    /// cool-down (see `cooldown`).
    Paused,
}

#[derive(Debug)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    config: DispatchConfig,
    sender: HttpSender,
    /// One permit per delivery queued or in flight.
    slots: Arc<Semaphore>,
    /// Rung when the store may hold new due work (retry scheduled, slot freed).
    wake: Notify,
    /// Deliveries in flight, and waiting their turn, per endpoint.
    per_endpoint: Mutex<HashMap<EndpointId, EndpointLoad>>,
    /// The endpoints in `per_endpoint` with no room left (shared with each
    /// new message's claim: their deliveries are left for later claims;
    /// and left out of the next due time). Locked after `per_endpoint`
    /// when both are.
    full: Mutex<Arc<std::collections::HashSet<EndpointId>>>,
    /// Attempt outcomes per endpoint not yet added to the stored health
    /// aggregates (one write per endpoint and flush, not per attempt).
    health: Mutex<HashMap<EndpointId, HealthUpdate>>,
    mailer: Option<Arc<Mailer>>,
    /// Endpoints whose success-rate drop is open (seen by this process).
    rate_drops: Mutex<std::collections::HashSet<EndpointId>>,
    /// Pauses claims after Herald's own failures.
    cooldown: Mutex<Cooldown>,
    tasks: TaskTracker,
}

fn now_ms() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Dispatcher {
    /// Fails only on an unusable e-mail configuration.
    pub fn new(store: Arc<dyn Store>, config: DispatchConfig) -> Result<Arc<Self>, String> {
        let sender = HttpSender::new(
            config.policy.clone(),
            config.timeout,
            config.response_limit,
            &config.network,
        )?;
        let mailer = config
            .email
            .as_ref()
            .map(Mailer::new)
            .transpose()?
            .map(Arc::new);
        Ok(Arc::new(Self {
            mailer,
            rate_drops: Mutex::new(std::collections::HashSet::new()),
            cooldown: Mutex::new(Cooldown::new()),
            store,
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            sender,
            config,
            wake: Notify::new(),
            per_endpoint: Mutex::new(HashMap::new()),
            full: Mutex::default(),
            health: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        }))
    }

    /// A lease for deliveries the API is about to create, when this process
    /// has room to send them now; `None` leaves them to be claimed later.
    pub fn claim_for_new_work(&self) -> Option<Claim> {
        if self.tasks.is_closed()
            || self.slots.available_permits() == 0
            || !self.cooldown.lock().expect("cool-down").running()
        {
            return None;
        }
        let now = now_ms();
        Some(Claim {
            now,
            until: now + self.config.lease.as_millis() as i64,
            full: self.full.lock().expect("full endpoints").clone(),
        })
    }

    /// Starts the deliveries of a message just created: the `jobs` leased
    /// to this process are sent at once and, when some were left unleased
    /// for a claim to take now (`for_claims`: strictly ordered endpoints),
    /// the claim loop is woken for them rather than left to its next poll.
    pub fn start_created(self: &Arc<Self>, jobs: Vec<DeliveryJob>, for_claims: usize) {
        if for_claims > 0 {
            self.nudge();
        }
        self.submit(jobs);
    }

    /// Sends jobs leased to this process (fresh messages, manual resends).
    /// Their log lines carry the caller's span (the API request's id).
    pub fn submit(self: &Arc<Self>, jobs: Vec<DeliveryJob>) {
        let span = tracing::Span::current();
        for (job, body) in with_bodies(jobs) {
            let span = span.clone();
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => self.start(job, body, permit, span),
                Err(_) => {
                    // Room was there when the lease was taken; wait for it.
                    let this = self.clone();
                    self.tasks.spawn(async move {
                        if let Ok(permit) = this.slots.clone().acquire_owned().await {
                            this.start(job, body, permit, span);
                        }
                    });
                }
            }
        }
    }

    /// Claims due deliveries up to the free capacity and starts sending them.
    pub async fn try_dispatch_due(
        self: &Arc<Self>,
    ) -> Result<StepOutcome, herald_store::StoreError> {
        let free = self.slots.available_permits().min(self.config.claim_batch);
        if free == 0 {
            return Ok(StepOutcome::Saturated);
        }
        let free = self
            .cooldown
            .lock()
            .expect("cool-down")
            .allowance(std::time::Instant::now(), free);
        if free == 0 {
            return Ok(StepOutcome::Paused);
        }
        let Ok(mut permits) = self.slots.clone().try_acquire_many_owned(free as u32) else {
            return Ok(StepOutcome::Saturated);
        };
        let now = now_ms();
        let claim = Claim::new(now, now + self.config.lease.as_millis() as i64);
        let jobs = self.store.claim_due(claim, free, self.room()).await?;
        let claimed = jobs.len();
        self.config.metrics.deliveries_claimed(claimed);
        self.cooldown.lock().expect("cool-down").claimed(claimed);
        for (job, body) in with_bodies(jobs) {
            let permit = permits.split(1).expect("one permit per claimed job");
            self.start(job, body, permit, tracing::Span::none());
        }
        Ok(StepOutcome::Claimed(claimed))
    }

    /// Runs until `shutdown` fires, then waits for in-flight attempts to end.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let flusher = tokio::spawn(self.clone().flush_health_until(shutdown.clone()));
        while !shutdown.is_cancelled() {
            let step = self.try_dispatch_due().await;
            let paused = matches!(step, Ok(StepOutcome::Paused));
            let wait = match step {
                Ok(StepOutcome::Claimed(n)) if n > 0 && n == self.config.claim_batch => continue,
                // Until the pause ends, or the probe settles (it rings
                // `wake`); new work in the store changes nothing meanwhile.
                Ok(StepOutcome::Paused) => self
                    .cooldown
                    .lock()
                    .expect("cool-down")
                    .remaining(std::time::Instant::now())
                    .unwrap_or(self.config.idle_poll),
                Ok(_) => self.time_until_next_due().await,
                Err(error) => {
                    tracing::warn!(%error, "claiming due deliveries failed; will retry");
                    self.time_until_next_due().await
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = self.store.wait_for_work(), if !paused => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
        flusher.await.ok();
        self.flush_health().await;
    }

    /// Checks a URL before an endpoint is saved: one signed POST of a
    /// `herald.url_check` event (with a throwaway secret), through the same
    /// address policy, resolver, proxy and TLS checks as deliveries. Nothing
    /// is stored.
    pub async fn check_url(
        &self,
        app: AppId,
        url: &herald_domain::EndpointUrl,
    ) -> crate::SendResult {
        let now = now_ms();
        let job = DeliveryJob {
            message: Arc::new(herald_store::Message {
                id: herald_domain::MessageId::generate(),
                app_id: app,
                event_id: None,
                event_type: herald_domain::EventTypeName::parse("herald.url_check")
                    .expect("a valid name"),
                payload: "{\"check\":true}".to_owned(),
                channels: None,
                created_at: now,
            }),
            endpoint: Arc::new(herald_store::EndpointTarget {
                id: EndpointId::generate(),
                url: url.clone(),
                headers: Default::default(),
                secrets: vec![herald_domain::Secret::generate()],
                retry_policy: None,
                rate_limit: None,
                strict_ordering: false,
                options: Default::default(),
            }),
            attempts_made: 0,
            trigger: Trigger::Manual,
            lease_until: now,
        };
        let body = crate::build_body(&job.message);
        self.sender.send(&job, &body, now / 1000).await
    }

    async fn time_until_next_due(&self) -> Duration {
        if self.slots.available_permits() == 0 {
            return self.config.idle_poll;
        }
        let full = self
            .full
            .lock()
            .expect("full endpoints")
            .iter()
            .copied()
            .collect();
        match self.store.next_due_at(full).await {
            Ok(Some(at)) => {
                let wait = (at - now_ms()).max(0) as u64;
                // A due row that could not be claimed (a race) must not spin the loop.
                Duration::from_millis(wait.max(10)).min(self.config.idle_poll)
            }
            Ok(None) => self.config.idle_poll,
            Err(error) => {
                tracing::warn!(%error, "reading the next due time failed");
                Duration::from_secs(1)
            }
        }
    }

    /// Makes the run loop look at the store now (new due work was queued).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Stops taking new work; `run` returns once in-flight attempts are done.
    pub fn close(&self) {
        self.tasks.close();
    }

    /// How many of each endpoint's deliveries a claim may take: as many as
    /// can be sent or queued here without giving any back (see
    /// [`Dispatcher::start`]). An endpoint with none left is left out; one
    /// that may borrow takes what the claim takes.
    fn room(&self) -> Room {
        let per_endpoint = self.per_endpoint.lock().expect("per-endpoint load");
        let spare = self.has_spare_slots();
        let otherwise = 2 * self.config.max_in_flight_per_endpoint;
        let limited = per_endpoint
            .iter()
            .map(|(endpoint, load)| (*endpoint, self.room_of(load, spare)))
            .filter(|(_, room)| *room != otherwise)
            .collect();
        Room {
            limited,
            otherwise: Some(otherwise),
        }
    }

    /// Sends `job` and has its outcome recorded. The endpoint's slot is free
    /// again when this returns, as soon as the receiver has answered: the
    /// outcome is written afterwards, in a batch with others, holding only
    /// the global slot. (Holding the endpoint's slot through the write made
    /// the write's latency the ceiling of one endpoint's throughput: 64
    /// slots over ~15 ms is ~4,000 deliveries/s, and past it deliveries went
    /// back to the database and collapsed the rate.) A strictly ordered
    /// endpoint's next delivery waits for the write: it is claimed only once
    /// this one is settled. Returns how the receiver answered: `Some(time
    /// it took)` on success, `Some(None)` on a failure, `None` when Herald
    /// itself failed (it says nothing of the receiver).
    async fn deliver(
        self: &Arc<Self>,
        job: &DeliveryJob,
        body: Body,
        permit: OwnedSemaphorePermit,
    ) -> Option<Option<Duration>> {
        let body = match body {
            Some(body) => body,
            None => transformed_body(job.message.clone(), job.endpoint.options.clone()).await,
        };
        let started_at = now_ms();
        let result = match &body {
            Ok(body) => self.sender.send(job, body, started_at / 1000).await,
            Err(why) => SendResult {
                status: 0,
                body: why.clone(),
                duration: Duration::ZERO,
                error: Some(ErrorClass::Transformation),
                retry_after: None,
            },
        };
        let answer = match result.error {
            Some(ErrorClass::Local | ErrorClass::Transformation) => None,
            _ => Some(result.succeeded().then_some(result.duration)),
        };
        let local_retry = self.settle_cooldown(&result);
        let outcome = self.outcome(job, &result, started_at, local_retry);
        let retry = matches!(outcome.next, NextStep::RetryAt(_));
        self.config.metrics.attempt(AttemptRecord {
            error: result.error,
            duration: result.duration,
            manual: job.trigger == Trigger::Manual,
            retry_scheduled: retry,
            exhausted: outcome.next == NextStep::Failed && job.trigger == Trigger::Scheduled,
        });
        // Herald's own resource failures are not the receiver's: they stay
        // out of its health, its run of failures and auto-disable.
        if result.error != Some(ErrorClass::Local) {
            let mut health = self.health.lock().expect("health counts");
            let update = health.entry(job.endpoint.id).or_insert_with(|| {
                let mut update = HealthUpdate::new(job.endpoint.id);
                update.app_id = Some(job.message.app_id);
                update.url = job.endpoint.url.to_string();
                update
            });
            update.observe(
                outcome.attempt.created_at,
                result.succeeded(),
                outcome.attempt.response_duration_ms,
            );
            if result.succeeded() {
                update.last_success_message = Some(job.message.id);
            } else {
                let event_type = &job.message.event_type;
                if !update.failed_types.contains(event_type) {
                    update.failed_types.insert(event_type.clone());
                }
                if outcome.next == NextStep::Failed && job.trigger == Trigger::Scheduled {
                    update
                        .exhausted
                        .entry(event_type.clone())
                        .or_insert(job.message.id);
                }
            }
            update.gone |= outcome.disable_endpoint;
        }
        let strict = job.endpoint.strict_ordering;
        let this = self.clone();
        let record = async move {
            let (message, endpoint) = (outcome.attempt.message_id, outcome.attempt.endpoint_id);
            if let Err(error) = this.store.record_attempt(outcome).await {
                // The lease runs out and the delivery is tried again: at least once.
                tracing::error!(%error, %message, %endpoint, "recording an attempt failed");
            }
            drop(permit);
            // A retry is due later; a strictly ordered endpoint's next message
            // may be due now.
            if retry || strict || this.slots.available_permits() == 1 {
                this.wake.notify_one();
            }
        };
        if strict {
            record.await;
        } else {
            use tracing::Instrument;
            self.tasks.spawn(record.in_current_span());
        }
        answer
    }

    /// Tells the cool-down what an attempt said of Herald's own resources;
    /// after a local failure, returns when that delivery is to be tried
    /// again (once the pause is over).
    fn settle_cooldown(&self, result: &SendResult) -> Option<Duration> {
        let signal = match result.error {
            Some(ErrorClass::Local) => Signal::LocalFailure,
            Some(ErrorClass::Transformation) => Signal::Neither,
            _ => Signal::Sent,
        };
        let now = std::time::Instant::now();
        let mut cooldown = self.cooldown.lock().expect("cool-down");
        match cooldown.settle(now, signal) {
            Change::Paused(pause) => {
                self.config.metrics.dispatch_paused(true);
                tracing::warn!(
                    error = %result.body,
                    pause_ms = pause.as_millis() as u64,
                    "Herald itself failed to send a delivery (class local); claims pause, then one delivery probes"
                );
            }
            Change::Resumed => {
                self.config.metrics.dispatch_paused(false);
                self.wake.notify_one();
                tracing::info!("a probe delivery went out; dispatch resumes");
            }
            Change::None => {}
        }
        (signal == Signal::LocalFailure).then(|| cooldown.retry_delay(now, rand::random::<f64>()))
    }

    fn outcome(
        &self,
        job: &DeliveryJob,
        result: &SendResult,
        started_at: Timestamp,
        local_retry: Option<Duration>,
    ) -> AttemptOutcome {
        let attempts_made = job.attempts_made + 1;
        let gone = result.status == 410;
        let next = if result.succeeded() {
            NextStep::Succeeded
        } else if let Some(delay) = local_retry {
            // Nothing reached the receiver: try again after the cool-down,
            // whatever the trigger, without spending one of the policy's
            // attempts.
            NextStep::RetryAt(now_ms() + delay.as_millis() as i64)
        } else if gone || job.trigger == Trigger::Manual {
            NextStep::Failed
        } else {
            let age = Duration::from_millis((now_ms() - job.message.created_at).max(0) as u64);
            let delay = match &job.endpoint.retry_policy {
                Some(policy) => policy.next_delay(attempts_made, age),
                None => self.config.retry_schedule.next_delay(attempts_made),
            };
            match delay {
                None => NextStep::Failed,
                Some(delay) => {
                    let delay = honour_retry_after(delay, result);
                    NextStep::RetryAt(now_ms() + delay.as_millis() as i64)
                }
            }
        };
        tracing::debug!(
            message_id = %job.message.id,
            endpoint_id = %job.endpoint.id,
            attempt = attempts_made,
            status = result.status,
            error = result.error.map_or("none", |class| class.as_str()),
            duration_ms = result.duration.as_millis() as u64,
            next = match next {
                NextStep::Succeeded => "done",
                NextStep::RetryAt(_) => "retry",
                NextStep::Failed => "failed",
            },
            "attempt"
        );
        AttemptOutcome {
            lease_until: job.lease_until,
            attempt: Attempt {
                id: AttemptId::generate(),
                app_id: job.message.app_id,
                message_id: job.message.id,
                endpoint_id: job.endpoint.id,
                url: job.endpoint.url.to_string(),
                status: if result.succeeded() {
                    DeliveryStatus::Succeeded
                } else {
                    DeliveryStatus::Failed
                },
                response_status_code: result.status,
                response: result.body.clone(),
                response_duration_ms: result.duration.as_millis() as u64,
                error_class: result.error,
                trigger: job.trigger,
                created_at: started_at,
            },
            next,
            disable_endpoint: gone,
        }
    }
}

/// What a job sends: its body, or why its endpoint's transformation failed;
/// `None` for an endpoint with a transformation, which is made when the job
/// is sent, off the runtime's worker threads ([`transformed_body`]).
pub(crate) type Body = Option<Result<Bytes, String>>;

/// Pairs each job with its body. The envelope is built once per message
/// however many endpoints it goes to (jobs of one message share one
/// `Arc<Message>`); a transformed or raw body is the endpoint's own.
fn with_bodies(jobs: Vec<DeliveryJob>) -> Vec<(DeliveryJob, Body)> {
    let mut built: Vec<(*const herald_store::Message, Bytes)> = Vec::new();
    jobs.into_iter()
        .map(|job| {
            if job.endpoint.options.transformation.is_some() {
                return (job, None);
            }
            let key = Arc::as_ptr(&job.message);
            let body = endpoint_body(&job.message, &job.endpoint.options, || {
                match built.iter().find(|(k, _)| *k == key) {
                    Some((_, body)) => body.clone(),
                    None => {
                        let body = build_body(&job.message);
                        built.push((key, body.clone()));
                        body
                    }
                }
            });
            (job, Some(body))
        })
        .collect()
}

/// A receiver's `Retry-After` (on 429 and 503) may push the next attempt
/// later, but never sooner than the schedule nor past twice its delay.
fn honour_retry_after(scheduled: Duration, result: &SendResult) -> Duration {
    match (result.status, result.retry_after) {
        (429 | 503, Some(asked)) => asked.clamp(scheduled, scheduled * 2),
        _ => scheduled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, retry_after: Option<u64>) -> SendResult {
        SendResult {
            status,
            body: String::new(),
            duration: Duration::ZERO,
            error: Some(herald_domain::ErrorClass::HttpStatus),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn retry_after_is_honoured_only_within_bounds() {
        let scheduled = Duration::from_secs(10);
        let cases = [
            (429, Some(15), 15, "inside the bounds"),
            (503, Some(1), 10, "never sooner than the schedule"),
            (429, Some(3600), 20, "at most twice the scheduled delay"),
            (500, Some(15), 10, "only on 429 and 503"),
            (429, None, 10, "no header"),
        ];
        for (status, asked, expected, why) in cases {
            assert_eq!(
                honour_retry_after(scheduled, &answered(status, asked)),
                Duration::from_secs(expected),
                "{why}"
            );
        }
    }
}
