//! What both backends share: column lists (the schemas are twins) and the
//! arithmetic of a page.

use std::sync::Arc;

use herald_domain::{
    AlertRules, AlertRulesSpec, AppId, DeliveryStatus, EndpointId, EndpointUrl, EventTypeName,
    FilterTypes, MessageId, RetryPolicy, Secret, TaskId, Trigger,
};

use herald_domain::sealing::Sealing;
use herald_domain::{expr, DeliveryOptions};

use crate::{
    AttemptFilter, AttemptQuery, AutoDisable, BackgroundTask, Claim, CreatedMessage, Cursor,
    DeliveryJob, Endpoint, EndpointRun, EndpointTarget, HealthCounts, HealthUpdate, Message,
    MessageInput, PageRequest, RateRule, Recovery, Reservation, StoreError, StoreResult,
    StoredResponse, TaskStatus, Timestamp, HEALTH_BUCKET_MS, LATENCY_BINS,
};

/// The wall clock in unix milliseconds.
pub(crate) fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub(crate) const APP_COLUMNS: &str = "id, uid, name, rate_limit, metadata, created_at, updated_at";
pub(crate) const EVENT_TYPE_COLUMNS: &str = "name, description, schemas, archived, deprecated, feature_flag, group_name, created_at, updated_at, enforce_schema";
/// An endpoint's columns, in the order both backends' row readers take
/// them (a macro so that longer lists can be made from it with `concat!`).
macro_rules! endpoint_columns {
    () => {
        "id, app_id, uid, url, description, disabled, filter_types, channels, rate_limit, version, metadata, headers, created_at, updated_at, retry_policy, disabled_reason, disabled_at, strict_ordering, options"
    };
}
pub(crate) use endpoint_columns;
pub(crate) const ENDPOINT_COLUMNS: &str = endpoint_columns!();
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, app_id, event_id, event_type, payload, channels, created_at";
pub(crate) const ATTEMPT_COLUMNS: &str = "id, app_id, message_id, endpoint_id, url, status, response_status_code, response, response_duration_ms, error_class, trigger_type, created_at";

/// A destination's status and next attempt, from its delivery's columns
/// (a pending delivery leased to a worker is being sent).
pub(crate) fn destination_state(
    status: i64,
    next_attempt_at: Option<Timestamp>,
    lease_until: Option<Timestamp>,
) -> (DeliveryStatus, Option<Timestamp>) {
    match DeliveryStatus::from_code(status).unwrap_or(DeliveryStatus::Failed) {
        DeliveryStatus::Pending if lease_until.is_some() => (DeliveryStatus::Sending, None),
        DeliveryStatus::Pending => (DeliveryStatus::Pending, next_attempt_at),
        other => (other, None),
    }
}

/// A row of [`crate::sql::PENDING_OF_ENDPOINT`], from its columns.
pub(crate) fn pending_delivery(
    message_id: &str,
    event_type: String,
    attempts: i64,
    next_attempt_at: Option<Timestamp>,
    lease_until: Option<Timestamp>,
) -> StoreResult<crate::PendingDelivery> {
    let (status, next_attempt) =
        destination_state(DeliveryStatus::Pending.code(), next_attempt_at, lease_until);
    Ok(crate::PendingDelivery {
        message_id: MessageId::parse(message_id)
            .map_err(|e| StoreError::Internal(e.to_string()))?,
        event_type,
        attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
        status,
        next_attempt,
    })
}

/// What the attempt that was never made says (error class
/// `content_removed`).
pub(crate) const CONTENT_REMOVED_WHY: &str =
    "not sent: the message's content was removed while this delivery was pending";

/// The `LIKE` pattern of stored idempotent answers that carry `message`
/// (its `"id"`), so that removing its content blanks it there too.
pub(crate) fn answers_of(message: MessageId) -> String {
    let id = crate::listing::escape_like(&message.to_string());
    format!("%\"id\":\"{id}\"%")
}

