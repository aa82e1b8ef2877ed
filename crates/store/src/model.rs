//! The records the store reads and writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use herald_domain::ids::Uid;
use herald_domain::{
    AppId, AttemptId, DeliveryStatus, EndpointId, EndpointUrl, ErrorClass, EventTypeName,
    FilterTypes, MessageId, RetryPolicy, Secret, TaskId, Trigger,
};
use serde_json::Value;

/// Unix time in milliseconds.
pub type Timestamp = i64;
pub type Metadata = BTreeMap<String, String>;
pub type Headers = BTreeMap<String, String>;

/// A page request: at most `limit` items after (or before) a cursor.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Cursor,
}

/// Where a page starts: the API's `iterator` is the last key of the previous
/// page; a leading `-` walks backwards (Svix's `prevIterator`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cursor {
    #[default]
    Start,
    After(String),
    Before(String),
}

impl Cursor {
    pub fn parse(iterator: Option<&str>) -> Self {
        match iterator {
            None | Some("") => Self::Start,
            Some(text) => match text.strip_prefix('-') {
                Some(before) => Self::Before(before.to_owned()),
                None => Self::After(text.to_owned()),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct App {
    pub id: AppId,
    pub uid: Option<Uid>,
    pub name: String,
    pub rate_limit: Option<u32>,
    pub metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct AppInput {
    pub uid: Option<Uid>,
    pub name: String,
    pub rate_limit: Option<u32>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone)]
pub struct EventType {
    pub name: EventTypeName,
    pub description: String,
    pub schemas: Option<Value>,
    pub archived: bool,
    pub deprecated: bool,
    pub feature_flag: Option<String>,
    pub group_name: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Messages must validate against the newest schema (else 422).
    pub enforce_schema: bool,
}

#[derive(Debug, Clone)]
pub struct EventTypeInput {
    pub name: EventTypeName,
    pub description: String,
    pub schemas: Option<Value>,
    pub archived: bool,
    pub deprecated: bool,
    pub feature_flag: Option<String>,
    pub group_name: Option<String>,
    pub enforce_schema: bool,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub app_id: AppId,
    pub uid: Option<Uid>,
    /// Parsed once, when read (the network policy applies when a URL is
    /// set, and at every send).
    pub url: EndpointUrl,
    pub description: String,
    pub disabled: bool,
    pub filter_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
    pub version: i32,
    pub metadata: Metadata,
    pub headers: Headers,
    /// `None`: the server's retry schedule.
    pub retry_policy: Option<RetryPolicy>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// `manual`, `gone` (it answered 410) or `failing` (automatic).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    /// The next message waits until the previous one succeeded or finally failed.
    pub strict_ordering: bool,
    /// Filter, transformation, raw payload and timeout.
    pub options: herald_domain::DeliveryOptions,
}

#[derive(Debug, Clone)]
pub struct EndpointInput {
    pub uid: Option<Uid>,
    pub url: EndpointUrl,
    pub description: String,
    pub disabled: bool,
    pub filter_types: FilterTypes,
    pub channels: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
    pub version: i32,
    pub metadata: Metadata,
    pub retry_policy: Option<RetryPolicy>,
    pub strict_ordering: bool,
    pub options: herald_domain::DeliveryOptions,
}

/// Svix's attempt stats: an endpoint's attempts in a window by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptStats {
    pub success: u64,
    pub fail: u64,
}

/// Svix's endpoint stats: deliveries of the endpoint by state.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointStats {
    pub success: u64,
    pub pending: u64,
    pub sending: u64,
    pub fail: u64,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    pub app_id: AppId,
    pub event_id: Option<Uid>,
    pub event_type: EventTypeName,
    /// The payload as JSON text, exactly as it will be sent in `data`.
    pub payload: String,
    pub channels: Option<Vec<String>>,
    pub created_at: Timestamp,
}

impl Message {
    /// The message as endpoint filters and transformations read it
    /// (`type`, `data`, `channels`, `eventId`, `timestamp`); fails when
    /// the payload is not JSON.
    pub fn subject(
        &self,
    ) -> Result<herald_domain::expr::Subject<'_>, herald_domain::expr::EvalError> {
        herald_domain::expr::Subject::new(
            self.event_type.as_str(),
            &self.payload,
            self.channels.as_deref(),
            self.event_id.as_ref().map(|id| id.as_str()),
            self.created_at,
        )
    }
}

/// A message as one endpoint has it: where its delivery there stands
/// (Svix's `EndpointMessageOut`).
#[derive(Debug, Clone)]
pub struct EndpointMessage {
    pub message: Message,
    /// `Sending` while leased to a worker.
    pub status: DeliveryStatus,
    /// When a pending delivery is due next.
    pub next_attempt: Option<Timestamp>,
}

/// The messages fanned out to one endpoint (Svix's attempted messages),
/// newest first: the message listing's filters, and the delivery's status.
#[derive(Debug, Clone)]
pub struct EndpointMessageQuery {
    pub endpoint: EndpointId,
    pub messages: MessageQuery,
    pub status: Option<DeliveryStatus>,
}

/// An endpoint a message was fanned out to, with where its delivery stands
/// (Svix's `MessageEndpointOut`).
#[derive(Debug, Clone)]
pub struct Destination {
    pub endpoint: Endpoint,
    /// `Sending` while leased to a worker.
    pub status: DeliveryStatus,
    /// When a pending delivery is due next.
    pub next_attempt: Option<Timestamp>,
}

/// A delivery to one endpoint that is not settled yet.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub message_id: MessageId,
    pub event_type: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// `Sending` while leased to a worker, else `Pending`.
    pub status: DeliveryStatus,
    /// When it is tried next (pending only).
    pub next_attempt: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct MessageInput {
    pub event_type: EventTypeName,
    pub event_id: Option<Uid>,
    /// Serialized JSON.
    pub payload: String,
    pub channels: Option<Vec<String>>,
    /// Send to this endpoint only, whatever its subscriptions, as one
    /// manual attempt without retries: a test event.
    pub to_endpoint: Option<EndpointId>,
    /// Endpoint filters already run on this message before it was handed
    /// to the store (off the writer); the writer runs only the others.
    pub filters: FilterDecisions,
    /// When its first attempts are due (Svix's `deliverAt`); `None`: at
    /// once. A delivery due later is never leased when it is written.
    pub deliver_at: Option<Timestamp>,
}

/// Endpoint filters decided for a message before it is written: by
/// endpoint, the filter's source and whether the message passes. A
/// decision counts only while the endpoint's filter is still that source.
#[derive(Debug, Clone, Default)]
pub struct FilterDecisions(pub Vec<(EndpointId, std::sync::Arc<str>, bool)>);

impl FilterDecisions {
    /// The decision for `endpoint` whose filter is `source`, if made.
    pub fn get(&self, endpoint: EndpointId, source: &str) -> Option<bool> {
        self.0
            .iter()
            .find(|(id, decided, _)| *id == endpoint && &**decided == source)
            .map(|(_, _, passes)| *passes)
    }
}

#[derive(Debug, Clone)]
pub struct CreatedMessage {
    pub message: Arc<Message>,
    /// Deliveries leased to the caller (empty unless a claim was given).
    pub jobs: Vec<DeliveryJob>,
    /// How many deliveries were created in all.
    pub deliveries: usize,
    /// How many of them were left unleased for a claim to take now: all
    /// without a claim, the strictly ordered ones with one (not those the
    /// claimant had no room for: it claims them when room frees).
    pub for_claims: usize,
}

#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub page: PageRequest,
    pub event_types: Vec<EventTypeName>,
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
    /// Only messages sent on this channel.
    pub channel: Option<String>,
    /// The page ends after the message that brings its payloads to this
    /// many bytes (one message at least); `None`: only `limit` bounds it.
    pub max_payload_bytes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: AttemptId,
    pub app_id: AppId,
    pub message_id: MessageId,
    pub endpoint_id: EndpointId,
    pub url: String,
    pub status: DeliveryStatus,
    /// 0 when no HTTP answer came.
    pub response_status_code: u16,
    pub response: String,
    pub response_duration_ms: u64,
    pub error_class: Option<ErrorClass>,
    pub trigger: Trigger,
    pub created_at: Timestamp,
}

