//! SQLite connection handling: one writer thread that commits queued writes
//! in batches (one transaction, one fsync for many requests) and a small pool
//! of read connections. In WAL mode readers never wait for the writer.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, Semaphore};

use crate::{StoreError, StoreResult};

/// Writes applied together in one transaction, at most.
const MAX_BATCH: usize = 1024;

type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

pub(crate) fn open_connection(path: &Path, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(internal)?;
    // FULL makes every commit durable across power loss, not only process
    // crashes: a 202 promises the message is stored. Batching pays for it.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16000;",
    )
    .map_err(internal)?;
    // Once the log has been copied back into the database and starts over,
    // a longer file is cut to this size: after a burst the WAL does not
    // keep its peak size on disk.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(internal)?;
    Ok(conn)
}

/// The single writer. Each submitted closure runs inside a savepoint of the
/// batch transaction, so one failing write does not undo the others; its
/// result is handed back only after the batch has committed.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// When and why a write batch last failed.
    failure: Arc<Mutex<Option<(std::time::Instant, String)>>>,
    /// Jobs sent and not yet taken by the writer thread.
    queued: Arc<AtomicUsize>,
    /// Above this many queued jobs, new work from clients is refused.
    admission_limit: usize,
}

impl Writer {
    /// Jobs waiting for the writer thread.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Why a write batch failed, if one did within `window`.
    pub(crate) fn recent_failure(&self, window: std::time::Duration) -> Option<String> {
        self.failure
            .lock()
            .expect("writer failure")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < window)
            .map(|(_, reason)| reason.clone())
    }

    pub(crate) fn start(conn: Connection, admission_limit: usize) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let failure = Arc::new(Mutex::new(None));
        let noted = failure.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || run_writer(conn, receiver, taken, noted))
            .expect("spawning the writer thread");
        Self {
            jobs,
            failure,
            queued,
            admission_limit,
        }
    }

    /// Like [`Writer::write`], for new work arriving from clients: refused
    /// with `Overloaded` while the queue is longer than the admission limit,
    /// so that a burst turns into 503s instead of unbounded memory and
    /// latency. The engine's own writes (attempt results) are never refused.
    pub(crate) async fn admit<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.queued.load(Ordering::Acquire) >= self.admission_limit {
            return Err(StoreError::Overloaded);
        }
        self.write(work).await
    }

    pub(crate) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, work);
            Box::new(move |committed: StoreResult<()>| {
                let _ = reply.send(committed.and(result));
            })
        });
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.jobs.send(job).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            StoreError::Unavailable("the writer has stopped".into())
        })?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }
}

/// Runs one statement from the cache: `execute_batch` would parse the SQL on
/// every call, which was a tenth of the writer's time at fan-out 10.
fn run_cached(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(internal)
}

fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    run_cached(conn, "SAVEPOINT job")?;
    match work(conn) {
        Ok(value) => {
            run_cached(conn, "RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            run_cached(conn, "ROLLBACK TO job")?;
            run_cached(conn, "RELEASE job")?;
            Err(error)
        }
    }
}

fn run_writer(
    conn: Connection,
    receiver: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    failure: Arc<Mutex<Option<(std::time::Instant, String)>>>,
) {
    let note = |outcome: Result<(), String>| {
        if let Err(error) = outcome {
            *failure.lock().expect("writer failure") = Some((std::time::Instant::now(), error));
        }
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let began = run_cached(&conn, "BEGIN IMMEDIATE");
        if let Err(error) = began {
            tracing::error!(%error, "could not begin a write transaction");
            note(Err(error.to_string()));
            for _job in batch.drain(..) {
                // Dropping a job drops its reply sender: the caller sees Unavailable.
            }
            continue;
        }
        for job in batch.drain(..) {
            completions.push(job(&conn));
        }
        let committed = run_cached(&conn, "COMMIT");
        if let Err(error) = &committed {
            tracing::error!(%error, "write batch failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
        }
        note(committed.as_ref().map(|_| ()).map_err(ToString::to_string));
        for completion in completions.drain(..) {
            let outcome = match &committed {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::Unavailable(error.to_string())),
            };
            completion(outcome);
        }
    }
}

/// Copies the WAL back into the database file from a thread of its own.
/// Left to SQLite, that checkpoint runs inside the writer's commit and stalls
/// every queued request while it copies and syncs; here it runs beside the
/// writer (`PASSIVE` never blocks it). The writer keeps a far larger
/// automatic threshold as a backstop. Stops when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