/// One row of [`TARGET_ROWS_SQL`].
#[derive(Debug)]
pub(crate) struct TargetRow {
    pub id: String,
    pub url: String,
    pub headers: String,
    pub filter_types: Option<String>,
    pub channels: Option<String>,
    pub secret: String,
    pub retry_policy: Option<String>,
    pub rate_limit: Option<i64>,
    pub strict_ordering: bool,
    pub options: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The endpoints among `rows` that subscribe to `event_type` on `channels`,
/// each with all its signing secrets.
/// With `only`, just that endpoint, whatever it subscribes to; an error
/// when it is not among `rows` (disabled, or not this app's).
pub(crate) fn matching_targets(
    rows: &[TargetRow],
    message: &Message,
    (only, decided): (Option<EndpointId>, &crate::FilterDecisions),
    sealing: &Sealing,
) -> StoreResult<Vec<Arc<EndpointTarget>>> {
    FanOut::new(rows, sealing)?.matching(message, only, decided)
}

/// An app's enabled endpoints as the fan-out needs them, decoded once:
/// URL, headers, secrets (opened), retry policy, subscriptions and
/// options. A batch of messages to one app shares them; each message then
/// costs only its subscription and filter checks, and its jobs share the
/// endpoints' `Arc`s. (Decoding per message was a URL parse, a secret
/// opened and four JSON documents read per message and endpoint.)
#[derive(Default)]
pub(crate) struct FanOut {
    endpoints: Vec<FanOutEndpoint>,
}

struct FanOutEndpoint {
    target: Arc<EndpointTarget>,
    filter: FilterTypes,
    channels: Option<Vec<String>>,
}

impl FanOut {
    /// From the rows of [`TARGET_ROWS_SQL`] (an endpoint's rows together,
    /// one per signing secret, newest first).
    pub(crate) fn new(rows: &[TargetRow], sealing: &Sealing) -> StoreResult<Self> {
        // Each endpoint's secrets are gathered before it is shared.
        let mut decoded: Vec<(EndpointTarget, FilterTypes, Option<Vec<String>>)> = Vec::new();
        let mut last_id: Option<&str> = None;
        for row in rows {
            let secret = read_secret(sealing, &row.secret)?;
            if last_id == Some(row.id.as_str()) {
                if let Some((target, ..)) = decoded.last_mut() {
                    target.secrets.push(secret);
                }
                continue;
            }
            last_id = Some(row.id.as_str());
            let filter = match &row.filter_types {
                Some(text) => FilterTypes::stored(&decode::<Vec<String>>(text)?)
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
                None => FilterTypes::all(),
            };
            let channels = row.channels.as_deref().map(decode).transpose()?;
            let options = DeliveryOptions::decode(row.options.as_deref());
            decoded.push((target(row, secret, options)?, filter, channels));
        }
        Ok(Self {
            endpoints: decoded
                .into_iter()
                .map(|(target, filter, channels)| FanOutEndpoint {
                    target: Arc::new(target),
                    filter,
                    channels,
                })
                .collect(),
        })
    }

