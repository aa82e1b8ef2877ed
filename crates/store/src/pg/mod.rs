//! The PostgreSQL implementation of [`Store`], for any number of Herald
//! processes sharing one database: every method is one transaction on a
//! pooled connection, due work is claimed with `FOR UPDATE SKIP LOCKED`
//! plus a lease, and `LISTEN/NOTIFY` wakes idle workers in every process.

mod access;
mod admin;
mod batch;
mod delivery;
mod health;
mod partitions;
mod rows;
mod statistics;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use herald_domain::sealing::Sealing;
use herald_domain::{
    AlertRules, AppId, AttemptId, EndpointId, EventTypeName, MessageId, Secret, TaskId, TokenId,
};

use crate::sql;
use crate::*;
use rows::db;

/// The channel on which committed, unleased work is announced, as SQL: one
/// per schema, so that deployments (or tests) sharing a database in
/// different schemas do not wake each other.
pub(crate) const WORK_CHANNEL_SQL: &str = "'herald_work_' || current_schema()";
/// Serialises migrations when several processes start at once.
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64; // "herald"
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_background_tasks.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_endpoint_health.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_retry_policy.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_disabled_reason.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_strict_ordering.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_success_rate.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_alert_rules.sql"),
    ),
    (
        9,
        include_str!("../../migrations/postgres/0009_tokens_audit.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_inspector.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_attempts_by_app.sql"),
    ),
    (
        12,
        include_str!("../../migrations/postgres/0012_endpoint_pacing.sql"),
    ),
    (
        13,
        include_str!("../../migrations/postgres/0013_idempotency_fingerprint.sql"),
    ),
    (
        14,
        include_str!("../../migrations/postgres/0014_store_probe.sql"),
    ),
    (
        15,
        include_str!("../../migrations/postgres/0015_statistics.sql"),
    ),
    (
        16,
        include_str!("../../migrations/postgres/0016_attempts_partitioned.sql"),
    ),
    (
        17,
        include_str!("../../migrations/postgres/0017_content_removal.sql"),
    ),
    (
        18,
        include_str!("../../migrations/postgres/0018_endpoint_options.sql"),
    ),
    (
        19,
        include_str!("../../migrations/postgres/0019_enforce_schema.sql"),
    ),
];

#[derive(Clone)]
pub struct PgOptions {
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a connection before the store reports
    /// itself unavailable (HTTP 503) rather than hanging.
    pub acquire_timeout: Duration,
    /// Use this schema (created if missing) instead of the default search path.
    pub schema: Option<String>,
    /// How signing secrets are stored (sealed with a master key, or plain).
    pub sealing: Sealing,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            schema: None,
            sealing: Sealing::default(),
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// The URL with its password replaced, for logs and `Debug`.
pub fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable database URL>".to_owned(),
    }
}

/// Stops a background task (the listener, the statistics keeper) when the
/// last handle to the store goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    sealing: Arc<Sealing>,
    pool: PgPool,
    work: Arc<Notify>,
    _listener: Arc<AbortOnDrop>,
    _statistics: Arc<AbortOnDrop>,
    _partitions: Arc<AbortOnDrop>,
    messages: Arc<batch::Batcher<batch::NewMessage>>,
    attempts: Arc<batch::Batcher<AttemptOutcome>>,
    releases: Arc<batch::Batcher<batch::Release>>,
    recent_writes: Arc<batch::RecentWrites>,
}

