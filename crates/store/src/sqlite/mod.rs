//! The SQLite implementation of [`Store`]: one writer thread committing
//! batches, a pool of readers, migrations embedded in the binary.

mod access;
mod admin;
mod delivery;
mod health;
mod pool;
mod rows;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Connection;

use herald_domain::sealing::Sealing;
use herald_domain::{
    AlertRules, AppId, AttemptId, EndpointId, EventTypeName, MessageId, Secret, TaskId, TokenId,
};

use crate::*;
use pool::{
    internal, open_connection, Checkpointer, ReadPool, Writer, WRITER_AUTOCHECKPOINT_PAGES,
};

/// Below this much free space on the database's file system, writes are
/// reported failing: the next one that needs a new page will fail.
const MIN_FREE_SPACE: u64 = 1024 * 1024;

/// A write batch that failed this recently makes writes count as failing
/// (small writes, such as the engine's, may still fit where a message
/// does not, so one success proves little).
const WRITE_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Migrations in order; the number is the schema version each one produces.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_initial.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_background_tasks.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_endpoint_health.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_retry_policy.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_disabled_reason.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_strict_ordering.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_success_rate.sql"),
    ),
    (
        8,
        include_str!("../../migrations/sqlite/0008_alert_rules.sql"),
    ),
    (
        9,
        include_str!("../../migrations/sqlite/0009_tokens_audit.sql"),
    ),
    (
        10,
        include_str!("../../migrations/sqlite/0010_inspector.sql"),
    ),
    (
        11,
        include_str!("../../migrations/sqlite/0011_attempts_by_app.sql"),
    ),
    (
        12,
        include_str!("../../migrations/sqlite/0012_endpoint_pacing.sql"),
    ),
    (
        13,
        include_str!("../../migrations/sqlite/0013_idempotency_fingerprint.sql"),
    ),
    (
        14,
        include_str!("../../migrations/sqlite/0014_store_probe.sql"),
    ),
];

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// Read connections kept open.
    pub readers: usize,
    /// Queued writes above which new messages are refused (503) until the
    /// writer catches up.
    pub admission_limit: usize,
    /// How signing secrets are stored (sealed with a master key, or plain).
    pub sealing: Sealing,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readers: 4,
            admission_limit: 20_000,
            sealing: Sealing::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The directory of the database file (for its free space).
    directory: std::path::PathBuf,
    sealing: Arc<Sealing>,
    writer: Writer,
    readers: ReadPool,
    _checkpointer: Arc<Checkpointer>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(options: &SqliteOptions) -> StoreResult<Self> {
        let mut conn = open_connection(&options.path, false)?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(internal)?;
        reseal(&conn, &options.sealing)?;
        let readers = ReadPool::open(&options.path, options.readers.max(1))?;
        Ok(Self {
            directory: options
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_owned(),
            sealing: Arc::new(options.sealing.clone()),
            writer: Writer::start(conn, options.admission_limit),
            readers,
            _checkpointer: Arc::new(Checkpointer::start(&options.path)?),
        })
    }

    /// Bytes free to this process on the file system of the database.
    fn free_space(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(self.directory.as_path()).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Applies pending migrations and returns the schema version.
    pub fn migrate_only(path: &Path) -> StoreResult<i64> {
        let mut conn = open_connection(path, false)?;
        migrate(&mut conn)
    }
}

