//! Group commit for PostgreSQL: the hot writes — accepting a message,
//! recording an attempt, giving a delivery back — are queued, and a writer
//! task per kind takes whatever is queued and writes it with array-bound
//! statements (`UNNEST`), on a connection of its own. Under load one write
//! carries many requests, so the round trips and WAL flushes per message
//! fall from about ten and one to a couple and a fraction; with a single
//! request waiting, a batch is that request alone.
//!
//! When a batch's write fails for a reason other than the database being
//! unreachable, one item may have spoiled it for the rest, so each item is
//! then written again on its own and gets its own result.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot, Mutex};

use herald_domain::sealing::Sealing;
use herald_domain::AppId;

use super::rows::db;
use crate::shared::{self, now};
use crate::sql;
use crate::{
    AttemptOutcome, Claim, CreatedMessage, MessageInput, StoreError, StoreResult, Timestamp,
};

/// Most items written in one transaction.
const MAX_BATCH: usize = 256;
/// Writer tasks per kind of write. One: requests queue up while it commits,
/// so each batch is as large as the load makes it (two writers measured no
/// faster on two cores: 1,328–1,345 against 1,473 msgs/s, single runs).
const WRITERS: usize = 1;
/// Items that may wait for a writer; senders wait beyond this.
const QUEUE: usize = 4 * MAX_BATCH;

/// A write that can be done for many items in one transaction.
pub(crate) trait Batched: Send + Sync + Sized + 'static {
    type Output: Send + 'static;

    /// How long a writer waits for more items after the first of a batch.
    const LINGER: std::time::Duration = std::time::Duration::ZERO;

    /// Settings of the writer's own connection, run once when it opens.
    const SESSION: &'static str = "";

    /// Writes all of `batch` on `conn`, atomically (one statement, or a
    /// transaction it opens itself): one result per item, in order, or an
    /// error if nothing was written.
    fn write<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<Self::Output>>>> + Send + 'a;
}

struct Pending<B: Batched> {
    item: B,
    reply: oneshot::Sender<StoreResult<B::Output>>,
}

/// The queue in front of the writer tasks of one kind of write. The tasks
/// stop when the last handle is dropped.
pub(crate) struct Batcher<B: Batched> {
    queue: mpsc::Sender<Pending<B>>,
}

/// When this process's last write succeeded, unless one failed since: the
/// health check writes a probe row only when no write has shown lately that
/// the database takes them (a probe per call was a synced write per
/// load-balancer check).
#[derive(Debug, Default)]
pub(crate) struct RecentWrites {
    last_success: std::sync::Mutex<Option<std::time::Instant>>,
    /// One probe at a time; callers waiting for it reuse its outcome.
    probing: Mutex<()>,
}

impl RecentWrites {
    /// How long a successful write vouches for the database.
    pub(crate) const FRESH: std::time::Duration = std::time::Duration::from_secs(2);

    /// A failed write forgets the last success.
    pub(crate) fn record(&self, ok: bool) {
        *self.last_success.lock().expect("recent writes") = ok.then(std::time::Instant::now);
    }

    /// Whether a write succeeded within [`Self::FRESH`], none failing since.
    pub(crate) fn vouched(&self) -> bool {
        self.last_success
            .lock()
            .expect("recent writes")
            .is_some_and(|at| at.elapsed() < Self::FRESH)
    }

    /// Runs `probe` unless a write (or a probe that ran while this caller
    /// waited) already vouches for the database; records its outcome.
    pub(crate) async fn check(
        &self,
        probe: impl Future<Output = StoreResult<()>>,
    ) -> StoreResult<()> {
        if self.vouched() {
            return Ok(());
        }
        let _one = self.probing.lock().await;
        if self.vouched() {
            return Ok(());
        }
        let outcome = probe.await;
        self.record(outcome.is_ok());
        outcome
    }
}

impl<B: Batched> std::fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("queued", &self.queued())
            .finish()
    }
}