impl PgStore {
    /// Connects, migrates (under an advisory lock) and starts listening for work.
    pub async fn open(options: &PgOptions) -> StoreResult<Self> {
        let mut connect: PgConnectOptions = options
            .url
            .parse()
            .map_err(|e| StoreError::Internal(format!("invalid database URL: {e}")))?;
        if let Some(schema) = &options.schema {
            let bootstrap = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(connect.clone())
                .await
                .map_err(db)?;
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            ))
            .execute(&bootstrap)
            .await
            .map_err(db)?;
            bootstrap.close().await;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        // No ping before each acquire: it would double the round trips of
        // every transaction. A connection that broke while idle fails its
        // request with 503 once and is replaced.
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(db)?;
        migrate(&pool).await?;
        reseal(&pool, &options.sealing).await?;
        // Without autovacuum, dead rows are never reclaimed; the planner's
        // statistics Herald keeps fresh itself (statistics.rs).
        if let Ok(setting) = sqlx::query_scalar::<_, String>("SHOW autovacuum")
            .fetch_one(&pool)
            .await
        {
            if setting == "off" {
                tracing::warn!("PostgreSQL autovacuum is off: Herald keeps its tables' statistics fresh, but nothing reclaims the space of deleted and updated rows; enable autovacuum or VACUUM regularly");
            }
        }
        let work = Arc::new(Notify::new());
        let listener = listen(&pool, work.clone()).await?;
        let statistics = tokio::spawn(statistics::keep(pool.clone()));
        // Before any attempt is written: the days ahead must exist.
        partitions::create_ahead(&pool, crate::shared::now()).await?;
        let partitions = tokio::spawn(partitions::keep(pool.clone()));
        let recent_writes = Arc::new(batch::RecentWrites::default());
        Ok(Self {
            sealing: Arc::new(options.sealing.clone()),
            messages: Arc::new(batch::Batcher::start(&pool, &recent_writes)),
            attempts: Arc::new(batch::Batcher::start(&pool, &recent_writes)),
            releases: Arc::new(batch::Batcher::start(&pool, &recent_writes)),
            recent_writes,
            pool,
            work,
            _listener: Arc::new(AbortOnDrop(listener)),
            _statistics: Arc::new(AbortOnDrop(statistics)),
            _partitions: Arc::new(AbortOnDrop(partitions)),
        })
    }

    /// Applies pending migrations and returns the schema version.
    pub async fn migrate_only(options: &PgOptions) -> StoreResult<i64> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&options.url)
            .await
            .map_err(db)?;
        let version = migrate(&pool).await?;
        pool.close().await;
        Ok(version)
    }

    /// Runs `work` in one transaction, committed when it succeeds.
    async fn write<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut transaction = self.pool.begin().await.map_err(db)?;
        let value = work(&mut transaction).await?;
        transaction.commit().await.map_err(db)?;
        Ok(value)
    }

    /// Like [`PgStore::write`]: PostgreSQL has no writer queue to protect.
    async fn admit<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.write(work).await
    }

    /// Runs read-only `work` on a pooled connection.
    async fn read<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        work(&mut conn).await
    }
}

/// Checks at start that the stored secrets open with the configured keys,
/// and brings them to the current one (see the SQLite twin).
async fn reseal(pool: &PgPool, sealing: &Sealing) -> StoreResult<()> {
    use sqlx::Row;
    // Without a key there is nothing to seal: only a sealed secret matters.
    if sealing.current.is_none() {
        let sealed: Option<String> = sqlx::query_scalar(sql::ANY_SEALED_SECRET.pg)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
        return match sealed {
            Some(stored) => sealing
                .read(&stored)
                .map(|_| ())
                .map_err(|e| StoreError::Internal(shared::sealing_refusal(&e))),
            None => Ok(()),
        };
    }
    let rows = sqlx::query("SELECT endpoint_id, secret FROM endpoint_secrets")
        .fetch_all(pool)
        .await
        .map_err(db)?;
    for row in rows {
        let endpoint: String = row.try_get("endpoint_id").map_err(db)?;
        let stored: String = row.try_get("secret").map_err(db)?;
        let (secret, again) = sealing
            .read(&stored)
            .map_err(|e| StoreError::Internal(shared::sealing_refusal(&e)))?;
        if again {
            sqlx::query(
                "UPDATE endpoint_secrets SET secret = $1 WHERE endpoint_id = $2 AND secret = $3",
            )
            .bind(sealing.store(&secret))
            .bind(&endpoint)
            .bind(&stored)
            .execute(pool)
            .await
            .map_err(db)?;
        }
    }
    Ok(())
}