/// Which attempts to list.
#[derive(Debug, Clone)]
pub enum AttemptFilter {
    Endpoint(EndpointId),
    Message(MessageId),
    /// Every attempt of the app, across its endpoints.
    App,
}

#[derive(Debug, Clone)]
pub struct AttemptQuery {
    pub filter: AttemptFilter,
    pub page: PageRequest,
    pub status: Option<DeliveryStatus>,
    /// 0 (no HTTP answer), 100, 200, 300, 400 or 500: the status code's hundred.
    pub status_code_class: Option<u16>,
    /// Only attempts of messages of these types.
    pub event_types: Vec<EventTypeName>,
    /// Attempts made before / at or after these times.
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
}

impl AttemptQuery {
    /// Every attempt under `filter`, newest first, one page.
    pub fn new(filter: AttemptFilter, page: PageRequest) -> Self {
        Self {
            filter,
            page,
            status: None,
            status_code_class: None,
            event_types: Vec::new(),
            before: None,
            after: None,
        }
    }
}

/// A lease on deliveries: who holds them may send them until `until`.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    pub now: Timestamp,
    pub until: Timestamp,
    /// Endpoints the claimant has no room for: a new message's deliveries
    /// to them are not leased but left due for a later claim (leased, they
    /// would only be given back, a second write each).
    pub full: Arc<HashSet<EndpointId>>,
}