impl<B: Batched> Batcher<B> {
    pub(crate) fn start(pool: &PgPool, recent: &Arc<RecentWrites>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(writer(pool.clone(), receiver.clone(), recent.clone()));
        }
        Self { queue }
    }

    /// Items waiting for the writer (not those in the batch being written).
    pub(crate) fn queued(&self) -> usize {
        QUEUE - self.queue.capacity()
    }

    /// Queues `item` and waits until the transaction carrying it commits.
    pub(crate) async fn submit(&self, item: B) -> StoreResult<B::Output> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Pending { item, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        done.await
            .map_err(|_| StoreError::Internal("a batch writer stopped".into()))?
    }
}

async fn writer<B: Batched>(
    pool: PgPool,
    queue: Arc<Mutex<mpsc::Receiver<Pending<B>>>>,
    recent: Arc<RecentWrites>,
) {
    let mut taken = Vec::with_capacity(MAX_BATCH);
    // The writer's own connection, out of the pool: its session settings
    // are set once, and a batch is one or two round trips on it instead of
    // a transaction's five to seven (each a wake-up of both sides: on a
    // busy machine these round trips, not the work, were most of a
    // request's 20 ms).
    let mut conn: Option<PgConnection> = None;
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut taken, MAX_BATCH).await == 0 {
                return;
            }
            if !B::LINGER.is_zero() && taken.len() < MAX_BATCH {
                let _ = tokio::time::timeout(B::LINGER, async {
                    while taken.len() < MAX_BATCH {
                        let room = MAX_BATCH - taken.len();
                        if queue.recv_many(&mut taken, room).await == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        let (items, replies): (Vec<B>, Vec<_>) = taken.drain(..).map(|p| (p.item, p.reply)).unzip();
        for (reply, result) in replies
            .into_iter()
            .zip(write_all(&pool, &mut conn, &items, &recent).await)
        {
            let _ = reply.send(result);
        }
    }
}

async fn write_all<B: Batched>(
    pool: &PgPool,
    conn: &mut Option<PgConnection>,
    items: &[B],
    recent: &RecentWrites,
) -> Vec<StoreResult<B::Output>> {
    let outcome = write(pool, conn, items).await;
    // A batch spoiled by one item (written again one by one below) still
    // makes the health check probe: it cannot tell that from a full disk.
    recent.record(outcome.is_ok());
    match outcome {
        Ok(results) => results,
        Err(error) if items.len() > 1 && !matches!(error, StoreError::Unavailable(_)) => {
            tracing::debug!(%error, items = items.len(), "batch failed; writing its items one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                let mut alone = write(pool, conn, std::slice::from_ref(item)).await;
                results.push(match alone.as_mut().map(Vec::pop) {
                    Ok(Some(result)) => result,
                    Ok(None) => Err(StoreError::Internal("a batch lost its result".into())),
                    Err(error) => Err(error.clone()),
                });
            }
            results
        }
        Err(error) => items.iter().map(|_| Err(error.clone())).collect(),
    }
}

/// Writes `items` on the writer's connection, opening it first if there is
/// none; a connection that failed is closed, the next batch opens another.
async fn write<B: Batched>(
    pool: &PgPool,
    conn: &mut Option<PgConnection>,
    items: &[B],
) -> StoreResult<Vec<StoreResult<B::Output>>> {
    let open = match conn {
        Some(open) => open,
        None => conn.insert(open_connection(pool, B::SESSION).await?),
    };
    let result = B::write(open, items).await;
    if matches!(result, Err(StoreError::Unavailable(_))) {
        *conn = None;
    }
    result
}

/// A connection of its own for a writer, out of the pool (which may open
/// another in its place), with the writer's session settings.
async fn open_connection(pool: &PgPool, session: &'static str) -> StoreResult<PgConnection> {
    let mut fresh = pool.acquire().await.map_err(db)?.detach();
    for setting in session.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(setting).execute(&mut fresh).await.map_err(db)?;
    }
    Ok(fresh)
}

/// A message to accept: stored with one pending delivery per subscribed
/// endpoint, leased to the caller when a claim is given.
pub(crate) struct NewMessage {
    pub app: AppId,
    pub input: MessageInput,
    pub claim: Option<Claim>,
    /// Recorded with the message (a test event), in the same transaction.
    pub audit: Option<crate::AuditEntry>,
    /// How the endpoints' secrets are read.
    pub sealing: Arc<Sealing>,
}

/// What a batch of messages needs to know, in one query: which of its apps
/// (`kind` 0) and event types (1) exist, and the enabled endpoints of its
/// apps with their signing secrets (2; the rows of [`sql::TARGET_ROWS`]
/// for many apps at once, in its order).
const BATCH_CONTEXT_SQL: &str = "SELECT 0 AS kind, id AS name, NULL AS id, NULL AS url, NULL AS headers,
         NULL AS filter_types, NULL AS channels, NULL AS secret, NULL AS retry_policy,
         NULL::int8 AS rate_limit, FALSE AS strict_ordering, NULL AS options, FALSE AS dated,
         NULL::int8 AS created_at
     FROM apps WHERE id = ANY($1)
     UNION ALL SELECT 1, name, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, FALSE, NULL, FALSE, NULL
     FROM event_types WHERE name = ANY($2)
     UNION ALL SELECT 2, e.app_id, e.id, e.url, e.headers, e.filter_types, e.channels, s.secret,
         e.retry_policy, e.rate_limit, e.strict_ordering, e.options, s.expires_at IS NOT NULL,
         s.created_at
     FROM endpoints e JOIN endpoint_secrets s ON s.endpoint_id = e.id
     WHERE e.app_id = ANY($1) AND e.disabled = FALSE AND (s.expires_at IS NULL OR s.expires_at > $3)
     ORDER BY kind, name, id, dated, created_at DESC";

/// A batch's messages and their deliveries, in one statement (so in one
/// transaction). A clash on (app_id, event_id) skips the message and its
/// deliveries instead of spoiling the batch; the ids written come back.
const INSERT_MESSAGES_SQL: &str = "WITH m AS (
         INSERT INTO messages (id, app_id, event_id, event_type, payload, channels, created_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[])
         ON CONFLICT DO NOTHING
         RETURNING id
     ), d AS (
         INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
             next_attempt_at, lease_until, updated_at)
         SELECT m, e, a, 1, 0, k, COALESCE(l, d), l, t
         FROM UNNEST($8::text[], $9::text[], $10::text[], $11::int8[], $12::int8[], $13::int8[], $14::int8[])
             AS u(m, e, a, t, l, k, d)
         WHERE u.m IN (SELECT id FROM m)
     )
     SELECT id FROM m";