async fn migrate(pool: &PgPool) -> StoreResult<i64> {
    let mut conn = pool.acquire().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let result = async {
        // Checked first rather than `IF NOT EXISTS`, which logs a notice on every start.
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('schema_migrations')::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        if exists.is_none() {
            sqlx::query(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
        let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        let mut version = current;
        for (number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > current) {
            let mut transaction = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
            sqlx::raw_sql(sql).execute(&mut *transaction).await.map_err(db)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(number)
                .bind(crate::shared::now())
                .execute(&mut *transaction)
                .await
                .map_err(db)?;
            transaction.commit().await.map_err(db)?;
            version = *number;
        }
        Ok(version)
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    result
}

/// Turns notifications into wake-ups. The listener reconnects by itself
/// after an outage; a wake-up is sent then too, since notifications sent
/// while it was away are lost.
async fn listen(pool: &PgPool, work: Arc<Notify>) -> StoreResult<tokio::task::JoinHandle<()>> {
    let channel: String = sqlx::query_scalar(&format!("SELECT {WORK_CHANNEL_SQL}"))
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let mut listener = PgListener::connect_with(pool).await.map_err(db)?;
    listener.listen(&channel).await.map_err(db)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(_) => work.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, "lost the notification connection; reconnecting");
                    work.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

/// Writes `impl Store for PgStore`: the methods given in braces, and one
/// per delegated method (see [`crate::delegate`]) running its function in
/// [`PgStore::read`], [`PgStore::write`] or [`PgStore::admit`].
macro_rules! pg_store {
    (
        { $($own:tt)* }
        $($kind:ident $name:ident($($arg:ident: $ty:ty $(=> $owned:ty)?),*) $(+ $audit:ident)?
            -> $out:ty = $module:ident::$func:ident $([$extra:ident])?;)*
    ) => {
        #[async_trait]
        impl Store for PgStore {
            $($own)*
            $(
                async fn $name(
                    &self,
                    $($arg: $ty,)*
                    $($audit: Option<AuditEntry>)?
                ) -> StoreResult<$out> {
                    self.$kind(async |c| {
                        let value = $module::$func(c, $($arg,)* $(&self.$extra)?).await?;
                        $(
                            if let Some(entry) = crate::delegate::completed(&value, $audit) {
                                access::record_audit(c, entry).await?;
                            }
                        )?
                        Ok(value)
                    })
                    .await
                }
            )*
        }
    };
}

crate::delegate::delegated!(pg_store {
    async fn queue_gauges(&self, now: Timestamp) -> StoreResult<QueueGauges> {
        self.read(async |c| {
            let row = sqlx::query(sql::QUEUE_GAUGES.pg)
                .bind(now)
                .fetch_one(c)
                .await
                .map_err(db)?;
            let count = |i: usize| {
                sqlx::Row::try_get::<i64, _>(&row, i)
                    .map(|n| n.max(0) as u64)
                    .map_err(db)
            };
            Ok(QueueGauges {
                due: count(0)?,
                scheduled: count(1)?,
                disabled_endpoints: count(2)?,
                failing_endpoints: count(3)?,
            })
        })
        .await
    }
    async fn endpoint_gauges(&self) -> StoreResult<Vec<EndpointGauge>> {
        self.read(async |c| {
            let rows = sqlx::query(sql::ENDPOINT_GAUGES.pg)
                .fetch_all(c)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    use sqlx::Row;
                    let app: String = row.try_get(0).map_err(db)?;
                    let endpoint: String = row.try_get(1).map_err(db)?;
                    let failures: i64 = row.try_get(3).map_err(db)?;
                    Ok(EndpointGauge {
                        app_id: AppId::parse(&app)
                            .map_err(|e| StoreError::Internal(e.to_string()))?,
                        endpoint_id: EndpointId::parse(&endpoint)
                            .map_err(|e| StoreError::Internal(e.to_string()))?,
                        disabled: row.try_get(2).map_err(db)?,
                        consecutive_failures: failures.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }
    fn pool_usage(&self) -> PoolUsage {
        PoolUsage {
            connections: u64::from(self.pool.size()),
            idle: self.pool.num_idle() as u64,
            max: u64::from(self.pool.options().get_max_connections()),
            queued_writes: (self.messages.queued()
                + self.attempts.queued()
                + self.releases.queued()) as u64,
        }
    }
    async fn ping(&self) -> StoreResult<()> {
        self.read(async |c| {
            sqlx::query("SELECT 1").execute(c).await.map_err(db)?;
            Ok(())
        })
        .await
    }
    async fn check_writes(&self) -> StoreResult<()> {
        self.recent_writes
            .check(self.write(async |c| {
                sqlx::query(sql::PROBE_WRITE.pg)
                    .bind(shared::now())
                    .execute(c)
                    .await
                    .map_err(db)?;
                Ok(())
            }))
            .await
    }
    async fn create_message(
        &self,
        app: AppId,
        input: MessageInput,
        claim: Option<Claim>,
        audit: Option<AuditEntry>,
    ) -> StoreResult<CreatedMessage> {
        self.messages
            .submit(batch::NewMessage {
                app,
                input,
                claim,
                audit,
                sealing: self.sealing.clone(),
            })
            .await
    }
    /// Batched: under overload every endpoint share is full and deliveries
    /// are given back by the thousand; one transaction each was work added
    /// exactly when there was no room for it.
    async fn release_until(&self, job: &DeliveryJob, at: Timestamp) -> StoreResult<()> {
        self.releases
            .submit(batch::Release {
                message: job.message.id,
                endpoint: job.endpoint.id,
                lease: job.lease_until,
                at,
            })
            .await
    }
    async fn reserve_send(
        &self,
        endpoint: EndpointId,
        interval_ms: i64,
        now: Timestamp,
        deadline: Timestamp,
    ) -> StoreResult<SendSlot> {
        self.write(async |c| {
            delivery::reserve_send(c, endpoint, interval_ms, now, deadline).await
        })
        .await
    }
    async fn record_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        self.attempts.submit(outcome).await
    }
    /// Other processes may hold leases here: none is released early; a dead
    /// holder's leases simply run out.
    async fn release_orphaned_leases(&self) -> StoreResult<u64> {
        Ok(0)
    }
    async fn wait_for_work(&self) {
        self.work.notified().await;
    }
    async fn drop_attempts_before(&self, before: Timestamp) -> StoreResult<u64> {
        partitions::drop_before(&self.pool, before, crate::shared::now()).await
    }
});
