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

use crate::sql;
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
    (
        15,
        include_str!("../../migrations/sqlite/0015_content_removal.sql"),
    ),
    (
        16,
        include_str!("../../migrations/sqlite/0016_endpoint_options.sql"),
    ),
    (
        17,
        include_str!("../../migrations/sqlite/0017_enforce_schema.sql"),
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
    /// Runs `work` on a read connection.
    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.read(work).await
    }

    /// Runs `work` on the writer thread, in its next batch.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(work).await
    }

    /// Like [`SqliteStore::write`], refused while the writer is overloaded.
    async fn admit<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.admit(work).await
    }

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
            .query_row(sql::ANY_SEALED_SECRET.sqlite, [], |r| r.get(0))
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

/// Lends a delegated function an argument the trait takes by reference
/// (moved to the writer or reader thread as an owned copy).
macro_rules! lent {
    ($arg:ident, $owned:ty) => {
        &$arg
    };
    ($arg:ident) => {
        $arg
    };
}

/// Writes `impl Store for SqliteStore`: the methods given in braces, and
/// one per delegated method (see [`crate::delegate`]) running its function
/// on a reader, or on the writer thread with or without admission control.
macro_rules! sqlite_store {
    (
        { $($own:tt)* }
        $($kind:ident $name:ident($($arg:ident: $ty:ty $(=> $owned:ty)?),*) $(+ $audit:ident)?
            -> $out:ty = $module:ident::$func:ident $([$extra:ident])?;)*
    ) => {
        #[async_trait]
        impl Store for SqliteStore {
            $($own)*
            $(
                async fn $name(
                    &self,
                    $($arg: $ty,)*
                    $($audit: Option<AuditEntry>)?
                ) -> StoreResult<$out> {
                    $($(let $arg: $owned = ToOwned::to_owned($arg);)?)*
                    $(let $extra = self.$extra.clone();)?
                    self.$kind(move |c| {
                        let value = $module::$func(c, $(lent!($arg $(, $owned)?),)* $(&$extra)?)?;
                        $(
                            if let Some(entry) = crate::delegate::completed(&value, $audit) {
                                access::record_audit(c, entry)?;
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

crate::delegate::delegated!(sqlite_store {
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
                c.query_row(sql::QUEUE_GAUGES.sqlite, [now], |row| {
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
                    .prepare_cached(sql::ENDPOINT_GAUGES.sqlite)
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
    async fn create_message(
        &self,
        app: AppId,
        input: MessageInput,
        claim: Option<Claim>,
        audit: Option<AuditEntry>,
    ) -> StoreResult<CreatedMessage> {
        let sealing = self.sealing.clone();
        self.writer
            .admit(move |c| {
                let created = delivery::create_message(c, app, input, claim, &sealing)?;
                if let Some(entry) = audit {
                    access::record_audit(c, entry)?;
                }
                Ok(created)
            })
            .await
    }
    async fn release_until(&self, job: &DeliveryJob, at: Timestamp) -> StoreResult<()> {
        let (message, endpoint, lease) = (job.message.id, job.endpoint.id, job.lease_until);
        self.writer
            .write(move |c| delivery::release(c, message, endpoint, lease, at))
            .await
    }
    async fn record_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        self.writer
            .write(move |c| delivery::record_attempt(c, outcome))
            .await
    }
    /// SQLite serves one process (the data-directory lock sees to it), so
    /// every lease in the file belongs to a run that is over.
    async fn release_orphaned_leases(&self) -> StoreResult<u64> {
        self.writer.write(delivery::release_orphaned_leases).await
    }
});