/// Settings of the connection that accepts messages (commits stay
/// synchronous: a 202 is durable). Its context query (`BATCH_CONTEXT_SQL`)
/// was planned anew at every batch — PostgreSQL kept preferring a custom
/// plan for its `= ANY($1)` lookups — and planning cost five times its
/// execution (1,054 against 206 ms over 20,000 messages,
/// `pg_stat_statements`). A generic plan is made once per connection, and
/// without sequential scans it is index lookups however young the tables
/// were when it was made.
const MESSAGE_SESSION: &str = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off";

impl Batched for NewMessage {
    type Output = CreatedMessage;
    const SESSION: &'static str = MESSAGE_SESSION;

    fn write<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<CreatedMessage>>>> + Send + 'a {
        create_messages(conn, batch)
    }
}

async fn create_messages(
    conn: &mut PgConnection,
    batch: &[NewMessage],
) -> StoreResult<Vec<StoreResult<CreatedMessage>>> {
    let batch_now = now();
    let apps: Vec<String> = distinct(batch.iter().map(|m| m.app.to_string()));
    let types: Vec<String> = distinct(batch.iter().map(|m| m.input.event_type.to_string()));
    let context = sqlx::query(BATCH_CONTEXT_SQL)
        .bind(&apps)
        .bind(&types)
        .bind(batch_now)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut known_apps = HashSet::new();
    let mut known_types = HashSet::new();
    let mut rows_by_app: HashMap<String, Vec<shared::TargetRow>> = HashMap::new();
    for row in context {
        let name: String = row.try_get("name").map_err(db)?;
        match row.try_get::<i32, _>("kind").map_err(db)? {
            0 => {
                known_apps.insert(name);
            }
            1 => {
                known_types.insert(name);
            }
            _ => rows_by_app
                .entry(name)
                .or_default()
                .push(shared::TargetRow {
                    id: row.try_get("id").map_err(db)?,
                    url: row.try_get("url").map_err(db)?,
                    headers: row.try_get("headers").map_err(db)?,
                    filter_types: row.try_get("filter_types").map_err(db)?,
                    channels: row.try_get("channels").map_err(db)?,
                    secret: row.try_get("secret").map_err(db)?,
                    retry_policy: row.try_get("retry_policy").map_err(db)?,
                    rate_limit: row.try_get("rate_limit").map_err(db)?,
                    strict_ordering: row.try_get("strict_ordering").map_err(db)?,
                    options: row.try_get("options").map_err(db)?,
                }),
        }
    }

    // Each app's endpoints decoded once for the whole batch (every item
    // carries the same sealing keys).
    let fan_outs: HashMap<String, shared::FanOut> = match batch.first() {
        Some(first) => rows_by_app
            .into_iter()
            .map(|(app, rows)| Ok((app, shared::FanOut::new(&rows, &first.sealing)?)))
            .collect::<StoreResult<_>>()?,
        None => HashMap::new(),
    };
    let no_endpoints = shared::FanOut::default();

    let mut results: Vec<StoreResult<CreatedMessage>> = Vec::with_capacity(batch.len());
    let mut accepted = Vec::new();
    let mut deliveries = DeliveryRows::default();
    for (index, item) in batch.iter().enumerate() {
        if !known_apps.contains(&item.app.to_string()) {
            results.push(Err(StoreError::NotFound));
            continue;
        }
        if !known_types.contains(item.input.event_type.as_str()) {
            results.push(Err(shared::unknown_event_type(&item.input.event_type)));
            continue;
        }
        let at = item.claim.as_ref().map_or(batch_now, |c| c.now);
        let message = shared::new_message(item.app, item.input.clone(), at);
        let fan_out = fan_outs
            .get(&message.app_id.to_string())
            .unwrap_or(&no_endpoints);
        // A test event whose endpoint is gone fails the batch, which is
        // then written again item by item.
        let targets = fan_out.matching(&message, item.input.to_endpoint, &item.input.filters)?;
        let trigger = shared::trigger_of(&item.input);
        let (due, claim) = shared::first_due(&item.input, at, item.claim.as_ref());
        for target in &targets {
            let lease = shared::lease(claim, target);
            deliveries.push(&message, target.id.to_string(), (lease, due), trigger);
        }
        // Replaced below once the message is known to be written.
        results.push(Err(StoreError::Conflict { field: "eventId" }));
        accepted.push((index, message, targets, trigger));
    }
    if accepted.is_empty() {
        return Ok(results);
    }

    let column = |f: &dyn Fn(&crate::Message) -> Option<String>| -> Vec<Option<String>> {
        accepted.iter().map(|(_, m, _, _)| f(m)).collect()
    };
    let insert = sqlx::query(INSERT_MESSAGES_SQL)
        .bind(column(&|m| Some(m.id.to_string())))
        .bind(column(&|m| Some(m.app_id.to_string())))
        .bind(column(&|m| m.event_id.as_ref().map(ToString::to_string)))
        .bind(column(&|m| Some(m.event_type.to_string())))
        .bind(column(&|m| Some(m.payload.clone())))
        .bind(column(&|m| {
            m.channels
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default())
        }))
        .bind(
            accepted
                .iter()
                .map(|(_, m, _, _)| m.created_at)
                .collect::<Vec<Timestamp>>(),
        )
        .bind(&deliveries.message)
        .bind(&deliveries.endpoint)
        .bind(&deliveries.app)
        .bind(&deliveries.at)
        .bind(&deliveries.lease_until)
        .bind(&deliveries.trigger)
        .bind(&deliveries.due);
    let ids = |rows: Vec<sqlx::postgres::PgRow>| -> StoreResult<HashSet<String>> {
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<sqlx::Result<_>>()
            .map_err(db)
    };
    // Audited messages (test events) are written with their entries in one
    // transaction, an entry only for a message written; the usual batch is
    // the one statement alone.
    let inserted = if accepted
        .iter()
        .all(|(index, ..)| batch[*index].audit.is_none())
    {
        ids(insert.fetch_all(&mut *conn).await.map_err(db)?)?
    } else {
        let mut transaction = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
        let inserted = ids(insert.fetch_all(&mut *transaction).await.map_err(db)?)?;
        for (index, message, ..) in &accepted {
            if let Some(entry) = batch[*index].audit.clone() {
                if inserted.contains(&message.id.to_string()) {
                    super::access::record_audit(&mut transaction, entry).await?;
                }
            }
        }
        transaction.commit().await.map_err(db)?;
        inserted
    };

    let mut wake_workers = false;
    for (index, message, targets, trigger) in accepted {
        if !inserted.contains(&message.id.to_string()) {
            continue;
        }
        let item = &batch[index];
        let (_, claim) = shared::first_due(&item.input, message.created_at, item.claim.as_ref());
        wake_workers |= claim.is_none() && !targets.is_empty();
        results[index] = Ok(shared::created(message, targets, claim, trigger));
    }
    if wake_workers {
        // After the commit: the workers it wakes find the rows written.
        super::delivery::notify_workers(conn).await?;
    }
    Ok(results)
}