impl Claim {
    pub fn new(now: Timestamp, until: Timestamp) -> Self {
        Self {
            now,
            until,
            full: Arc::default(),
        }
    }

    /// Whether a new delivery to `target` is leased with this claim: not
    /// when the claimant has no room for it, nor to a strictly ordered
    /// endpoint (a claim takes those in order).
    pub fn leases(&self, target: &EndpointTarget) -> bool {
        !target.strict_ordering && !self.full.contains(&target.id)
    }
}

/// How many of one endpoint's due deliveries a claim may take: the room
/// the claiming dispatcher has for them (what it can send or queue at once
/// without giving any back).
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// Endpoints whose room is not `otherwise` (less, or more for one that
    /// may borrow slots); 0 leaves them out.
    pub limited: Vec<(EndpointId, usize)>,
    /// Room for every other endpoint; `None`: as much as the claim takes.
    pub otherwise: Option<usize>,
}

impl Room {
    /// No room for these endpoints, any for the others.
    pub fn skipping(endpoints: impl IntoIterator<Item = EndpointId>) -> Self {
        Self {
            limited: endpoints.into_iter().map(|e| (e, 0)).collect(),
            otherwise: None,
        }
    }

    /// The endpoints with no room at all.
    pub fn full(&self) -> Vec<EndpointId> {
        self.limited
            .iter()
            .filter(|(_, room)| *room == 0)
            .map(|(endpoint, _)| *endpoint)
            .collect()
    }

    /// The endpoints in `limited` with some room: `(id, room)`.
    pub fn partial(&self) -> impl Iterator<Item = (EndpointId, usize)> + '_ {
        self.limited.iter().copied().filter(|(_, room)| *room > 0)
    }

    /// How many due deliveries a claim of `limit` reads to choose from
    /// where reading costs no locks (SQLite): more than it takes when some
    /// endpoints' room may leave rows out.
    pub fn window(&self, limit: usize) -> usize {
        if self.otherwise.is_some() || self.partial().next().is_some() {
            limit.saturating_mul(4)
        } else {
            limit
        }
    }

    /// Keeps, in order, the due deliveries the room allows (`endpoint` of
    /// each): at most `limit`, none of an endpoint past its room.
    pub fn select<T>(&self, due: Vec<T>, limit: usize, endpoint: impl Fn(&T) -> &str) -> Vec<T> {
        let rooms: HashMap<String, usize> = self
            .limited
            .iter()
            .map(|(id, room)| (id.to_string(), *room))
            .collect();
        let mut taken: HashMap<String, usize> = HashMap::new();
        let mut kept = Vec::with_capacity(limit.min(due.len()));
        for row in due {
            if kept.len() == limit {
                break;
            }
            let id = endpoint(&row);
            let room = rooms
                .get(id)
                .copied()
                .or(self.otherwise)
                .unwrap_or(usize::MAX);
            let count = taken.entry(id.to_owned()).or_default();
            if *count < room {
                *count += 1;
                kept.push(row);
            }
        }
        kept
    }
}

