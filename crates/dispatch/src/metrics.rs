//! Prometheus metrics (`/metrics`). One registry per running Herald, so that
//! several servers in one process (the tests) keep their own counts. The
//! counters are this process's; the queue, endpoint and pool gauges are read
//! from the store when scraped, so they are the same from every process.
//! No label carries an app, endpoint or URL: the numbers describe the
//! service, not its tenants.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use herald_domain::ErrorClass;
use herald_store::{EndpointGauge, PoolUsage, QueueGauges};

/// Attempt durations, in seconds: 5 ms to the longest timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    messages_accepted: IntCounter,
    attempts: IntCounterVec,
    attempt_duration: Histogram,
    retries_scheduled: IntCounter,
    deliveries_exhausted: IntCounter,
    manual_attempts: IntCounter,
    endpoints_auto_disabled: IntCounter,
    health_flushes_failed: IntCounter,
    dispatch_pauses: IntCounter,
    leases_ran_out: IntCounter,
    deliveries_claimed: IntCounter,
    deliveries_given_back: IntCounter,
    dispatch_paused: IntGauge,
    api_requests: IntCounterVec,
    queue: IntGaugeVec,
    endpoints: IntGaugeVec,
    db_connections: IntGaugeVec,
    db_max_connections: IntGauge,
    db_queued_writes: IntGauge,
    endpoint_failures: IntGaugeVec,
    endpoint_disabled: IntGaugeVec,
    /// Endpoint filters' decisions, brought up to the process's counts at
    /// each scrape.
    filters: IntCounterVec,
    /// The store's counts from the last scrape, reused for a second: the
    /// route needs no token, so scrapes in a loop must not become queries
    /// in a loop.
    store_cache: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, StoreSnapshot)>>>,
}

/// What a scrape reads from the store.
#[derive(Debug, Clone)]
pub struct StoreSnapshot {
    pub queue: QueueGauges,
    /// With per-endpoint series on.
    pub endpoints: Option<std::sync::Arc<[EndpointGauge]>>,
}

/// How long the store's counts are reused between scrapes.
const QUEUE_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// What one attempt came to, for the counters.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRecord {
    pub error: Option<ErrorClass>,
    pub duration: std::time::Duration,
    pub manual: bool,
    pub retry_scheduled: bool,
    pub exhausted: bool,
}