/// Columns of the deliveries a batch of messages creates.
#[derive(Default)]
struct DeliveryRows {
    message: Vec<String>,
    endpoint: Vec<String>,
    app: Vec<String>,
    at: Vec<Timestamp>,
    lease_until: Vec<Option<Timestamp>>,
    trigger: Vec<i64>,
    due: Vec<Timestamp>,
}

impl DeliveryRows {
    fn push(
        &mut self,
        message: &crate::Message,
        endpoint: String,
        (lease_until, due): (Option<Timestamp>, Timestamp),
        trigger: herald_domain::Trigger,
    ) {
        self.trigger.push(trigger.code());
        self.due.push(due);
        self.message.push(message.id.to_string());
        self.endpoint.push(endpoint);
        self.app.push(message.app_id.to_string());
        self.at.push(message.created_at);
        self.lease_until.push(lease_until);
    }
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    values.filter(|v| seen.insert(v.clone())).collect()
}

impl Batched for AttemptOutcome {
    type Output = ();
    /// Recording an attempt is off the delivery's path (the receiver has
    /// its request already): waiting 5 ms for more makes batches several
    /// times larger, PostgreSQL's CPU per delivery a fifth lower and
    /// fan-out 10 18 % faster (BENCHMARKS.md, 2026-12-02 night).
    const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
    const SESSION: &'static str = OUTCOME_SESSION;