/// Pages of WAL after which the writer checkpoints by itself after all.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// Bytes of WAL kept on disk when it starts over after a checkpoint
/// (64 MiB): under steady load it is reused, not cut and regrown.
pub(crate) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// A WAL larger than this left behind by a burst is truncated once writes
/// pause (1 MiB).
const IDLE_WAL_KEPT: u64 = 1024 * 1024;

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> StoreResult<Self> {
        let conn = open_connection(path, false)?;
        let wal = {
            let mut name = path.as_os_str().to_owned();
            name.push("-wal");
            std::path::PathBuf::from(name)
        };
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                let mut last_log = -1;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(std::time::Duration::from_millis(250))
                {
                    match checkpoint(&conn, &wal, &mut last_log) {
                        Ok(()) => failing = false,
                        // Once per episode: a full disk fails every 250 ms.
                        Err(error) if !failing => {
                            failing = true;
                            tracing::warn!(%error, "WAL checkpoint failed");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Self { _stop: stop })
    }
}

/// Copies what it can of the WAL into the database without blocking the
/// writer. When writes have paused (no new frame since the last look) and
/// all of the log has been copied, a file left larger than
/// [`IDLE_WAL_KEPT`] by a burst is truncated: never under load, where
/// cutting and regrowing the file would cost every commit.
fn checkpoint(conn: &Connection, wal: &Path, last_log: &mut i64) -> rusqlite::Result<()> {
    let (log, copied): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    let idle = log == *last_log;
    *last_log = log;
    if idle && log > 0 && log == copied {
        let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        if size > IDLE_WAL_KEPT {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
    }
    Ok(())
}

/// A fixed set of read-only connections used from blocking threads.
#[derive(Debug, Clone)]
pub(crate) struct ReadPool {
    connections: Arc<Mutex<Vec<Connection>>>,
    available: Arc<Semaphore>,
    size: usize,
}

impl ReadPool {
    pub(crate) fn open(path: &Path, size: usize) -> StoreResult<Self> {
        let connections = (0..size)
            .map(|_| open_connection(path, true))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            connections: Arc::new(Mutex::new(connections)),
            available: Arc::new(Semaphore::new(size)),
            size,
        })
    }

    /// (connections, of which idle).
    pub(crate) fn usage(&self) -> (usize, usize) {
        (self.size, self.available.available_permits())
    }

    pub(crate) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = self
            .available
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("read pool closed".into()))?;
        let connections = self.connections.clone();
        tokio::task::spawn_blocking(move || {
            let conn = connections
                .lock()
                .expect("read pool lock")
                .pop()
                .expect("a permit guarantees a free connection");
            let result = work(&conn);
            connections.lock().expect("read pool lock").push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|error| StoreError::Internal(format!("read task failed: {error}")))?
    }
}

/// Maps a driver error into the store's vocabulary. Uniqueness violations
/// become conflicts naming the field, in this one place.
pub(crate) fn internal(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &error {
        if failure.code == rusqlite::ErrorCode::ConstraintViolation && message.starts_with("UNIQUE")
        {
            let field = if message.contains(".event_id") {
                "eventId"
            } else if message.contains(".uid") {
                "uid"
            } else if message.contains("event_types.name") {
                "name"
            } else {
                "id"
            };
            return StoreError::Conflict { field };
        }
        if matches!(
            failure.code,
            rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::CannotOpen
        ) {
            return StoreError::Unavailable(error.to_string());
        }
    }
    if matches!(error, rusqlite::Error::QueryReturnedNoRows) {
        return StoreError::NotFound;
    }
    StoreError::Internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_work_is_refused_while_the_queue_is_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(open_connection(&dir.path().join("t.db"), false).unwrap(), 2);
        // Hold the writer thread inside a job until released.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let blocker = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |_| {
                        let _ = started.send(());
                        held.recv().ok();
                        Ok(())
                    })
                    .await
            })
        };
        running.await.unwrap();
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.write(|_| Ok(())).await })
            })
            .collect();
        while writer.queued.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }

        let refused = writer.admit(|_| Ok(())).await;
        let engine_write = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(|_| Ok(())).await })
        };
        release.send(()).unwrap();

        assert!(
            matches!(refused, Err(StoreError::Overloaded)),
            "{refused:?}"
        );
        assert!(
            engine_write.await.unwrap().is_ok(),
            "the engine's writes still go through"
        );
        blocker.await.unwrap().unwrap();
        for job in queued {
            job.await.unwrap().unwrap();
        }
        assert!(
            writer.admit(|_| Ok(())).await.is_ok(),
            "admitted again once the queue drains"
        );
    }

    #[tokio::test]
    async fn the_write_ahead_log_is_truncated_once_writes_pause_after_a_burst() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open_connection(&path, false).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        // The writer never checkpoints by itself here: only the checkpointer.
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let writer = Writer::start(conn, 1_000_000);
        let _checkpointer = Checkpointer::start(&path).unwrap();
        let wal = dir.path().join("t.db-wal");

        // A burst of about 8 MB.
        for batch in 0..20 {
            writer
                .write(move |c| {
                    for n in 0..100 {
                        c.execute(
                            "INSERT INTO t (id, body) VALUES (?1, ?2)",
                            rusqlite::params![batch * 100 + n, "x".repeat(4000)],
                        )
                        .map_err(internal)?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
        let peak = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let mut size = peak;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            if size <= IDLE_WAL_KEPT {
                break;
            }
        }

        assert!(
            peak > IDLE_WAL_KEPT,
            "the burst grew the log ({peak} bytes)"
        );
        assert!(
            size <= IDLE_WAL_KEPT,
            "truncated after the burst: {size} bytes left of {peak}"
        );
    }
}
