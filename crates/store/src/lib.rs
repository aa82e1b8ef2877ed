//! All of Herald's SQL lives here: the [`Store`] trait that the rest of the
//! program talks to, and its SQLite implementation. A PostgreSQL
//! implementation of the same trait follows; the SQL is kept portable.

mod access;
mod delegate;
mod listing;
mod model;
mod pg;
mod shared;
mod sql;
mod sqlite;

pub use access::{
    AuditEntry, AuditQuery, InspectedRequest, Inspector, Token, TokenInput, TokenKind,
    INSPECTED_KEPT,
};
pub use model::*;
pub use pg::{redact_password, PgOptions, PgStore};
pub use shared::subscribes_to;
pub use sqlite::{SqliteOptions, SqliteStore};

use async_trait::async_trait;
use herald_domain::ids::IdOrUid;
use herald_domain::{
    AlertRules, AppId, AttemptId, EndpointId, EventTypeName, MessageId, Secret, TaskId, TokenId,
};

/// What can go wrong talking to the store, in terms the API maps to statuses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; `field` names the clashing input.
    #[error("{field} already exists")]
    Conflict { field: &'static str },
    /// The input refers to something that does not exist or is not allowed.
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// The message's content was removed: it cannot be sent again.
    #[error("the message's content was removed; it cannot be sent again")]
    ContentRemoved,
    /// Too much work is queued; the client should retry shortly.
    #[error("overloaded")]
    Overloaded,
    /// The database cannot be reached or is shutting down; try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub type AppRef = IdOrUid<AppId>;
pub type EndpointRef = IdOrUid<EndpointId>;
pub type MessageRef = IdOrUid<MessageId>;

/// The one interface between Herald and its database. Every method is one
/// transaction; callers never see a half-applied change. A method taking
/// `audit: Option<AuditEntry>` writes the entry in the same transaction as
/// the change (its empty target filled with the new thing's id): the audit
/// log holds every change made and none that was not.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Cheap round trip that proves the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Whether the database takes writes: an error while they fail (a
    /// full disk, a read-only file system), so that the health check can
    /// say so. SQLite answers from its last write batch and tries a probe
    /// write only while those fail; PostgreSQL writes a probe row unless a
    /// write of this process succeeded in the last 2 s, none failing since.
    async fn check_writes(&self) -> StoreResult<()>;
    /// Deliveries waiting and endpoints in trouble, for `/metrics`.
    async fn queue_gauges(&self, now: Timestamp) -> StoreResult<QueueGauges>;
    /// The connection pool's use, for `/metrics`.
    fn pool_usage(&self) -> PoolUsage;
    /// Every endpoint's state, for `/metrics` when per-endpoint series are on.
    async fn endpoint_gauges(&self) -> StoreResult<Vec<EndpointGauge>>;

    // Applications.
    async fn create_app(&self, input: AppInput, audit: Option<AuditEntry>) -> StoreResult<App>;
    async fn get_app(&self, app: &AppRef) -> StoreResult<App>;
    async fn list_apps(&self, page: PageRequest) -> StoreResult<Page<App>>;
    async fn update_app(
        &self,
        app: AppId,
        input: AppInput,
        audit: Option<AuditEntry>,
    ) -> StoreResult<App>;
    async fn delete_app(&self, app: AppId, audit: Option<AuditEntry>) -> StoreResult<()>;
    /// Sets an app's alert rules; `None` goes back to the server's defaults.
    async fn set_alert_rules(
        &self,
        app: AppId,
        rules: Option<AlertRules>,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;
    /// The alert rules of those of `apps` that have their own.
    async fn alert_rules(&self, apps: Vec<AppId>) -> StoreResult<Vec<(AppId, AlertRules)>>;

    // Event types.
    /// Inserts the catalog entries that do not exist yet; returns how many were added.
    async fn seed_event_types(&self, entries: Vec<EventTypeInput>) -> StoreResult<usize>;
    async fn create_event_type(
        &self,
        input: EventTypeInput,
        audit: Option<AuditEntry>,
    ) -> StoreResult<EventType>;
    async fn get_event_type(&self, name: &EventTypeName) -> StoreResult<EventType>;
    async fn list_event_types(
        &self,
        page: PageRequest,
        include_archived: bool,
    ) -> StoreResult<Page<EventType>>;
    async fn update_event_type(
        &self,
        input: EventTypeInput,
        audit: Option<AuditEntry>,
    ) -> StoreResult<EventType>;
    /// Archives the type, or removes it for good when `expunge` is set.
    async fn delete_event_type(
        &self,
        name: &EventTypeName,
        expunge: bool,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;

    // Endpoints.
    async fn create_endpoint(
        &self,
        app: AppId,
        input: EndpointInput,
        headers: Headers,
        secret: Secret,
        audit: Option<AuditEntry>,
    ) -> StoreResult<Endpoint>;
    async fn get_endpoint(&self, app: AppId, endpoint: &EndpointRef) -> StoreResult<Endpoint>;
    async fn list_endpoints(&self, app: AppId, page: PageRequest) -> StoreResult<Page<Endpoint>>;
    async fn update_endpoint(
        &self,
        app: AppId,
        endpoint: EndpointId,
        input: EndpointInput,
        audit: Option<AuditEntry>,
    ) -> StoreResult<Endpoint>;
    async fn delete_endpoint(
        &self,
        app: AppId,
        endpoint: EndpointId,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;
    async fn endpoint_secret(&self, app: AppId, endpoint: EndpointId) -> StoreResult<Secret>;
    /// Makes `secret` current; the previous one keeps signing until `previous_valid_until`.
    async fn rotate_endpoint_secret(
        &self,
        app: AppId,
        endpoint: EndpointId,
        secret: Secret,
        previous_valid_until: Timestamp,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;
    async fn set_endpoint_headers(
        &self,
        app: AppId,
        endpoint: EndpointId,
        headers: Headers,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;
    async fn endpoint_stats(&self, app: AppId, endpoint: EndpointId) -> StoreResult<EndpointStats>;
    /// An endpoint's attempts made in `[since, until)`, by outcome.
    async fn attempt_stats(
        &self,
        app: AppId,
        endpoint: EndpointId,
        since: Timestamp,
        until: Timestamp,
    ) -> StoreResult<AttemptStats>;
    /// Adds what a process saw of endpoints to their health aggregates, in
    /// one transaction; with `rule`, disables the endpoints among them that
    /// meet it. Returns each endpoint's run of failures afterwards.
    async fn record_health(
        &self,
        updates: Vec<HealthUpdate>,
        rule: Option<AutoDisable>,
    ) -> StoreResult<Vec<EndpointRun>>;
    /// Checks an endpoint's last-hour success rate against `rule`: below
    /// it, the drop (its start kept from the first check that saw it);
    /// back above it, the mark is cleared; too few attempts change nothing.
    async fn check_success_rate(
        &self,
        endpoint: EndpointId,
        rule: RateRule,
        now: Timestamp,
    ) -> StoreResult<Option<RateDrop>>;
    /// An endpoint's health as of `now`, from the aggregates.
    async fn endpoint_health(
        &self,
        app: AppId,
        endpoint: EndpointId,
        now: Timestamp,
    ) -> StoreResult<EndpointHealth>;
    /// Drops health buckets that start before `before`.
    async fn purge_health(&self, before: Timestamp) -> StoreResult<u64>;
    /// Retention: deletes up to `limit` messages made before `before` that
    /// have nothing left to deliver, with their deliveries and attempts, in
    /// one short transaction; returns how many went.
    async fn purge_messages(&self, before: Timestamp, limit: usize) -> StoreResult<u64>;
    /// Retention of the attempt log where it is partitioned by week
    /// (PostgreSQL): drops the weeks wholly older than `before`, and returns
    /// how many. SQLite's attempts go with their messages instead (0).
    async fn drop_attempts_before(&self, before: Timestamp) -> StoreResult<u64> {
        let _ = before;
        Ok(0)
    }

    // Messages and deliveries.
    /// Stores the message and one pending delivery per matching enabled
    /// endpoint, in one transaction. With `claim`, the deliveries are leased
    /// to the caller and returned ready to send.
    async fn create_message(
        &self,
        app: AppId,
        input: MessageInput,
        claim: Option<Claim>,
        audit: Option<AuditEntry>,
    ) -> StoreResult<CreatedMessage>;
    async fn get_message(&self, app: AppId, message: &MessageRef) -> StoreResult<Message>;
    async fn list_messages(&self, app: AppId, query: MessageQuery) -> StoreResult<Page<Message>>;
    /// The messages fanned out to `query.endpoint` (not found: another
    /// app's or no endpoint), newest first, with their delivery's state.
    async fn list_endpoint_messages(
        &self,
        app: AppId,
        query: EndpointMessageQuery,
    ) -> StoreResult<Page<EndpointMessage>>;

    // Attempts.
    async fn list_attempts(&self, app: AppId, query: AttemptQuery) -> StoreResult<Page<Attempt>>;
    async fn get_attempt(
        &self,
        app: AppId,
        message: MessageId,
        attempt: AttemptId,
    ) -> StoreResult<Attempt>;
    /// An endpoint's unsettled deliveries, soonest due first, at most `limit`.
    async fn pending_deliveries(
        &self,
        app: AppId,
        endpoint: EndpointId,
        limit: usize,
    ) -> StoreResult<Vec<PendingDelivery>>;
    /// The endpoints a message was fanned out to, by id, each with where
    /// its delivery stands.
    async fn list_destinations(
        &self,
        app: AppId,
        message: MessageId,
        page: PageRequest,
    ) -> StoreResult<Page<Destination>>;
    /// Erases a message's payload for good: it reads `{}` from now on, its
    /// pending deliveries end as failed (each with an attempt of class
    /// `content_removed`), stored idempotent answers carrying it are
    /// forgotten, and it cannot be resent.
    async fn remove_content(
        &self,
        app: AppId,
        message: MessageId,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;
    /// Erases one attempt's stored response body (a receiver that answered
    /// with something it should not have); the rest of the attempt stays.
    async fn expunge_attempt_content(
        &self,
        app: AppId,
        message: MessageId,
        attempt: AttemptId,
        audit: Option<AuditEntry>,
    ) -> StoreResult<()>;

    // The delivery engine's side.
    /// Schedules a manual attempt of one (message, endpoint) pair, leased to the caller.
    async fn resend(
        &self,
        app: AppId,
        message: MessageId,
        endpoint: EndpointId,
        claim: Claim,
        audit: Option<AuditEntry>,
    ) -> StoreResult<DeliveryJob>;
    /// Leases up to `limit` due deliveries, oldest first, taking of each
    /// endpoint no more than the caller's `room` for it (none of those it
    /// has no room for: they are saturated here). A leased delivery is next
    /// due when its lease runs out, so claims never wade through the
    /// deliveries in flight and an expired lease is simply due work.
    async fn claim_due(
        &self,
        claim: Claim,
        limit: usize,
        room: Room,
    ) -> StoreResult<Vec<DeliveryJob>>;
    /// Gives a leased, unattempted delivery back (its endpoint is busy here);
    /// it is due now and any worker may claim it. Nothing changes unless
    /// the caller still holds the lease (`job.lease_until`): once it ran
    /// out, another worker may hold the delivery, and clearing that lease
    /// would let a third send it too.
    async fn release(&self, job: &DeliveryJob) -> StoreResult<()> {
        self.release_until(job, crate::shared::now()).await
    }
    /// Like [`Store::release`], due at `at` instead of now.
    async fn release_until(&self, job: &DeliveryJob, at: Timestamp) -> StoreResult<()>;
    /// Reserves the next send to a rate-limited endpoint, one every
    /// `interval_ms`, shared by every process: the slot if it starts by
    /// `deadline`. SQLite answers [`SendSlot::Local`].
    async fn reserve_send(
        &self,
        endpoint: EndpointId,
        interval_ms: i64,
        now: Timestamp,
        deadline: Timestamp,
    ) -> StoreResult<SendSlot> {
        let _ = (endpoint, interval_ms, now, deadline);
        Ok(SendSlot::Local)
    }
    /// Records one attempt and moves its delivery to the next state.
    async fn record_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()>;
    /// When the earliest pending delivery falls due (for a leased one: when
    /// its lease runs out), if any, leaving out the endpoints in `skip`.
    async fn next_due_at(&self, skip: Vec<EndpointId>) -> StoreResult<Option<Timestamp>>;
    /// At start-up, frees leases that can only belong to a dead run of this
    /// process: all of them for single-process SQLite, none for PostgreSQL
    /// (there, leases of a dead process simply expire).
    async fn release_orphaned_leases(&self) -> StoreResult<u64>;
    /// Completes when another process announces new unleased work; never
    /// for a single-process store.
    async fn wait_for_work(&self) {
        std::future::pending::<()>().await
    }

    // Background tasks.
    /// Records a bulk recovery of one of `app`'s endpoints, to be run step by
    /// step with [`Store::recovery_step`].
    async fn start_recovery(
        &self,
        app: AppId,
        recovery: Recovery,
        audit: Option<AuditEntry>,
    ) -> StoreResult<BackgroundTask>;
    /// Queues up to `limit` more of the task's failed deliveries for one
    /// manual attempt each (due now), in message order from where the last
    /// step stopped; the task is finished when a step finds fewer. Steps of
    /// one task never overlap, so each delivery is queued once.
    async fn recovery_step(&self, task: TaskId, limit: usize) -> StoreResult<BackgroundTask>;
    async fn get_task(&self, task: TaskId) -> StoreResult<BackgroundTask>;
    /// Background tasks, newest first: one app's (`None`: every app's),
    /// of one status or any.
    async fn list_tasks(
        &self,
        app: Option<AppId>,
        status: Option<TaskStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<BackgroundTask>>;
    /// Tasks still running (to resume after a restart).
    async fn running_tasks(&self) -> StoreResult<Vec<TaskId>>;

    // Tokens and the audit log.
    async fn create_token(
        &self,
        input: TokenInput,
        audit: Option<AuditEntry>,
    ) -> StoreResult<Token>;
    /// The token with this SHA-256, valid or not (the caller checks).
    async fn token_by_hash(&self, hash: [u8; 32]) -> StoreResult<Option<Token>>;
    async fn list_tokens(&self, app: AppId, page: PageRequest) -> StoreResult<Page<Token>>;
    /// Marks one of `app`'s tokens revoked at `at`; revoking twice keeps
    /// the first time.
    async fn revoke_token(
        &self,
        app: AppId,
        token: TokenId,
        at: Timestamp,
        audit: Option<AuditEntry>,
    ) -> StoreResult<Token>;
    async fn record_audit(&self, entry: AuditEntry) -> StoreResult<()>;
    async fn list_audit(&self, query: AuditQuery) -> StoreResult<Page<AuditEntry>>;

    /// The app's inspector, made with `token` unless it has one already.
    async fn open_inspector(
        &self,
        app: AppId,
        token: String,
        audit: Option<AuditEntry>,
    ) -> StoreResult<Inspector>;
    async fn inspector(&self, app: AppId) -> StoreResult<Option<Inspector>>;
    async fn inspector_by_token(&self, token: String) -> StoreResult<Option<Inspector>>;
    /// Removes the inspector and what it received (`NotFound` without one).
    async fn close_inspector(&self, app: AppId, audit: Option<AuditEntry>) -> StoreResult<()>;
    /// Keeps `request`, and only the newest [`INSPECTED_KEPT`] of its app's.
    async fn record_inspected(&self, request: InspectedRequest) -> StoreResult<()>;
    /// Newest first, at most `limit`.
    async fn list_inspected(&self, app: AppId, limit: usize) -> StoreResult<Vec<InspectedRequest>>;

    // Idempotency keys.
    /// Claims `key` for a request about to run: `Reserved` means go ahead,
    /// `Done` carries the saved response to replay, `InProgress` means
    /// another request with the key is running, `Mismatch` that the key was
    /// used with a request of another `fingerprint`. A reservation made
    /// before `stale_before` belongs to a request that died and is taken
    /// over.
    async fn reserve_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<Reservation>;
    /// Saves the final response of a reserved key.
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> StoreResult<()>;
    /// Drops a reservation whose request ended without a final answer.
    async fn abandon_idempotency_key(&self, scope: &str, key: &str) -> StoreResult<()>;
    /// Removes keys older than `before`.
    async fn purge_idempotency_keys(&self, before: Timestamp) -> StoreResult<u64>;
}
