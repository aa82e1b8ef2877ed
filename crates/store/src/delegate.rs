//! The [`Store`](crate::Store) methods that are one backend function run
//! in one transaction (or on one read connection), listed once. Each
//! backend expands [`delegated!`] with its own way of running them:
//!
//! - `read`: on a read connection;
//! - `write`: in a write transaction;
//! - `admit`: in a write transaction, refused while the SQLite writer is
//!   overloaded (new work from clients).
//!
//! `+ audit` gives the method a last argument `audit: Option<AuditEntry>`,
//! written in the change's own transaction, its empty target filled with
//! what the change made (see [`Completes`]): a change and its audit entry
//! are stored together or not at all.
//!
//! An argument the trait takes by reference is written `name: &T => T`:
//! the SQLite backend, which runs the function on another thread, takes an
//! owned copy and lends it. `[sealing]` after the function passes the
//! store's sealing as the last argument.

use crate::{App, AuditEntry, BackgroundTask, DeliveryJob, Endpoint, EventType, Inspector, Token};

/// What a change made, named in its audit entry when the caller could not
/// name it beforehand (the id of a new app, endpoint or token).
pub(crate) trait Completes {
    fn complete(&self, entry: &mut AuditEntry) {
        let _ = entry;
    }
}

impl Completes for () {}
impl Completes for DeliveryJob {}
impl Completes for BackgroundTask {}
impl Completes for Inspector {}

/// Names `made` as the entry's target unless the caller named one.
fn target(entry: &mut AuditEntry, made: impl ToString) {
    if entry.target.is_empty() {
        entry.target = made.to_string();
    }
}

impl Completes for App {
    fn complete(&self, entry: &mut AuditEntry) {
        entry.app_id.get_or_insert(self.id);
        target(entry, self.id);
    }
}

impl Completes for Endpoint {
    fn complete(&self, entry: &mut AuditEntry) {
        target(entry, self.id);
    }
}

impl Completes for Token {
    fn complete(&self, entry: &mut AuditEntry) {
        target(entry, self.id);
    }
}

impl Completes for EventType {
    fn complete(&self, entry: &mut AuditEntry) {
        target(entry, &self.name);
    }
}

/// The audit entry of a change that produced `value`, completed.
pub(crate) fn completed(value: &impl Completes, audit: Option<AuditEntry>) -> Option<AuditEntry> {
    audit.map(|mut entry| {
        value.complete(&mut entry);
        entry
    })
}