    /// The endpoints that want `message`, or just `only` (see
    /// [`matching_targets`]).
    pub(crate) fn matching(
        &self,
        message: &Message,
        only: Option<EndpointId>,
        decided: &crate::FilterDecisions,
    ) -> StoreResult<Vec<Arc<EndpointTarget>>> {
        if let Some(only) = only {
            return self
                .endpoints
                .iter()
                .find(|endpoint| endpoint.target.id == only)
                .map(|endpoint| vec![endpoint.target.clone()])
                .ok_or_else(|| StoreError::Invalid {
                    field: "endpoint",
                    detail: "is disabled or does not belong to this app".into(),
                });
        }
        let (event_type, channels) = (&message.event_type, message.channels.as_deref());
        // Parsed for the first endpoint with a filter, then shared, like the
        // cost budget all of the message's filters draw on.
        let mut subject = None;
        let mut budget = expr::FANOUT_BUDGET;
        let deadline = std::time::Instant::now() + expr::FANOUT_DEADLINE;
        let mut targets = Vec::new();
        for endpoint in &self.endpoints {
            let mut wanted = subscribes_to(
                &endpoint.filter,
                endpoint.channels.as_deref(),
                event_type,
                channels,
            );
            if let (true, Some(source)) = (wanted, &endpoint.target.options.filter) {
                wanted = match decided.get(endpoint.target.id, source) {
                    Some(passes) => passes,
                    None => passes_filter(
                        source,
                        message,
                        &endpoint.target.id,
                        &mut subject,
                        (&mut budget, deadline),
                    ),
                };
            }
            if wanted {
                targets.push(endpoint.target.clone());
            }
        }
        Ok(targets)
    }
}

/// Whether `message` passes an endpoint's filter expression. A filter
/// that fails on it (a field it reads is missing, the payload is not what
/// it expects, it spends its budget or what is left of the message's, it
/// runs past its deadline or the message's) does not let the message
/// through; the endpoint's health shows the failure.
fn passes_filter<'m>(
    source: &str,
    message: &'m Message,
    endpoint: &EndpointId,
    subject: &mut Option<Result<expr::Subject<'m>, expr::EvalError>>,
    (budget, deadline): (&mut u64, std::time::Instant),
) -> bool {
    let program = match expr::cached(source) {
        Ok(program) => program,
        Err(error) => {
            tracing::warn!(%error, "an endpoint's stored filter does not compile");
            expr::count_filter(&Err(expr::EvalError::Failed(error.0)));
            return false;
        }
    };
    let subject = subject.get_or_insert_with(|| message.subject());
    let outcome = subject
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|subject| program.matches_within(&subject.input(), budget, deadline));
    expr::count_filter(&outcome);
    match outcome {
        Ok(passes) => passes,
        Err(error) => {
            expr::note_filter_failure(&endpoint.to_string(), &error, message.created_at);
            tracing::debug!(message = %message.id, %error, "a filter failed on a message");
            false
        }
    }
}

/// Whether an endpoint with these subscriptions (`None`: everything) wants
/// a message of `event_type` sent on `channels`.
pub(crate) fn subscribes(
    filter_types: Option<&[String]>,
    endpoint_channels: Option<&[String]>,
    event_type: &EventTypeName,
    channels: Option<&[String]>,
) -> StoreResult<bool> {
    let filter = match filter_types {
        Some(names) => {
            FilterTypes::stored(names).map_err(|e| StoreError::Internal(e.to_string()))?
        }
        None => FilterTypes::all(),
    };
    Ok(subscribes_to(
        &filter,
        endpoint_channels,
        event_type,
        channels,
    ))
}

/// [`subscribes`] with the subscriptions parsed.
pub fn subscribes_to(
    filter: &FilterTypes,
    endpoint_channels: Option<&[String]>,
    event_type: &EventTypeName,
    channels: Option<&[String]>,
) -> bool {
    let mut wanted = filter.matches(event_type);
    if let Some(endpoint_channels) = endpoint_channels {
        let shared = channels.is_some_and(|c| c.iter().any(|c| endpoint_channels.contains(c)));
        wanted &= endpoint_channels.is_empty() || shared;
    }
    wanted
}

fn target(
    row: &TargetRow,
    secret: Secret,
    options: DeliveryOptions,
) -> StoreResult<EndpointTarget> {
    Ok(EndpointTarget {
        id: EndpointId::parse(&row.id).map_err(|e| StoreError::Internal(e.to_string()))?,
        url: EndpointUrl::stored(&row.url).map_err(|e| StoreError::Internal(e.to_string()))?,
        headers: decode(&row.headers)?,
        secrets: vec![secret],
        retry_policy: decode_policy(row.retry_policy.as_deref())?.map(Arc::new),
        rate_limit: row
            .rate_limit
            .map(|r| r.clamp(0, i64::from(u32::MAX)) as u32),
        strict_ordering: row.strict_ordering,
        options,
    })
}