/// Checks at start that the stored secrets open with the configured keys,
/// and brings them to the current one: plain secrets are sealed once a
/// master key is set, secrets sealed with the previous key are sealed again
/// with the current one. Refuses to start (with the reason) otherwise.
fn reseal(conn: &Connection, sealing: &Sealing) -> StoreResult<()> {
    // Without a key there is nothing to seal: only a sealed secret matters.
    if sealing.current.is_none() {
        let sealed: Option<String> = conn
            .query_row(crate::shared::ANY_SEALED_SECRET_SQL, [], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .map_err(internal)?;
        return match sealed {
            Some(stored) => sealing
                .read(&stored)
                .map(|_| ())
                .map_err(|e| StoreError::Internal(crate::shared::sealing_refusal(&e))),
            None => Ok(()),
        };
    }
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT rowid, secret FROM endpoint_secrets")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    let mut update = conn
        .prepare("UPDATE endpoint_secrets SET secret = ? WHERE rowid = ?")
        .map_err(internal)?;
    for (row, stored) in rows {
        let (secret, again) = sealing
            .read(&stored)
            .map_err(|e| StoreError::Internal(crate::shared::sealing_refusal(&e)))?;
        if again {
            update
                .execute(rusqlite::params![sealing.store(&secret), row])
                .map_err(internal)?;
        }
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> StoreResult<i64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(internal)?;
    let transaction = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(internal)?;
    let current: i64 = transaction
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(internal)?;
    let mut version = current;
    for (number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > current) {
        transaction.execute_batch(sql).map_err(internal)?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                rusqlite::params![number, admin::now()],
            )
            .map_err(internal)?;
        version = *number;
    }
    transaction.commit().map_err(internal)?;
    Ok(version)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.readers
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(internal))
            .await
    }

    async fn check_writes(&self) -> StoreResult<()> {
        // A disk with (almost) no room left fails the next write that
        // needs a new page, however small the last successful one was.
        if let Some(free) = self.free_space() {
            if free < MIN_FREE_SPACE {
                return Err(StoreError::Unavailable(format!(
                    "the disk holding the database is full ({free} bytes free)"
                )));
            }
        }
        match self.writer.recent_failure(WRITE_FAILURE_WINDOW) {
            Some(reason) => Err(StoreError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    async fn queue_gauges(&self, now: Timestamp) -> StoreResult<QueueGauges> {
        self.readers
            .read(move |c| {
                c.query_row(crate::shared::QUEUE_GAUGES, [now], |row| {
                    let count = |i| row.get::<_, i64>(i).map(|n| n.max(0) as u64);
                    Ok(QueueGauges {
                        due: count(0)?,
                        scheduled: count(1)?,
                        disabled_endpoints: count(2)?,
                        failing_endpoints: count(3)?,
                    })
                })
                .map_err(internal)
            })
            .await
    }

    async fn endpoint_gauges(&self) -> StoreResult<Vec<EndpointGauge>> {
        self.readers
            .read(|c| {
                let mut statement = c
                    .prepare_cached(crate::shared::ENDPOINT_GAUGES)
                    .map_err(internal)?;
                let rows = statement
                    .query_map([], |row| {
                        let app: String = row.get(0)?;
                        let endpoint: String = row.get(1)?;
                        let failures: i64 = row.get(3)?;
                        Ok((app, endpoint, row.get::<_, bool>(2)?, failures))
                    })
                    .map_err(internal)?;
                let mut gauges = Vec::new();
                for row in rows {
                    let (app, endpoint, disabled, failures) = row.map_err(internal)?;
                    gauges.push(EndpointGauge {
                        app_id: AppId::parse(&app)
                            .map_err(|e| StoreError::Internal(e.to_string()))?,
                        endpoint_id: EndpointId::parse(&endpoint)
                            .map_err(|e| StoreError::Internal(e.to_string()))?,
                        disabled,
                        consecutive_failures: failures.max(0) as u64,
                    });
                }
                Ok(gauges)
            })
            .await
    }

    fn pool_usage(&self) -> PoolUsage {
        let (connections, idle) = self.readers.usage();
        PoolUsage {
            connections: connections as u64,
            idle: idle as u64,
            max: connections as u64,
            queued_writes: self.writer.queued() as u64,
        }
    }

    async fn create_app(&self, input: AppInput) -> StoreResult<App> {
        self.writer
            .write(move |c| admin::create_app(c, input))
            .await
    }
    async fn get_app(&self, app: &AppRef) -> StoreResult<App> {
        let app = app.clone();
        self.readers.read(move |c| admin::get_app(c, &app)).await
    }
    async fn list_apps(&self, page: PageRequest) -> StoreResult<Page<App>> {
        self.readers.read(move |c| admin::list_apps(c, page)).await
    }
    async fn update_app(&self, app: AppId, input: AppInput) -> StoreResult<App> {
        self.writer
            .write(move |c| admin::update_app(c, app, input))
            .await
    }
    async fn delete_app(&self, app: AppId) -> StoreResult<()> {
        self.writer.write(move |c| admin::delete_app(c, app)).await
    }
    async fn set_alert_rules(&self, app: AppId, rules: Option<AlertRules>) -> StoreResult<()> {
        self.writer
            .write(move |c| admin::set_alert_rules(c, app, rules.as_ref()))
            .await
    }
    async fn alert_rules(&self, apps: Vec<AppId>) -> StoreResult<Vec<(AppId, AlertRules)>> {
        self.readers
            .read(move |c| admin::alert_rules(c, &apps))
            .await
    }

    async fn seed_event_types(&self, entries: Vec<EventTypeInput>) -> StoreResult<usize> {
        self.writer
            .write(move |c| {
                entries
                    .iter()
                    .map(|e| admin::insert_event_type(c, e, true))
                    .sum()
            })
            .await
    }
    async fn create_event_type(&self, input: EventTypeInput) -> StoreResult<EventType> {
        self.writer
            .write(move |c| {
                admin::insert_event_type(c, &input, false)?;
                admin::get_event_type(c, &input.name)
            })
            .await
    }
    async fn get_event_type(&self, name: &EventTypeName) -> StoreResult<EventType> {
        let name = name.clone();
        self.readers
            .read(move |c| admin::get_event_type(c, &name))
            .await
    }
    async fn list_event_types(
        &self,
        page: PageRequest,
        include_archived: bool,
    ) -> StoreResult<Page<EventType>> {
        self.readers
            .read(move |c| admin::list_event_types(c, page, include_archived))
            .await
    }
    async fn update_event_type(&self, input: EventTypeInput) -> StoreResult<EventType> {
        self.writer
            .write(move |c| admin::update_event_type(c, input))
            .await
    }
    async fn delete_event_type(&self, name: &EventTypeName, expunge: bool) -> StoreResult<()> {
        let name = name.clone();
        self.writer
            .write(move |c| admin::delete_event_type(c, &name, expunge))
            .await
    }

    async fn create_endpoint(
        &self,
        app: AppId,
        input: EndpointInput,
        headers: Headers,
        secret: Secret,
    ) -> StoreResult<Endpoint> {
        let stored = self.sealing.store(&secret);
        self.writer
            .write(move |c| admin::create_endpoint(c, app, input, headers, stored))
            .await
    }
    async fn get_endpoint(&self, app: AppId, endpoint: &EndpointRef) -> StoreResult<Endpoint> {
        let endpoint = endpoint.clone();
        self.readers
            .read(move |c| admin::get_endpoint(c, app, &endpoint))
            .await
    }
    async fn list_endpoints(&self, app: AppId, page: PageRequest) -> StoreResult<Page<Endpoint>> {
        self.readers
            .read(move |c| {
                admin::get_app(c, &herald_domain::ids::IdOrUid::Id(app))?;
                admin::list_endpoints(c, app, page)
            })
            .await
    }
    async fn update_endpoint(
        &self,
        app: AppId,
        endpoint: EndpointId,
        input: EndpointInput,
    ) -> StoreResult<Endpoint> {
        self.writer
            .write(move |c| admin::update_endpoint(c, app, endpoint, input))
            .await
    }
    async fn delete_endpoint(&self, app: AppId, endpoint: EndpointId) -> StoreResult<()> {
        self.writer
            .write(move |c| admin::delete_endpoint(c, app, endpoint))
            .await
    }
    async fn endpoint_secret(&self, app: AppId, endpoint: EndpointId) -> StoreResult<Secret> {
        let sealing = self.sealing.clone();
        self.readers
            .read(move |c| admin::endpoint_secret(c, app, endpoint, &sealing))
            .await
    }
    async fn rotate_endpoint_secret(
        &self,
        app: AppId,
        endpoint: EndpointId,
        secret: Secret,
        previous_valid_until: Timestamp,
    ) -> StoreResult<()> {
        let stored = self.sealing.store(&secret);
        self.writer
            .write(move |c| {
                admin::rotate_endpoint_secret(c, app, endpoint, stored, previous_valid_until)
            })
            .await
    }
    async fn set_endpoint_headers(
        &self,
        app: AppId,
        endpoint: EndpointId,
        headers: Headers,
    ) -> StoreResult<()> {
        self.writer
            .write(move |c| admin::set_endpoint_headers(c, app, endpoint, headers))
            .await
    }
    async fn endpoint_stats(&self, app: AppId, endpoint: EndpointId) -> StoreResult<EndpointStats> {
        self.readers
            .read(move |c| admin::endpoint_stats(c, app, endpoint))
            .await
    }

    async fn create_message(
        &self,
        app: AppId,
        input: MessageInput,
        claim: Option<Claim>,
    ) -> StoreResult<CreatedMessage> {
        let sealing = self.sealing.clone();
        self.writer
            .admit(move |c| delivery::create_message(c, app, input, claim, &sealing))
            .await
    }
    async fn get_message(&self, app: AppId, message: &MessageRef) -> StoreResult<Message> {
        let message = message.clone();
        self.readers
            .read(move |c| delivery::get_message(c, app, &message))
            .await
    }
    async fn list_messages(&self, app: AppId, query: MessageQuery) -> StoreResult<Page<Message>> {
        self.readers
            .read(move |c| delivery::list_messages(c, app, query))
            .await
    }
    async fn list_attempts(&self, app: AppId, query: AttemptQuery) -> StoreResult<Page<Attempt>> {
        self.readers
            .read(move |c| delivery::list_attempts(c, app, query))
            .await
    }
    async fn get_attempt(
        &self,
        app: AppId,
        message: MessageId,
        attempt: AttemptId,
    ) -> StoreResult<Attempt> {
        self.readers
            .read(move |c| delivery::get_attempt(c, app, message, attempt))
            .await
    }

    async fn resend(
        &self,
        app: AppId,
        message: MessageId,
        endpoint: EndpointId,
        claim: Claim,
    ) -> StoreResult<DeliveryJob> {
        let sealing = self.sealing.clone();
        self.writer
            .write(move |c| delivery::resend(c, app, message, endpoint, claim, &sealing))
            .await
    }
    async fn claim_due(
        &self,
        claim: Claim,
        limit: usize,
        skip: Vec<EndpointId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let sealing = self.sealing.clone();
        self.writer
            .write(move |c| delivery::claim_due(c, claim, limit, &skip, &sealing))
            .await
    }
    async fn release(&self, message: MessageId, endpoint: EndpointId) -> StoreResult<()> {
        self.release_until(message, endpoint, crate::shared::now())
            .await
    }
    async fn release_until(
        &self,
        message: MessageId,
        endpoint: EndpointId,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.writer
            .write(move |c| delivery::release(c, message, endpoint, at))
            .await
    }
    async fn record_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        self.writer
            .write(move |c| delivery::record_attempt(c, outcome))
            .await
    }
    async fn next_due_at(&self, skip: Vec<EndpointId>) -> StoreResult<Option<Timestamp>> {
        self.readers
            .read(move |c| delivery::next_due_at(c, &skip))
            .await
    }
    /// SQLite serves one process (the data-directory lock sees to it), so
    /// every lease in the file belongs to a run that is over.
    async fn release_orphaned_leases(&self) -> StoreResult<u64> {
        self.writer.write(delivery::release_orphaned_leases).await
    }

    async fn start_recovery(&self, app: AppId, recovery: Recovery) -> StoreResult<BackgroundTask> {
        self.writer
            .write(move |c| tasks::start_recovery(c, app, recovery))
            .await
    }
    async fn recovery_step(&self, task: TaskId, limit: usize) -> StoreResult<BackgroundTask> {
        self.writer
            .write(move |c| tasks::recovery_step(c, task, limit))
            .await
    }
    async fn get_task(&self, task: TaskId) -> StoreResult<BackgroundTask> {
        self.readers.read(move |c| tasks::get_task(c, task)).await
    }
    async fn running_tasks(&self) -> StoreResult<Vec<TaskId>> {
        self.readers.read(tasks::running_tasks).await
    }

    async fn record_health(
        &self,
        updates: Vec<HealthUpdate>,
        rule: Option<AutoDisable>,
    ) -> StoreResult<Vec<EndpointRun>> {
        self.writer
            .write(move |c| health::record_health(c, &updates, rule))
            .await
    }
    async fn check_success_rate(
        &self,
        endpoint: EndpointId,
        rule: RateRule,
        now: Timestamp,
    ) -> StoreResult<Option<RateDrop>> {
        self.writer
            .write(move |c| health::check_success_rate(c, endpoint, rule, now))
            .await
    }
    async fn endpoint_health(
        &self,
        app: AppId,
        endpoint: EndpointId,
        now: Timestamp,
    ) -> StoreResult<EndpointHealth> {
        self.readers
            .read(move |c| health::endpoint_health(c, app, endpoint, now))
            .await
    }
    async fn purge_messages(&self, before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.writer
            .write(move |c| delivery::purge_messages(c, before, limit))
            .await
    }
    async fn purge_health(&self, before: Timestamp) -> StoreResult<u64> {
        self.writer
            .write(move |c| health::purge_health(c, before))
            .await
    }

    async fn create_token(&self, input: TokenInput) -> StoreResult<Token> {
        self.writer
            .write(move |c| access::create_token(c, input))
            .await
    }
    async fn token_by_hash(&self, hash: [u8; 32]) -> StoreResult<Option<Token>> {
        self.readers
            .read(move |c| access::token_by_hash(c, &hash))
            .await
    }
    async fn list_tokens(&self, app: AppId, page: PageRequest) -> StoreResult<Page<Token>> {
        self.readers
            .read(move |c| access::list_tokens(c, app, page))
            .await
    }
    async fn revoke_token(&self, app: AppId, token: TokenId, at: Timestamp) -> StoreResult<Token> {
        self.writer
            .write(move |c| access::revoke_token(c, app, token, at))
            .await
    }
    async fn record_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        self.writer
            .write(move |c| access::record_audit(c, &entry))
            .await
    }
    async fn list_audit(&self, query: AuditQuery) -> StoreResult<Page<AuditEntry>> {
        self.readers
            .read(move |c| access::list_audit(c, query))
            .await
    }

    async fn open_inspector(&self, app: AppId, token: String) -> StoreResult<Inspector> {
        let now = crate::shared::now();
        self.writer
            .write(move |c| access::open_inspector(c, app, token, now))
            .await
    }
    async fn inspector(&self, app: AppId) -> StoreResult<Option<Inspector>> {
        self.readers
            .read(move |c| access::inspector_of(c, app))
            .await
    }
    async fn inspector_by_token(&self, token: String) -> StoreResult<Option<Inspector>> {
        self.readers
            .read(move |c| access::inspector_by_token(c, &token))
            .await
    }
    async fn close_inspector(&self, app: AppId) -> StoreResult<()> {
        self.writer
            .write(move |c| access::close_inspector(c, app))
            .await
    }
    async fn record_inspected(&self, request: InspectedRequest) -> StoreResult<()> {
        self.writer
            .admit(move |c| access::record_inspected(c, request))
            .await
    }
    async fn list_inspected(&self, app: AppId, limit: usize) -> StoreResult<Vec<InspectedRequest>> {
        self.readers
            .read(move |c| access::list_inspected(c, app, limit))
            .await
    }

    async fn reserve_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<Reservation> {
        let (scope, key, fingerprint) = (scope.to_owned(), key.to_owned(), fingerprint.to_owned());
        self.writer
            .write(move |c| {
                delivery::reserve_idempotency_key(c, &scope, &key, &fingerprint, now, stale_before)
            })
            .await
    }
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> StoreResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.writer
            .write(move |c| delivery::complete_idempotency_key(c, &scope, &key, response))
            .await
    }
    async fn abandon_idempotency_key(&self, scope: &str, key: &str) -> StoreResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.writer
            .write(move |c| delivery::abandon_idempotency_key(c, &scope, &key))
            .await
    }
    async fn purge_idempotency_keys(&self, before: Timestamp) -> StoreResult<u64> {
        self.writer
            .write(move |c| delivery::purge_idempotency_keys(c, before))
            .await
    }
}