/// Calls `$backend!` with the backend's own methods (in braces) and every
/// delegated one; the backend's macro writes the whole `impl Store`.
macro_rules! delegated {
    ($backend:ident { $($own:tt)* }) => {
        $backend! {
            { $($own)* }
            // Applications.
            write create_app(input: AppInput) + audit -> App = admin::create_app;
            read get_app(app: &AppRef => AppRef) -> App = admin::get_app;
            read list_apps(page: PageRequest) -> Page<App> = admin::list_apps;
            write update_app(app: AppId, input: AppInput) + audit -> App = admin::update_app;
            write delete_app(app: AppId) + audit -> () = admin::delete_app;
            write set_alert_rules(app: AppId, rules: Option<AlertRules>) + audit -> () = admin::set_alert_rules;
            read alert_rules(apps: Vec<AppId>) -> Vec<(AppId, AlertRules)> = admin::alert_rules;

            // Event types.
            write seed_event_types(entries: Vec<EventTypeInput>) -> usize = admin::seed_event_types;
            write create_event_type(input: EventTypeInput) + audit -> EventType = admin::create_event_type;
            read get_event_type(name: &EventTypeName => EventTypeName) -> EventType = admin::get_event_type;
            read list_event_types(page: PageRequest, include_archived: bool) -> Page<EventType> = admin::list_event_types;
            write update_event_type(input: EventTypeInput) + audit -> EventType = admin::update_event_type;
            write delete_event_type(name: &EventTypeName => EventTypeName, expunge: bool) + audit -> () = admin::delete_event_type;

            // Endpoints.
            write create_endpoint(app: AppId, input: EndpointInput, headers: Headers, secret: Secret) + audit -> Endpoint = admin::create_endpoint [sealing];
            read get_endpoint(app: AppId, endpoint: &EndpointRef => EndpointRef) -> Endpoint = admin::get_endpoint;
            read list_endpoints(app: AppId, page: PageRequest) -> Page<Endpoint> = admin::list_endpoints;
            write update_endpoint(app: AppId, endpoint: EndpointId, input: EndpointInput) + audit -> Endpoint = admin::update_endpoint;
            write delete_endpoint(app: AppId, endpoint: EndpointId) + audit -> () = admin::delete_endpoint;
            read endpoint_secret(app: AppId, endpoint: EndpointId) -> Secret = admin::endpoint_secret [sealing];
            write rotate_endpoint_secret(app: AppId, endpoint: EndpointId, secret: Secret, previous_valid_until: Timestamp) + audit -> () = admin::rotate_endpoint_secret [sealing];
            write set_endpoint_headers(app: AppId, endpoint: EndpointId, headers: Headers) + audit -> () = admin::set_endpoint_headers;
            read endpoint_stats(app: AppId, endpoint: EndpointId) -> EndpointStats = admin::endpoint_stats;
            read attempt_stats(app: AppId, endpoint: EndpointId, since: Timestamp, until: Timestamp) -> AttemptStats = admin::attempt_stats;

            // Health.
            write record_health(updates: Vec<HealthUpdate>, rule: Option<AutoDisable>) -> Vec<EndpointRun> = health::record_health;
            write check_success_rate(endpoint: EndpointId, rule: RateRule, now: Timestamp) -> Option<RateDrop> = health::check_success_rate;
            read endpoint_health(app: AppId, endpoint: EndpointId, now: Timestamp) -> EndpointHealth = health::endpoint_health;
            write purge_health(before: Timestamp) -> u64 = health::purge_health;
            write purge_messages(before: Timestamp, limit: usize) -> u64 = delivery::purge_messages;

            // Messages, attempts and deliveries.
            read get_message(app: AppId, message: &MessageRef => MessageRef) -> Message = delivery::get_message;
            read list_messages(app: AppId, query: MessageQuery) -> Page<Message> = delivery::list_messages;
            read list_endpoint_messages(app: AppId, query: EndpointMessageQuery) -> Page<EndpointMessage> = delivery::list_endpoint_messages;
            read list_attempts(app: AppId, query: AttemptQuery) -> Page<Attempt> = delivery::list_attempts;
            read get_attempt(app: AppId, message: MessageId, attempt: AttemptId) -> Attempt = delivery::get_attempt;
            read pending_deliveries(app: AppId, endpoint: EndpointId, limit: usize) -> Vec<PendingDelivery> = delivery::pending_deliveries;
            read list_destinations(app: AppId, message: MessageId, page: PageRequest) -> Page<Destination> = delivery::list_destinations;
            write remove_content(app: AppId, message: MessageId) + audit -> () = delivery::remove_content;
            write expunge_attempt_content(app: AppId, message: MessageId, attempt: AttemptId) + audit -> () = delivery::expunge_attempt_content;
            write resend(app: AppId, message: MessageId, endpoint: EndpointId, claim: Claim) + audit -> DeliveryJob = delivery::resend [sealing];
            write claim_due(claim: Claim, limit: usize, room: Room) -> Vec<DeliveryJob> = delivery::claim_due [sealing];
            read next_due_at(skip: Vec<EndpointId>) -> Option<Timestamp> = delivery::next_due_at;

            // Background tasks.
            write start_recovery(app: AppId, recovery: Recovery) + audit -> BackgroundTask = tasks::start_recovery;
            write recovery_step(task: TaskId, limit: usize) -> BackgroundTask = tasks::recovery_step;
            read get_task(task: TaskId) -> BackgroundTask = tasks::get_task;
            read list_tasks(app: Option<AppId>, status: Option<TaskStatus>, page: PageRequest) -> Page<BackgroundTask> = tasks::list_tasks;
            read running_tasks() -> Vec<TaskId> = tasks::running_tasks;

            // Tokens, the audit log and the inspector.
            write create_token(input: TokenInput) + audit -> Token = access::create_token;
            read token_by_hash(hash: [u8; 32]) -> Option<Token> = access::token_by_hash;
            read list_tokens(app: AppId, page: PageRequest) -> Page<Token> = access::list_tokens;
            write revoke_token(app: AppId, token: TokenId, at: Timestamp) + audit -> Token = access::revoke_token;
            write record_audit(entry: AuditEntry) -> () = access::record_audit;
            read list_audit(query: AuditQuery) -> Page<AuditEntry> = access::list_audit;
            write open_inspector(app: AppId, token: String) + audit -> Inspector = access::open_inspector;
            read inspector(app: AppId) -> Option<Inspector> = access::inspector_of;
            read inspector_by_token(token: String) -> Option<Inspector> = access::inspector_by_token;
            write close_inspector(app: AppId) + audit -> () = access::close_inspector;
            admit record_inspected(request: InspectedRequest) -> () = access::record_inspected;
            read list_inspected(app: AppId, limit: usize) -> Vec<InspectedRequest> = access::list_inspected;

            // Idempotency keys.
            write reserve_idempotency_key(scope: &str => String, key: &str => String, fingerprint: &str => String, now: Timestamp, stale_before: Timestamp) -> Reservation = delivery::reserve_idempotency_key;
            write complete_idempotency_key(scope: &str => String, key: &str => String, response: StoredResponse) -> () = delivery::complete_idempotency_key;
            write abandon_idempotency_key(scope: &str => String, key: &str => String) -> () = delivery::abandon_idempotency_key;
            write purge_idempotency_keys(before: Timestamp) -> u64 = delivery::purge_idempotency_keys;
        }
    };
}

pub(crate) use delegated;