/// Claims take a strictly ordered endpoint's deliveries one at a time, in
/// message order: only its oldest pending delivery can be due (while that
/// one is in flight or waiting for a retry, the rest wait).
pub(crate) const STRICT_ORDER_SQL: &str = "AND (NOT e.strict_ordering OR d.message_id = (
     SELECT MIN(o.message_id) FROM deliveries o WHERE o.endpoint_id = d.endpoint_id AND o.status = 1))";

/// An endpoint's retry policy as stored (JSON of its spec).
pub(crate) fn encode_policy(policy: Option<&RetryPolicy>) -> Option<String> {
    policy.map(|p| serde_json::to_string(&p.to_spec()).unwrap_or_default())
}

pub(crate) fn decode_policy(text: Option<&str>) -> StoreResult<Option<RetryPolicy>> {
    text.map(|text| {
        let spec = decode(text)?;
        RetryPolicy::from_spec(&spec)
            .map_err(|e| StoreError::Internal(format!("stored retry policy unreadable: {e}")))
    })
    .transpose()
}

/// An app's alert rules as stored (JSON of [`AlertRulesSpec`]).
pub(crate) fn encode_alert_rules(rules: Option<&AlertRules>) -> Option<String> {
    rules.map(|r| serde_json::to_string(r.spec()).unwrap_or_default())
}

pub(crate) fn decode_alert_rules(text: &str) -> StoreResult<AlertRules> {
    let spec: AlertRulesSpec = decode(text)?;
    AlertRules::parse(spec)
        .map_err(|e| StoreError::Internal(format!("stored alert rules unreadable: {e}")))
}

/// Previous secrets that keep signing during their grace period, at most:
/// with the current one, a delivery carries at most five signatures however
/// often the secret is rotated.
pub(crate) const MAX_PREVIOUS_SECRETS: i64 = 4;

/// Why Herald will not start on these secrets, for the operator.
pub(crate) fn sealing_refusal(error: &herald_domain::sealing::OpenError) -> String {
    use herald_domain::sealing::OpenError;
    match error {
        OpenError::NoKey => "the database holds encrypted signing secrets; set HERALD_MASTER_KEY to the key they were encrypted with".to_owned(),
        OpenError::WrongKey => "HERALD_MASTER_KEY does not open the stored signing secrets (wrong key? while rotating, set HERALD_PREVIOUS_MASTER_KEY to the old one)".to_owned(),
        OpenError::Malformed => "a stored signing secret is malformed".to_owned(),
    }
}

/// A stored signing secret, opened (see `herald_domain::sealing`).
pub(crate) fn read_secret(sealing: &Sealing, stored: &str) -> StoreResult<Secret> {
    sealing
        .read(stored)
        .map(|(secret, _)| secret)
        .map_err(|e| StoreError::Internal(format!("stored secret unreadable: {e}")))
}

/// The lease a new delivery to `target` is written with: the claim's, when
/// it leases that endpoint (see [`Claim::leases`]).
pub(crate) fn lease(claim: Option<&Claim>, target: &EndpointTarget) -> Option<Timestamp> {
    claim.filter(|c| c.leases(target)).map(|c| c.until)
}

/// When a new message's deliveries are first due, accepted at `at`: its
/// `deliverAt`, or at once; and the claim that may lease them (none when
/// they are due later).
pub(crate) fn first_due<'c>(
    input: &MessageInput,
    at: Timestamp,
    claim: Option<&'c Claim>,
) -> (Timestamp, Option<&'c Claim>) {
    match input.deliver_at {
        Some(due) if due > at => (due, None),
        _ => (at, claim),
    }
}

/// The result of storing a message: with a claim, one leased job per
/// matching endpoint the claim leases (see [`Claim::leases`]), ready to send.
pub(crate) fn created(
    message: Arc<Message>,
    targets: Vec<Arc<EndpointTarget>>,
    claim: Option<&Claim>,
    trigger: Trigger,
) -> CreatedMessage {
    let deliveries = targets.len();
    let Some(claim) = claim else {
        return CreatedMessage {
            message,
            jobs: Vec::new(),
            deliveries,
            for_claims: deliveries,
        };
    };
    let for_claims = targets.iter().filter(|t| t.strict_ordering).count();
    let jobs = targets
        .into_iter()
        .filter(|target| claim.leases(target))
        .map(|endpoint| DeliveryJob {
            message: message.clone(),
            endpoint,
            attempts_made: 0,
            trigger,
            lease_until: claim.until,
        })
        .collect();
    CreatedMessage {
        message,
        jobs,
        deliveries,
        for_claims,
    }
}