impl Metrics {
    /// A fresh registry; `version` labels `herald_build_info`.
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let messages_accepted = counter(
            "herald_messages_accepted_total",
            "Messages stored (not counting eventId duplicates and idempotent replays).",
        );
        let retries_scheduled = counter(
            "herald_retries_scheduled_total",
            "Failed attempts after which another attempt was scheduled.",
        );
        let deliveries_exhausted = counter(
            "herald_deliveries_exhausted_total",
            "Deliveries that failed for good: retries exhausted or the endpoint answered 410.",
        );
        let manual_attempts = counter(
            "herald_manual_attempts_total",
            "Attempts asked for by hand (resend, recover, test events).",
        );
        let endpoints_auto_disabled = counter(
            "herald_endpoints_auto_disabled_total",
            "Endpoints this process disabled because every attempt failed.",
        );
        let health_flushes_failed = counter(
            "herald_health_flushes_failed_total",
            "Seconds of endpoint-health counts this process could not add to the store after three tries (the attempt log still holds the attempts).",
        );
        let dispatch_pauses = counter(
            "herald_dispatch_pauses_total",
            "Times this process paused claiming deliveries because Herald itself failed to send one (class local: descriptors, memory, local ports).",
        );
        let leases_ran_out = counter(
            "herald_leases_ran_out_total",
            "Deliveries not sent because they waited in this process until their lease could no longer cover an attempt (left to the next claim; a sign of overload).",
        );
        let deliveries_claimed = counter(
            "herald_deliveries_claimed_total",
            "Due deliveries this process leased from the store (retries, backlog, work given back); fresh deliveries sent at once are not counted.",
        );
        let deliveries_given_back = counter(
            "herald_deliveries_given_back_total",
            "Leased deliveries this process gave back to the store unsent because their endpoint's share here was full (each costs a write; many mean claims and endpoints' room disagree).",
        );
        let dispatch_paused = IntGauge::new(
            "herald_dispatch_paused",
            "1 while this process's claims are paused after Herald's own failure (until a probe delivery goes out).",
        )
        .expect("valid metric");
        let attempts = IntCounterVec::new(
            Opts::new(
                "herald_attempts_total",
                "Delivery attempts by outcome (success, failure) and error class (none for successes).",
            ),
            &["outcome", "error_class"],
        )
        .expect("valid metric");
        let attempt_duration = Histogram::with_opts(
            HistogramOpts::new(
                "herald_attempt_duration_seconds",
                "From the start of an attempt to its answer or error.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let filters = IntCounterVec::new(
            Opts::new(
                "herald_filter_evaluations_total",
                "Endpoint filters evaluated when messages were written, by outcome: passed, filtered_out, failed (a CEL error), stopped (its cost budget or deadline); failed and stopped keep the message from the endpoint.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let api_requests = IntCounterVec::new(
            Opts::new(
                "herald_http_requests_total",
                "Requests answered by the API and portal, by status class (2xx, 4xx, 5xx …).",
            ),
            &["class"],
        )
        .expect("valid metric");
        let queue = IntGaugeVec::new(
            Opts::new(
                "herald_queue_deliveries",
                "Pending deliveries: due now, or scheduled later (retries waiting, attempts in flight).",
            ),
            &["state"],
        )
        .expect("valid metric");
        let endpoints = IntGaugeVec::new(
            Opts::new(
                "herald_endpoints",
                "Endpoints disabled, and endpoints whose latest attempt failed.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let db_connections = IntGaugeVec::new(
            Opts::new(
                "herald_db_connections",
                "Database connections of this process, idle or in use.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let db_max_connections = IntGauge::new(
            "herald_db_max_connections",
            "The database pool's size limit.",
        )
        .expect("valid metric");
        let db_queued_writes = IntGauge::new(
            "herald_db_queued_writes",
            "Writes waiting for the SQLite writer thread, or for PostgreSQL's group-commit writers (messages, attempts, give-backs).",
        )
        .expect("valid metric");
        let endpoint_failures = IntGaugeVec::new(
            Opts::new(
                "herald_endpoint_consecutive_failures",
                "Attempts failed in a row at each endpoint (HERALD_METRICS_PER_ENDPOINT).",
            ),
            &["app_id", "endpoint_id"],
        )
        .expect("valid metric");
        let endpoint_disabled = IntGaugeVec::new(
            Opts::new(
                "herald_endpoint_disabled",
                "1 for a disabled endpoint (HERALD_METRICS_PER_ENDPOINT).",
            ),
            &["app_id", "endpoint_id"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new("herald_build_info", "Always 1; labelled with the version."),
            &["version"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[version]).set(1);
        for collector in [
            Box::new(attempts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(attempt_duration.clone()),
            Box::new(api_requests.clone()),
            Box::new(queue.clone()),
            Box::new(endpoints.clone()),
            Box::new(db_connections.clone()),
            Box::new(db_max_connections.clone()),
            Box::new(db_queued_writes.clone()),
            Box::new(dispatch_paused.clone()),
            Box::new(build_info),
            Box::new(endpoint_failures.clone()),
            Box::new(endpoint_disabled.clone()),
            Box::new(filters.clone()),
        ] {
            registry.register(collector).expect("registered once");
        }
        Self {
            registry,
            messages_accepted,
            attempts,
            attempt_duration,
            retries_scheduled,
            deliveries_exhausted,
            manual_attempts,
            endpoints_auto_disabled,
            health_flushes_failed,
            dispatch_pauses,
            leases_ran_out,
            deliveries_claimed,
            deliveries_given_back,
            dispatch_paused,
            api_requests,
            queue,
            endpoints,
            db_connections,
            db_max_connections,
            db_queued_writes,
            endpoint_failures,
            endpoint_disabled,
            filters,
            store_cache: Default::default(),
        }
    }

    /// What the last scrape read from the store, if under a second ago.
    pub fn recent_snapshot(&self) -> Option<StoreSnapshot> {
        let cache = self.store_cache.lock().expect("store cache");
        cache
            .as_ref()
            .filter(|(at, _)| at.elapsed() < QUEUE_CACHE)
            .map(|(_, snapshot)| snapshot.clone())
    }

    pub fn remember_snapshot(&self, snapshot: StoreSnapshot) {
        *self.store_cache.lock().expect("store cache") =
            Some((std::time::Instant::now(), snapshot));
    }

    pub fn message_accepted(&self) {
        self.messages_accepted.inc();
    }

    pub fn attempt(&self, record: AttemptRecord) {
        let (outcome, class) = match record.error {
            None => ("success", "none"),
            Some(class) => ("failure", class.as_str()),
        };
        self.attempts.with_label_values(&[outcome, class]).inc();
        self.attempt_duration.observe(record.duration.as_secs_f64());
        if record.manual {
            self.manual_attempts.inc();
        }
        if record.retry_scheduled {
            self.retries_scheduled.inc();
        }
        if record.exhausted {
            self.deliveries_exhausted.inc();
        }
    }

    /// Claims paused (`true`: a pause began) or resumed.
    pub fn dispatch_paused(&self, paused: bool) {
        if paused {
            self.dispatch_pauses.inc();
        }
        self.dispatch_paused.set(i64::from(paused));
    }

    pub fn lease_ran_out(&self) {
        self.leases_ran_out.inc();
    }

    pub fn deliveries_claimed(&self, count: usize) {
        self.deliveries_claimed.inc_by(count as u64);
    }

    pub fn delivery_given_back(&self) {
        self.deliveries_given_back.inc();
    }

    pub fn health_flush_failed(&self) {
        self.health_flushes_failed.inc();
    }

    pub fn endpoint_auto_disabled(&self) {
        self.endpoints_auto_disabled.inc();
    }

    /// Counts an answer by its status class.
    pub fn http_response(&self, status: u16) {
        const CLASSES: [&str; 6] = ["1xx", "1xx", "2xx", "3xx", "4xx", "5xx"];
        let class = CLASSES.get(usize::from(status / 100)).unwrap_or(&"5xx");
        self.api_requests.with_label_values(&[class]).inc();
    }

    /// The text exposition (format 0.0.4), with the store's gauges as given;
    /// per-endpoint series only when `endpoints` is given (a family with no
    /// series is left out of the text).
    pub fn render(
        &self,
        queue: QueueGauges,
        pool: PoolUsage,
        endpoints: Option<&[EndpointGauge]>,
    ) -> String {
        self.endpoint_failures.reset();
        self.endpoint_disabled.reset();
        for endpoint in endpoints.unwrap_or_default() {
            let labels = [
                endpoint.app_id.to_string(),
                endpoint.endpoint_id.to_string(),
            ];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            self.endpoint_failures
                .with_label_values(&labels)
                .set(i64::try_from(endpoint.consecutive_failures).unwrap_or(i64::MAX));
            self.endpoint_disabled
                .with_label_values(&labels)
                .set(i64::from(endpoint.disabled));
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue.with_label_values(&["due"]).set(gauge(queue.due));
        self.queue
            .with_label_values(&["scheduled"])
            .set(gauge(queue.scheduled));
        self.endpoints
            .with_label_values(&["disabled"])
            .set(gauge(queue.disabled_endpoints));
        self.endpoints
            .with_label_values(&["failing"])
            .set(gauge(queue.failing_endpoints));
        self.db_connections
            .with_label_values(&["idle"])
            .set(gauge(pool.idle));
        self.db_connections
            .with_label_values(&["in_use"])
            .set(gauge(pool.connections.saturating_sub(pool.idle)));
        self.db_max_connections.set(gauge(pool.max));
        let counts = herald_domain::expr::filter_counts();
        for (outcome, total) in [
            ("passed", counts.passed),
            ("filtered_out", counts.filtered_out),
            ("failed", counts.failed),
            ("stopped", counts.stopped),
        ] {
            let counter = self.filters.with_label_values(&[outcome]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.db_queued_writes.set(gauge(pool.queued_writes));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}