    fn write<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<()>>>> + Send + 'a {
        record_attempts(conn, batch)
    }
}

/// A batch's attempts and the new state of their deliveries, in one
/// statement. The lease check keeps a worker whose lease ran out (and
/// whose job was claimed again) from overwriting the new holder's state.
const RECORD_ATTEMPTS_SQL: &str = "WITH a AS (
         INSERT INTO attempts (id, app_id, message_id, endpoint_id, url, status, response_status_code,
             response, response_duration_ms, error_class, trigger_type, created_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
             $7::int8[], $8::text[], $9::int8[], $10::text[], $11::int8[], $12::int8[])
     )
     UPDATE deliveries d SET status = u.status, attempts = d.attempts + u.charged,
         next_attempt_at = u.next_at, lease_until = NULL, updated_at = u.at
     FROM UNNEST($3::text[], $4::text[], $13::int8[], $14::int8[], $12::int8[], $15::int8[], $16::int8[])
         AS u(message_id, endpoint_id, status, next_at, at, lease, charged)
     WHERE d.message_id = ANY($3) AND d.message_id = u.message_id AND d.endpoint_id = u.endpoint_id
         AND d.lease_until = u.lease";

/// Settings of the connections that record attempts and give deliveries
/// back. Not waiting for the WAL flush is safe: if PostgreSQL crashes
/// before it, the delivery is still leased-pending and is sent again
/// (at-least-once); only the lost attempt's log line is gone (a lost
/// give-back only makes the delivery wait for its lease to run out). Every
/// delivery is updated by its primary key, but the planner, misled by the
/// statistics of a young table (and keeping the plan it made then for the
/// connection's life), would join the batch to the whole table by a
/// sequential scan: measured at 7,000 rows read per batch after 20,000
/// messages. Without sequential scans the plan stays an index lookup per
/// row, whatever the statistics say.
const OUTCOME_SESSION: &str = "SET synchronous_commit = off; SET enable_seqscan = off";