/// How a new message's deliveries are attempted: a test event to one
/// endpoint once, by hand; everything else on the retry schedule.
pub(crate) fn trigger_of(input: &MessageInput) -> Trigger {
    if input.to_endpoint.is_some() {
        Trigger::Manual
    } else {
        Trigger::Scheduled
    }
}

/// A new message of `app` accepted at `at`.
pub(crate) fn new_message(app: AppId, input: MessageInput, at: Timestamp) -> Arc<Message> {
    Arc::new(Message {
        id: MessageId::generate(),
        app_id: app,
        event_id: input.event_id,
        event_type: input.event_type,
        payload: input.payload,
        channels: input.channels,
        created_at: at,
    })
}

pub(crate) fn unknown_event_type(name: &EventTypeName) -> StoreError {
    StoreError::Invalid {
        field: "eventType",
        detail: format!("unknown event type `{name}`"),
    }
}

pub(crate) const TASK_COLUMNS: &str = "id, app_id, status, params, done, created_at, updated_at";

/// One row of [`TASK_COLUMNS`].
pub(crate) struct TaskRow {
    pub id: String,
    pub app_id: String,
    pub status: String,
    pub params: String,
    pub done: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Attempt counts by status code as outcomes (0 succeeded, else failed).
pub(crate) fn attempt_stats(counts: Vec<(i64, u64)>) -> crate::AttemptStats {
    let mut stats = crate::AttemptStats::default();
    for (status, count) in counts {
        if status == 0 {
            stats.success += count;
        } else {
            stats.fail += count;
        }
    }
    stats
}

/// A page of task rows, read.
pub(crate) fn tasks_page(rows: crate::Page<TaskRow>) -> StoreResult<crate::Page<BackgroundTask>> {
    Ok(crate::Page {
        data: rows
            .data
            .into_iter()
            .map(task)
            .collect::<StoreResult<_>>()?,
        iterator: rows.iterator,
        prev_iterator: rows.prev_iterator,
        done: rows.done,
    })
}

pub(crate) fn task(row: TaskRow) -> StoreResult<BackgroundTask> {
    let unreadable = |what: &str| StoreError::Internal(format!("stored task unreadable: {what}"));
    Ok(BackgroundTask {
        id: TaskId::parse(&row.id).map_err(|_| unreadable("id"))?,
        app_id: AppId::parse(&row.app_id).map_err(|_| unreadable("app id"))?,
        recovery: decode(&row.params)?,
        status: TaskStatus::parse(&row.status).ok_or_else(|| unreadable("status"))?,
        done: row.done.max(0) as u64,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A new, running recovery task.
pub(crate) fn new_recovery(app: AppId, recovery: Recovery) -> BackgroundTask {
    let at = now();
    BackgroundTask {
        id: TaskId::generate(),
        app_id: app,
        recovery,
        status: TaskStatus::Running,
        done: 0,
        created_at: at,
        updated_at: at,
    }
}

pub(crate) fn encode_recovery(recovery: &Recovery) -> String {
    serde_json::to_string(recovery).unwrap_or_default()
}

/// What one recovery step scanned: each message with its event type,
/// channels (JSON) and the status of its delivery to the endpoint.
pub(crate) type ScannedMessage = (String, String, Option<String>, Option<i64>);

/// The binds of [`RECOVERY_SCAN_SQL`] after the app id: start, cursor,
/// end, limit.
pub(crate) fn scan_bounds(
    recovery: &Recovery,
    endpoint: &Endpoint,
    cursor: Option<String>,
) -> (String, String, Option<String>) {
    let start = recovery.since.max(endpoint.created_at);
    (
        MessageId::lowest_at(start).to_string(),
        cursor.unwrap_or_default(),
        recovery
            .until
            .map(|until| MessageId::lowest_at(until).to_string()),
    )
}

/// Which scanned messages to queue again (failed deliveries) and which to
/// create deliveries for (none yet, and the endpoint subscribes to them).
pub(crate) fn recovery_plan(
    endpoint: &Endpoint,
    scanned: &[ScannedMessage],
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let (mut requeue, mut create) = (Vec::new(), Vec::new());
    for (message, event_type, channels, status) in scanned {
        match status {
            Some(2) => requeue.push(message.clone()),
            Some(_) => {}
            None => {
                let event_type = EventTypeName::stored(event_type)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                let channels: Option<Vec<String>> = channels.as_deref().map(decode).transpose()?;
                if subscribes(
                    endpoint.filter_types.as_deref(),
                    endpoint.channels.as_deref(),
                    &event_type,
                    channels.as_deref(),
                )? {
                    create.push(message.clone());
                }
            }
        }
    }
    Ok((requeue, create))
}

const HOUR_MS: Timestamp = 3_600_000;

/// Where the week's window starts: buckets are whole, so each window
/// reaches back to the start of the bucket it begins in.
pub(crate) fn week_start(now: Timestamp) -> Timestamp {
    bucket_of(now - 7 * 24 * HOUR_MS)
}

fn bucket_of(at: Timestamp) -> Timestamp {
    at - at.rem_euclid(HEALTH_BUCKET_MS)
}

/// One stored bucket: its start and counts, in [`HEALTH_BUCKETS_SQL`]'s
/// column order.
pub(crate) fn health_bucket(values: [i64; 16]) -> (Timestamp, HealthCounts) {
    let mut counts = HealthCounts {
        succeeded: values[1].max(0) as u64,
        failed: values[2].max(0) as u64,
        duration_sum_ms: values[3].max(0) as u64,
        histogram: [0; LATENCY_BINS],
    };
    for (bin, value) in counts.histogram.iter_mut().zip(&values[4..]) {
        *bin = (*value).max(0) as u64;
    }
    (values[0], counts)
}

/// Sums buckets into the last hour, day and week before `now`.
pub(crate) fn health_windows(
    buckets: &[(Timestamp, HealthCounts)],
    now: Timestamp,
) -> [HealthCounts; 3] {
    let starts = [
        bucket_of(now - HOUR_MS),
        bucket_of(now - 24 * HOUR_MS),
        week_start(now),
    ];
    let mut windows = [HealthCounts::default(); 3];
    for (bucket, counts) in buckets {
        for (window, start) in windows.iter_mut().zip(starts) {
            if *bucket >= start {
                window.add(counts);
            }
        }
    }
    windows
}

/// The last 24 hours hour by hour, oldest first (for the portal's chart):
/// hour `i` covers the buckets from `now - (24 - i) h` up to the next.
pub(crate) fn last_day_by_hour(
    buckets: &[(Timestamp, HealthCounts)],
    now: Timestamp,
) -> Vec<HealthCounts> {
    let start = bucket_of(now - 24 * HOUR_MS);
    let mut hours = vec![HealthCounts::default(); 24];
    for (bucket, counts) in buckets {
        if *bucket >= start {
            let hour = ((bucket - start) / HOUR_MS).clamp(0, 23) as usize;
            hours[hour].add(counts);
        }
    }
    hours
}

/// The values bound to [`HEALTH_UPSERT_SQL`] after the endpoint id.
pub(crate) fn health_values(bucket: Timestamp, counts: &HealthCounts) -> [i64; 16] {
    let mut values = [0; 16];
    values[0] = bucket;
    values[1] = counts.succeeded as i64;
    values[2] = counts.failed as i64;
    values[3] = counts.duration_sum_ms as i64;
    for (value, bin) in values[4..].iter_mut().zip(counts.histogram) {
        *value = bin as i64;
    }
    values
}

/// The last hour's counts, from the buckets of the last week.
pub(crate) fn last_hour(buckets: &[(Timestamp, HealthCounts)], now: Timestamp) -> HealthCounts {
    health_windows(buckets, now)[0]
}

/// What a success-rate check decides: `Some(true)` dropped, `Some(false)`
/// recovered, `None` too few attempts to tell.
pub(crate) fn rate_dropped(counts: &HealthCounts, rule: RateRule) -> Option<bool> {
    (counts.attempts() >= rule.min_attempts)
        .then(|| counts.success_rate().unwrap_or(1.0) < rule.threshold)
}

/// One endpoint's row of `endpoint_status`: consecutive failures, last
/// success, last failure, failing since.
pub(crate) type StatusRow = (i64, Option<i64>, Option<i64>, Option<i64>);

/// The attempts an endpoint's health shows: its newest 20.
pub(crate) fn recent_attempts(endpoint: EndpointId) -> AttemptQuery {
    AttemptQuery::new(
        AttemptFilter::Endpoint(endpoint),
        PageRequest {
            limit: 20,
            cursor: Cursor::Start,
        },
    )
}

/// An endpoint's health as of `now`, from its buckets, its status row and
/// its newest attempts.
pub(crate) fn endpoint_health(
    buckets: &[(Timestamp, HealthCounts)],
    status: Option<StatusRow>,
    recent: Vec<crate::Attempt>,
    now: Timestamp,
) -> crate::EndpointHealth {
    let [last_hour, last_day, last_week] = health_windows(buckets, now);
    let (consecutive, last_success_at, last_failure_at, failing_since) =
        status.unwrap_or((0, None, None, None));
    crate::EndpointHealth {
        last_hour,
        last_day,
        last_week,
        last_day_by_hour: last_day_by_hour(buckets, now),
        recent,
        consecutive_failures: consecutive.max(0) as u64,
        last_success_at,
        last_failure_at,
        failing_since,
    }
}

/// An endpoint's run after a health report, from its status row before and
/// after the report was added.
pub(crate) fn endpoint_run(
    update: &HealthUpdate,
    before: Option<StatusRow>,
    after: Option<StatusRow>,
    disabled: bool,
) -> EndpointRun {
    let (consecutive, _, _, failing_since) = after.unwrap_or((0, None, None, None));
    EndpointRun {
        endpoint_id: update.endpoint_id,
        consecutive_failures: consecutive.max(0) as u64,
        failing_since,
        ended_run: update
            .last_success_at
            .and(before.and_then(|(_, _, _, since)| since)),
        disabled,
    }
}

/// The auto-disable rule, if an endpoint's run (its status row after a
/// report) meets it at `at`: only then is the disabling statement run,
/// which checks the same again against the stored row.
pub(crate) fn auto_disable_due(
    rule: Option<AutoDisable>,
    after: Option<StatusRow>,
    at: Timestamp,
) -> Option<AutoDisable> {
    let (consecutive, _, _, failing_since) = after?;
    rule.filter(|rule| {
        consecutive.max(0) as u64 >= rule.min_attempts
            && failing_since.is_some_and(|since| since <= at - rule.after)
    })
}

/// Status stored for an idempotency key whose request is still running.
pub(crate) const IDEMPOTENCY_IN_PROGRESS: i64 = 0;

/// What a key found already reserved means for a request of `fingerprint`:
/// another request's key is a mismatch (keys saved before fingerprints
/// were kept have none and are taken at their word); otherwise its saved
/// answer, or still running.
pub(crate) fn idempotency_state(
    status: i64,
    body: String,
    created_at: Timestamp,
    stored_fingerprint: &str,
    fingerprint: &str,
) -> Reservation {
    if !stored_fingerprint.is_empty() && stored_fingerprint != fingerprint {
        return Reservation::Mismatch;
    }
    if status == IDEMPOTENCY_IN_PROGRESS {
        return Reservation::InProgress;
    }
    Reservation::Done(StoredResponse {
        status: status as u16,
        body,
        created_at,
    })
}