/// Where a delivery goes and how it is signed.
#[derive(Debug, Clone)]
pub struct EndpointTarget {
    pub id: EndpointId,
    pub url: EndpointUrl,
    pub headers: Headers,
    /// The current secret first, then previous ones still in their grace period.
    pub secrets: Vec<Secret>,
    /// `None`: the server's retry schedule.
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Attempts per second, at most.
    pub rate_limit: Option<u32>,
    /// One message at a time, in order.
    pub strict_ordering: bool,
    /// The body's shape and the receiver's timeout (the filter was applied
    /// at fan-out).
    pub options: herald_domain::DeliveryOptions,
}

/// One (message, endpoint) delivery leased to the engine, with all it needs to send.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub message: Arc<Message>,
    pub endpoint: Arc<EndpointTarget>,
    /// Attempts already made before this one.
    pub attempts_made: u32,
    pub trigger: Trigger,
    /// The lease this job holds (its expiry); recording the attempt checks
    /// it, so a holder whose lease ran out cannot overwrite the next one's.
    pub lease_until: Timestamp,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(Timestamp),
    Failed,
}

impl NextStep {
    /// The delivery's status and next due time after this step.
    pub fn delivery_state(self) -> (DeliveryStatus, Option<Timestamp>) {
        match self {
            Self::Succeeded => (DeliveryStatus::Succeeded, None),
            Self::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
            Self::Failed => (DeliveryStatus::Failed, None),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    /// The lease of the job that made the attempt.
    pub lease_until: Timestamp,
    pub next: NextStep,
    /// The receiver answered 410 Gone: stop sending to it.
    pub disable_endpoint: bool,
}

impl AttemptOutcome {
    /// How many of its retry policy's attempts the delivery is charged: none
    /// when the attempt failed on Herald's side before anything reached the
    /// receiver (out of descriptors, buffers or memory).
    pub fn charged(&self) -> i64 {
        i64::from(self.attempt.error_class != Some(herald_domain::ErrorClass::Local))
    }
}

/// A response saved under an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub created_at: Timestamp,
}

/// What reserving an `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key is ours: run the request, then complete or abandon it.
    Reserved,
    /// A request with this key already finished: replay its response.
    Done(StoredResponse),
    /// A request with this key is running now.
    InProgress,
    /// The key was used with a different request (another body).
    Mismatch,
}

/// What a bulk recovery re-sends: every failed delivery of `endpoint` whose
/// message was created in `[since, until)` (no upper bound without `until`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    pub endpoint_id: EndpointId,
    pub since: Timestamp,
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Running,
    Finished,
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Running, Self::Finished, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A background task (Svix's `endpoint.recover`), resumable after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundTask {
    pub id: TaskId,
    pub app_id: AppId,
    pub recovery: Recovery,
    pub status: TaskStatus,
    /// Deliveries queued again so far.
    pub done: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl BackgroundTask {
    pub const RECOVER: &'static str = "endpoint.recover";
}

pub use herald_domain::health::{HealthCounts, HEALTH_BUCKET_MS, LATENCY_BINS, LATENCY_BOUNDS_MS};

/// What one process saw of one endpoint since it last reported, in time
/// order, to be added to the stored aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUpdate {
    pub endpoint_id: EndpointId,
    /// Counts per bucket start (a multiple of [`HEALTH_BUCKET_MS`]).
    pub buckets: BTreeMap<Timestamp, HealthCounts>,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    /// Failures after the last success seen (all failures if none).
    pub failures_since_success: u64,
    /// The first of those failures.
    pub failing_since: Option<Timestamp>,
    /// For operational events: the endpoint's app and URL, the first
    /// message of each event type whose delivery ran out of retries, the
    /// event types of the failed attempts, the message of the last success,
    /// and whether the endpoint answered 410 Gone.
    pub app_id: Option<AppId>,
    pub url: String,
    pub exhausted: BTreeMap<EventTypeName, MessageId>,
    pub failed_types: BTreeSet<EventTypeName>,
    pub last_success_message: Option<MessageId>,
    pub gone: bool,
}