async fn record_attempts(
    conn: &mut PgConnection,
    batch: &[AttemptOutcome],
) -> StoreResult<Vec<StoreResult<()>>> {
    let text = |f: &dyn Fn(&AttemptOutcome) -> Option<String>| -> Vec<Option<String>> {
        batch.iter().map(f).collect()
    };
    let int = |f: &dyn Fn(&AttemptOutcome) -> Option<i64>| -> Vec<Option<i64>> {
        batch.iter().map(f).collect()
    };
    let record = sqlx::query(RECORD_ATTEMPTS_SQL)
        .bind(text(&|o| Some(o.attempt.id.to_string())))
        .bind(text(&|o| Some(o.attempt.app_id.to_string())))
        .bind(text(&|o| Some(o.attempt.message_id.to_string())))
        .bind(text(&|o| Some(o.attempt.endpoint_id.to_string())))
        .bind(text(&|o| Some(o.attempt.url.clone())))
        .bind(int(&|o| Some(o.attempt.status.code())))
        .bind(int(&|o| Some(i64::from(o.attempt.response_status_code))))
        // PostgreSQL text cannot hold NUL bytes; receivers sometimes send them.
        .bind(text(&|o| {
            Some(o.attempt.response.replace('\0', "\u{FFFD}"))
        }))
        .bind(int(&|o| Some(o.attempt.response_duration_ms as i64)))
        .bind(text(&|o| {
            o.attempt.error_class.map(|c| c.as_str().to_owned())
        }))
        .bind(int(&|o| Some(o.attempt.trigger.code())))
        .bind(int(&|o| Some(o.attempt.created_at)))
        .bind(int(&|o| Some(o.next.delivery_state().0.code())))
        .bind(int(&|o| o.next.delivery_state().1))
        .bind(int(&|o| Some(o.lease_until)))
        .bind(int(&|o| Some(o.charged())));
    let gone: Vec<String> = batch
        .iter()
        .filter(|o| o.disable_endpoint)
        .map(|o| o.attempt.endpoint_id.to_string())
        .collect();
    if gone.is_empty() {
        record.execute(&mut *conn).await.map_err(db)?;
    } else {
        // An endpoint answered 410: disabled with the attempt that says so.
        let mut transaction = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
        record.execute(&mut *transaction).await.map_err(db)?;
        for endpoint in &gone {
            sqlx::query(sql::DISABLE_GONE.pg)
                .bind(now())
                .bind(endpoint)
                .execute(&mut *transaction)
                .await
                .map_err(db)?;
        }
        transaction.commit().await.map_err(db)?;
    }
    Ok(batch.iter().map(|_| Ok(())).collect())
}

/// A leased delivery given back, due again at `at` (its endpoint's share
/// was full, or its rate allowed no send within the lease).
pub(crate) struct Release {
    pub message: herald_domain::MessageId,
    pub endpoint: herald_domain::EndpointId,
    /// The lease the giver holds: nothing changes once it is not the
    /// delivery's lease any more.
    pub lease: Timestamp,
    pub at: Timestamp,
}

impl Batched for Release {
    type Output = ();
    /// Off every request's path, like recording an attempt.
    const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
    const SESSION: &'static str = OUTCOME_SESSION;

    fn write<'a>(
        conn: &'a mut PgConnection,
        batch: &'a [Self],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<()>>>> + Send + 'a {
        release_deliveries(conn, batch)
    }
}

async fn release_deliveries(
    conn: &mut PgConnection,
    batch: &[Release],
) -> StoreResult<Vec<StoreResult<()>>> {
    let column = |f: &dyn Fn(&Release) -> String| -> Vec<String> { batch.iter().map(f).collect() };
    sqlx::query(
        "UPDATE deliveries d SET lease_until = NULL, next_attempt_at = u.at
         FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])
             AS u(message_id, endpoint_id, at, lease)
         WHERE d.message_id = ANY($1) AND d.message_id = u.message_id
             AND d.endpoint_id = u.endpoint_id AND d.status = 1 AND d.lease_until = u.lease",
    )
    .bind(column(&|r| r.message.to_string()))
    .bind(column(&|r| r.endpoint.to_string()))
    .bind(batch.iter().map(|r| r.at).collect::<Vec<Timestamp>>())
    .bind(batch.iter().map(|r| r.lease).collect::<Vec<Timestamp>>())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(batch.iter().map(|_| Ok(())).collect())
}