/// An endpoint's run of failures after a health report, for alerting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRun {
    pub endpoint_id: EndpointId,
    pub consecutive_failures: u64,
    /// Since when every attempt has failed; `None` after a success.
    pub failing_since: Option<Timestamp>,
    /// The start of a run of failures that this report ended with a success.
    pub ended_run: Option<Timestamp>,
    /// Disabled by the auto-disable rule with this report.
    pub disabled: bool,
}

impl HealthUpdate {
    pub fn new(endpoint_id: EndpointId) -> Self {
        Self {
            endpoint_id,
            buckets: BTreeMap::new(),
            last_success_at: None,
            last_failure_at: None,
            failures_since_success: 0,
            failing_since: None,
            app_id: None,
            url: String::new(),
            exhausted: BTreeMap::new(),
            failed_types: BTreeSet::new(),
            last_success_message: None,
            gone: false,
        }
    }

    pub fn observe(&mut self, at: Timestamp, succeeded: bool, duration_ms: u64) {
        let bucket = at - at.rem_euclid(HEALTH_BUCKET_MS);
        self.buckets
            .entry(bucket)
            .or_default()
            .observe(succeeded, duration_ms);
        if succeeded {
            self.last_success_at = Some(at);
            self.failures_since_success = 0;
            self.failing_since = None;
        } else {
            self.last_failure_at = Some(at);
            self.failures_since_success += 1;
            self.failing_since.get_or_insert(at);
        }
    }
}

/// An endpoint's health: windows of the last hour, day and week, its last
/// attempts, and its current run of failures.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    pub last_hour: HealthCounts,
    pub last_day: HealthCounts,
    pub last_week: HealthCounts,
    /// The last 24 hours hour by hour, oldest first.
    pub last_day_by_hour: Vec<HealthCounts>,
    /// Newest first, at most 20.
    pub recent: Vec<Attempt>,
    pub consecutive_failures: u64,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    /// Since when every attempt has failed (none since a success).
    pub failing_since: Option<Timestamp>,
}

/// When to disable an endpoint automatically: every attempt has failed for
/// `after` milliseconds, and there were at least `min_attempts` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoDisable {
    pub after: Timestamp,
    pub min_attempts: u64,
}

/// When an endpoint's success rate counts as dropped: below `threshold`
/// over the last hour, with at least `min_attempts` attempts in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateRule {
    pub threshold: f64,
    pub min_attempts: u64,
}

/// An endpoint whose success rate is below the rule's threshold: since
/// when (the episode), and the last hour's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDrop {
    pub since: Timestamp,
    pub last_hour: HealthCounts,
}

/// The store's side of `/metrics`, counted when scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauges {
    /// Pending deliveries due now and not leased.
    pub due: u64,
    /// Pending deliveries due later: retries scheduled and leases running.
    pub scheduled: u64,
    pub disabled_endpoints: u64,
    /// Endpoints whose latest attempt failed.
    pub failing_endpoints: u64,
}

/// How the store's connections are used right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open (SQLite: the read pool; PostgreSQL: the pool).
    pub connections: u64,
    /// Of those, not in use.
    pub idle: u64,
    /// The pool's size limit.
    pub max: u64,
    /// Writes waiting for the SQLite writer thread (0 on PostgreSQL).
    pub queued_writes: u64,
}

/// One endpoint's state for the per-endpoint series of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointGauge {
    pub app_id: AppId,
    pub endpoint_id: EndpointId,
    pub disabled: bool,
    /// Attempts failed in a row since the last success.
    pub consecutive_failures: u64,
}

/// The answer to reserving a rate-limited endpoint's next send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSlot {
    /// The backend serves one process, which paces in memory.
    Local,
    /// Reserved: the send may start at this time.
    At(Timestamp),
    /// Not reserved: the endpoint's next free moment is past the caller's
    /// deadline; try again from this time.
    NotBefore(Timestamp),
}
