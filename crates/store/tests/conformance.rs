//! The store conformance suite: every behaviour the rest of Herald relies
//! on, run against each backend. SQLite always; PostgreSQL when
//! `HERALD_TEST_DATABASE_URL` is set, each test in a schema of its own.

use std::sync::Arc;

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{
    AddressPolicy, AppId, AttemptId, DeliveryStatus, EndpointId, EndpointUrl, EventTypeName,
    FilterTypes, MessageId, Secret, Trigger,
};
use herald_store::*;

struct Backend {
    store: Arc<dyn Store>,
    /// PostgreSQL's schema for this test.
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

async fn seed(store: &dyn Store) {
    store
        .seed_event_types(
            ["call.started", "call.completed", "contact.created"]
                .iter()
                .map(|name| EventTypeInput {
                    name: EventTypeName::parse(name).unwrap(),
                    description: format!("{name} happened"),
                    schemas: None,
                    archived: false,
                    deprecated: false,
                    feature_flag: None,
                    group_name: None,
                    enforce_schema: false,
                })
                .collect(),
        )
        .await
        .unwrap();
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteOptions::new(dir.path().join("test.db"))).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    seed(store.as_ref()).await;
    Backend {
        store,
        schema: None,
        _dir: dir,
    }
}

/// A fresh schema per test, named with its creation time so that schemas
/// left by interrupted runs can be recognised and dropped.
async fn postgres(url: &str) -> Backend {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let schema = format!(
        "herald_test_{now}_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    drop_stale_schemas(url, now).await;
    let mut options = PgOptions::new(url);
    options.schema = Some(schema.clone());
    options.max_connections = 4;
    let store: Arc<dyn Store> =
        Arc::new(PgStore::open(&options).await.expect("PostgreSQL reachable"));
    seed(store.as_ref()).await;
    Backend {
        store,
        schema: Some(schema),
        _dir: tempfile::tempdir().unwrap(),
    }
}

async fn drop_stale_schemas(url: &str, now: u64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("PostgreSQL reachable");
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'herald_test_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for schema in schemas {
        let created: u64 = schema
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if created + 3600 < now {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
}

async fn backends() -> Vec<(&'static str, Backend)> {
    let mut backends = vec![("sqlite", sqlite().await)];
    match std::env::var("HERALD_TEST_DATABASE_URL") {
        Ok(url) => backends.push(("postgres", postgres(&url).await)),
        Err(_) if std::env::var_os("HERALD_TEST_REQUIRE_ALL").is_some() => {
            panic!("HERALD_TEST_REQUIRE_ALL is set but HERALD_TEST_DATABASE_URL is not: the PostgreSQL backend would be skipped")
        }
        Err(_) => eprintln!(
            "SKIPPED PostgreSQL: set HERALD_TEST_DATABASE_URL to run the suite against it"
        ),
    }
    backends
}

async fn app(store: &dyn Store, uid: Option<&str>) -> AppId {
    store
        .create_app(
            AppInput {
                uid: uid.map(|u| Uid::parse("uid", u).unwrap()),
                name: "Acme".into(),
                rate_limit: None,
                metadata: Metadata::new(),
            },
            None,
        )
        .await
        .unwrap()
        .id
}

fn endpoint_input(url: &str, filter: &[&str], disabled: bool) -> EndpointInput {
    let policy = AddressPolicy {
        allow_http: true,
        allow_private_networks: true,
        ..AddressPolicy::default()
    };
    EndpointInput {
        uid: None,
        url: EndpointUrl::parse(url, &policy).unwrap(),
        description: String::new(),
        disabled,
        filter_types: FilterTypes::parse(filter).unwrap(),
        channels: None,
        rate_limit: None,
        version: 1,
        metadata: Metadata::new(),
        retry_policy: None,
        strict_ordering: false,
        options: Default::default(),
    }
}

async fn endpoint(store: &dyn Store, app: AppId, url: &str) -> Endpoint {
    store
        .create_endpoint(
            app,
            endpoint_input(url, &[], false),
            Headers::new(),
            Secret::generate(),
            None,
        )
        .await
        .unwrap()
}

fn message(event_type: &str, event_id: Option<&str>) -> MessageInput {
    MessageInput {
        event_type: EventTypeName::parse(event_type).unwrap(),
        event_id: event_id.map(|e| Uid::parse("eventId", e).unwrap()),
        payload: "{\"n\":1}".into(),
        channels: None,
        to_endpoint: None,
        filters: Default::default(),
        deliver_at: None,
    }
}

fn claim(now: Timestamp) -> Claim {
    Claim::new(now, now + 60_000)
}

/// The leased job of a new `call.started` message to `app`'s one endpoint.
async fn leased(store: &dyn Store, app: AppId, claim: Claim) -> DeliveryJob {
    store
        .create_message(app, message("call.started", None), Some(claim), None)
        .await
        .unwrap()
        .jobs
        .remove(0)
}

fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_message_fans_out_to_matching_enabled_endpoints_only() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let mut wanted = Vec::new();
        for (url, filter, disabled, matches) in [
            ("http://a.test/1", vec![], false, true),
            ("http://a.test/2", vec!["call.*"], false, true),
            ("http://a.test/3", vec!["call.completed"], false, true),
            ("http://a.test/4", vec!["contact.created"], false, false),
            ("http://a.test/5", vec![], true, false),
        ] {
            let endpoint = store
                .create_endpoint(
                    app,
                    endpoint_input(url, &filter, disabled),
                    Headers::new(),
                    Secret::generate(),
                    None,
                )
                .await
                .unwrap();
            if matches {
                wanted.push(endpoint.id);
            }
        }

        let created = store
            .create_message(
                app,
                message("call.completed", None),
                Some(claim(now())),
                None,
            )
            .await
            .unwrap();

        let mut got: Vec<_> = created.jobs.iter().map(|j| j.endpoint.id).collect();
        got.sort();
        wanted.sort();
        assert_eq!(got, wanted, "{name}");
        assert_eq!(created.deliveries, 3, "{name}");
        assert!(
            created.jobs.iter().all(|j| j.endpoint.secrets.len() == 1),
            "{name}"
        );
    }
}

#[tokio::test]
async fn leased_deliveries_are_not_claimed_again_until_the_lease_ends() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        store
            .create_message(app, message("call.started", None), None, None)
            .await
            .unwrap();
        let at = now(); // the delivery was due when it was written, before this

        let first = store
            .claim_due(claim(at + 1), 10, Room::default())
            .await
            .unwrap();
        let second = store
            .claim_due(claim(at + 2), 10, Room::default())
            .await
            .unwrap();
        let after_expiry = store
            .claim_due(claim(at + 61_000 + 10), 10, Room::default())
            .await
            .unwrap();

        assert_eq!(first.len(), 1, "{name}: the due delivery is claimed");
        assert!(second.is_empty(), "{name}: a live lease keeps others away");
        assert_eq!(
            after_expiry.len(),
            1,
            "{name}: an expired lease frees the delivery"
        );
    }
}

#[tokio::test]
async fn recording_attempts_moves_the_delivery_through_its_states() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/1").await;
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap();
        let job = &created.jobs[0];
        let attempt = |status: DeliveryStatus, code: u16| Attempt {
            id: AttemptId::generate(),
            app_id: app,
            message_id: job.message.id,
            endpoint_id: job.endpoint.id,
            url: job.endpoint.url.to_string(),
            status,
            response_status_code: code,
            response: String::new(),
            response_duration_ms: 3,
            error_class: None,
            trigger: Trigger::Scheduled,
            created_at: now(),
        };

        let retry_at = now() + 1_000;
        store
            .record_attempt(AttemptOutcome {
                lease_until: job.lease_until,
                attempt: attempt(DeliveryStatus::Failed, 500),
                next: NextStep::RetryAt(retry_at),
                disable_endpoint: false,
            })
            .await
            .unwrap();
        assert_eq!(
            store.next_due_at(vec![]).await.unwrap(),
            Some(retry_at),
            "{name}"
        );
        assert!(
            store
                .claim_due(claim(now()), 10, Room::default())
                .await
                .unwrap()
                .is_empty(),
            "{name}: not due yet"
        );
        let retried = store
            .claim_due(claim(retry_at), 10, Room::default())
            .await
            .unwrap();
        assert_eq!(retried[0].attempts_made, 1, "{name}");
        store
            .record_attempt(AttemptOutcome {
                lease_until: retried[0].lease_until,
                attempt: attempt(DeliveryStatus::Succeeded, 200),
                next: NextStep::Succeeded,
                disable_endpoint: false,
            })
            .await
            .unwrap();

        let stats = store.endpoint_stats(app, endpoint.id).await.unwrap();
        assert_eq!(
            (stats.success, stats.pending, stats.fail),
            (1, 0, 0),
            "{name}"
        );
        assert_eq!(store.next_due_at(vec![]).await.unwrap(), None, "{name}");
        let attempts = store
            .list_attempts(
                app,
                AttemptQuery::new(
                    AttemptFilter::Message(job.message.id),
                    PageRequest {
                        limit: 10,
                        cursor: Cursor::Start,
                    },
                ),
            )
            .await
            .unwrap();
        let codes: Vec<_> = attempts
            .data
            .iter()
            .map(|a| a.response_status_code)
            .collect();
        assert_eq!(codes, [200, 500], "{name}: newest first");
    }
}

#[tokio::test]
async fn a_duplicate_event_id_is_a_conflict_and_writes_nothing() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        store
            .create_message(app, message("call.started", Some("evt-1")), None, None)
            .await
            .unwrap();

        let again = store
            .create_message(app, message("call.started", Some("evt-1")), None, None)
            .await;

        assert!(
            matches!(again, Err(StoreError::Conflict { field: "eventId" })),
            "{name}: {again:?}"
        );
        let listed = store
            .list_messages(
                app,
                MessageQuery {
                    page: PageRequest {
                        limit: 10,
                        cursor: Cursor::Start,
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(listed.data.len(), 1, "{name}");
        assert_eq!(
            store
                .claim_due(claim(now()), 10, Room::default())
                .await
                .unwrap()
                .len(),
            1,
            "{name}: one delivery"
        );
    }
}

#[tokio::test]
async fn a_message_page_ends_once_its_payloads_reach_the_byte_budget() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        for n in 0..5 {
            let mut input = message("call.started", None);
            input.payload = format!(r#"{{"n": {n}, "pad": "{}"}}"#, "x".repeat(90));
            store.create_message(app, input, None, None).await.unwrap();
        }
        let page = |cursor: Cursor| MessageQuery {
            page: PageRequest { limit: 10, cursor },
            max_payload_bytes: Some(250),
            ..Default::default()
        };

        let first = store.list_messages(app, page(Cursor::Start)).await.unwrap();
        let next = Cursor::After(first.iterator.clone().unwrap());
        let second = store.list_messages(app, page(next)).await.unwrap();
        let whole = store
            .list_messages(
                app,
                MessageQuery {
                    page: PageRequest {
                        limit: 10,
                        cursor: Cursor::Start,
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();

        // About 100 bytes each: the third reaches 250 and ends the page.
        assert_eq!(first.data.len(), 3, "{name}");
        assert!(!first.done, "{name}: a page cut short is not the last");
        assert_eq!(second.data.len(), 2, "{name}: the rest");
        assert!(second.done, "{name}");
        assert_eq!(
            whole.data.len(),
            5,
            "{name}: without a budget, the limit alone"
        );
        let ids = |pages: &[&Page<Message>]| -> Vec<MessageId> {
            pages
                .iter()
                .flat_map(|p| p.data.iter().map(|m| m.id))
                .collect()
        };
        assert_eq!(
            ids(&[&first, &second]),
            ids(&[&whole]),
            "{name}: nothing skipped or repeated"
        );
    }
}

#[tokio::test]
async fn a_failing_write_does_not_undo_the_writes_batched_with_it() {
    for (name, backend) in backends().await {
        let store = backend.store.clone();
        let app = app(store.as_ref(), Some("taken")).await;
        let mut tasks = Vec::new();
        for n in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let uid = if n % 5 == 0 {
                    "taken".to_owned()
                } else {
                    format!("app-{n}")
                };
                store
                    .create_app(
                        AppInput {
                            uid: Some(Uid::parse("uid", &uid).unwrap()),
                            name: "x".into(),
                            rate_limit: None,
                            metadata: Metadata::new(),
                        },
                        None,
                    )
                    .await
            }));
        }
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => {}
                Err(StoreError::Conflict { field: "uid" }) => conflicts += 1,
                Err(other) => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(conflicts, 10, "{name}");
        let apps = store
            .list_apps(PageRequest {
                limit: 250,
                cursor: Cursor::Start,
            })
            .await
            .unwrap();
        assert_eq!(apps.data.len(), 41, "{name}: 40 new apps and the first");
        assert!(store.get_app(&IdOrUid::Id(app)).await.is_ok(), "{name}");
    }
}

/// Messages written together (the PostgreSQL store commits concurrent
/// messages in one transaction) each get their own answer: a clashing
/// eventId, an unknown event type or a missing app fails that message
/// alone, and every accepted one has all its deliveries.
#[tokio::test]
async fn concurrent_messages_with_bad_ones_among_them_each_get_their_own_answer() {
    for (name, backend) in backends().await {
        let store = backend.store.clone();
        let (first, second) = (
            app(store.as_ref(), None).await,
            app(store.as_ref(), None).await,
        );
        for n in 0..3 {
            endpoint(store.as_ref(), first, &format!("http://a.test/{n}")).await;
        }
        endpoint(store.as_ref(), second, "http://b.test/").await;
        let mut tasks = Vec::new();
        for n in 0..120 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let (app, input) = match n % 6 {
                    0 => (first, message("call.started", Some("same"))),
                    1 => (first, message("nope.never", None)),
                    2 => (AppId::generate(), message("call.started", None)),
                    3 => (second, message("contact.created", Some(&format!("e-{n}")))),
                    _ => (first, message("call.completed", None)),
                };
                (n, store.create_message(app, input, None, None).await)
            }));
        }
        let (mut accepted, mut clashes) = (0, 0);
        for task in tasks {
            let (n, result) = task.await.unwrap();
            match (n % 6, result) {
                (0, Ok(created)) | (3..=5, Ok(created)) => {
                    let fanout = if n % 6 == 3 { 1 } else { 3 };
                    assert_eq!(created.deliveries, fanout, "{name}: message {n}");
                    accepted += 1;
                }
                (0, Err(StoreError::Conflict { field: "eventId" })) => clashes += 1,
                (
                    1,
                    Err(StoreError::Invalid {
                        field: "eventType", ..
                    }),
                ) => {}
                (2, Err(StoreError::NotFound)) => {}
                (_, other) => panic!("{name}: message {n}: {other:?}"),
            }
        }
        assert_eq!((accepted, clashes), (1 + 60, 19), "{name}");
        let due = store
            .claim_due(claim(now()), 1000, Room::default())
            .await
            .unwrap();
        // One "same" and 40 plain messages to three endpoints, 20 to one.
        assert_eq!(due.len(), (1 + 40) * 3 + 20, "{name}: deliveries stored");
    }
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_during_its_grace_period() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let old = Secret::generate();
        let endpoint = store
            .create_endpoint(
                app,
                endpoint_input("http://a.test/1", &[], false),
                Headers::new(),
                old.clone(),
                None,
            )
            .await
            .unwrap();
        let new = Secret::generate();

        store
            .rotate_endpoint_secret(app, endpoint.id, new.clone(), now() + 3_600_000, None)
            .await
            .unwrap();
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap();

        assert_eq!(
            store.endpoint_secret(app, endpoint.id).await.unwrap(),
            new,
            "{name}"
        );
        assert_eq!(
            created.jobs[0].endpoint.secrets,
            vec![new.clone(), old.clone()],
            "{name}"
        );

        let newest = Secret::generate();
        store
            .rotate_endpoint_secret(app, endpoint.id, newest.clone(), now() - 1, None)
            .await
            .unwrap();
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap();
        assert_eq!(created.jobs[0].endpoint.secrets[0], newest, "{name}");
        assert!(
            !created.jobs[0].endpoint.secrets.contains(&new),
            "{name}: expired grace"
        );
    }
}

#[tokio::test]
async fn orphaned_leases_are_freed_at_start_on_sqlite_and_left_to_expire_on_postgresql() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap();
        assert!(
            store
                .claim_due(claim(now()), 10, Room::default())
                .await
                .unwrap()
                .is_empty(),
            "{name}: leased"
        );

        let released = store.release_orphaned_leases().await.unwrap();

        // SQLite has one process, so every lease is a dead run's; on
        // PostgreSQL another live process may hold it.
        let expected = if name == "sqlite" { 1 } else { 0 };
        assert_eq!(released, expected, "{name}");
        let claimable = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap()
            .len();
        assert_eq!(claimable as u64, expected, "{name}");
    }
}

#[tokio::test]
async fn concurrent_claimers_never_get_the_same_delivery() {
    for (name, backend) in backends().await {
        let store = backend.store.clone();
        let app = app(store.as_ref(), None).await;
        for n in 0..4 {
            endpoint(store.as_ref(), app, &format!("http://a.test/{n}")).await;
        }
        for _ in 0..50 {
            store
                .create_message(app, message("call.started", None), None, None)
                .await
                .unwrap();
        }
        let at = now();
        let mut claimers = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            claimers.push(tokio::spawn(async move {
                store
                    .claim_due(claim(at), 30, Room::default())
                    .await
                    .unwrap()
            }));
        }
        let mut seen = std::collections::HashSet::new();
        for claimer in claimers {
            for job in claimer.await.unwrap() {
                assert!(
                    seen.insert((job.message.id, job.endpoint.id)),
                    "{name}: claimed twice"
                );
            }
        }
        assert_eq!(
            seen.len(),
            200,
            "{name}: every delivery claimed exactly once"
        );
    }
}

#[tokio::test]
async fn postgresql_tables_that_grew_are_analyzed_without_autovacuum() {
    use sqlx::Connection;
    for (name, backend) in backends().await {
        let Some(schema) = backend.schema.clone() else {
            continue;
        };
        let url = std::env::var("HERALD_TEST_DATABASE_URL").unwrap();
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let last_analyze = |table: &'static str| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT extract(epoch FROM greatest(last_analyze, last_autoanalyze))::int8
                 FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
            )
            .bind(schema.clone())
            .bind(table)
        };
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/analyzed").await;
        // Each test's schema is new: nothing has been analyzed yet.
        assert_eq!(
            last_analyze("messages").fetch_one(&mut conn).await.unwrap(),
            None,
            "{name}"
        );
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..1_500 {
            let store = backend.store.clone();
            sends.spawn(async move {
                store
                    .create_message(app, message("call.started", None), None, None)
                    .await
            });
        }
        while let Some(created) = sends.join_next().await {
            created.unwrap().unwrap();
        }
        // The keeper looks every 2 s; PostgreSQL publishes the counts of
        // changes within a second or so.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let messages = last_analyze("messages").fetch_one(&mut conn).await.unwrap();
            let deliveries = last_analyze("deliveries")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if messages.is_some() && deliveries.is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: 1,500 new messages and deliveries were never analyzed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        // With a small sample (statistics target 10), a unique column's
        // histogram has 11 bounds (101 at the default target).
        let bounds: Option<i32> = sqlx::query_scalar(
            "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats
             WHERE schemaname = $1 AND tablename = 'messages' AND attname = 'id'",
        )
        .bind(schema.clone())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(bounds, Some(11), "{name}: the keeper's sample is small");
    }
}

#[tokio::test]
async fn postgresql_reports_the_writes_queued_for_its_group_commit_writers() {
    use sqlx::Connection;
    for (name, backend) in backends().await {
        let Some(schema) = backend.schema.clone() else {
            continue;
        };
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/queued").await;
        assert_eq!(store.pool_usage().queued_writes, 0, "{name}: idle");
        // Another session holds the messages table: the writer's insert
        // waits, and messages sent meanwhile wait in its queue.
        let url = std::env::var("HERALD_TEST_DATABASE_URL").unwrap();
        let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut lock = holder.begin().await.unwrap();
        sqlx::query(&format!(
            "LOCK TABLE \"{}\".messages IN EXCLUSIVE MODE",
            schema.replace('"', "")
        ))
        .execute(&mut *lock)
        .await
        .unwrap();
        // The first batch the writer takes is stuck in its insert; the
        // messages sent after it wait in the queue.
        let mut sends = tokio::task::JoinSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.pool_usage().queued_writes == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: messages held behind a locked table never showed as queued"
            );
            let store = backend.store.clone();
            sends.spawn(async move {
                store
                    .create_message(app, message("call.started", None), None, None)
                    .await
            });
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        lock.rollback().await.unwrap();
        while let Some(created) = sends.join_next().await {
            created.unwrap().unwrap();
        }
        assert_eq!(store.pool_usage().queued_writes, 0, "{name}: drained");
    }
}

#[tokio::test]
async fn postgresql_health_checks_write_a_probe_only_when_no_recent_write_vouches() {
    use sqlx::Connection;
    for (name, backend) in backends().await {
        let Some(schema) = backend.schema.clone() else {
            continue;
        };
        let schema = schema.replace('"', "");
        let store = backend.store.as_ref();
        let url = std::env::var("HERALD_TEST_DATABASE_URL").unwrap();
        let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
        let probe_at = async |conn: &mut sqlx::PgConnection| -> Option<i64> {
            sqlx::query_scalar(&format!("SELECT at FROM \"{schema}\".store_probe"))
                .fetch_optional(conn)
                .await
                .unwrap()
        };
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/probe").await;

        // A message just written vouches: checks in a row write nothing.
        store
            .create_message(app, message("call.started", None), None, None)
            .await
            .unwrap();
        for _ in 0..50 {
            store.check_writes().await.unwrap();
        }
        assert_eq!(probe_at(&mut other).await, None, "{name}: no probe written");

        // Nothing written lately: one probe, which then vouches itself.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        store.check_writes().await.unwrap();
        let first = probe_at(&mut other).await;
        assert!(first.is_some(), "{name}: the probe was written");
        store.check_writes().await.unwrap();
        assert_eq!(probe_at(&mut other).await, first, "{name}: once");

        // A failed write is not hidden by the success before it: the next
        // check probes, and reports the probe's failure.
        for table in ["messages", "store_probe"] {
            sqlx::query(&format!(
                "ALTER TABLE \"{schema}\".{table} ADD CONSTRAINT refuse_all CHECK (FALSE) NOT VALID"
            ))
            .execute(&mut other)
            .await
            .unwrap();
        }
        let refused = store
            .create_message(app, message("call.started", None), None, None)
            .await;
        assert!(refused.is_err(), "{name}: the write failed");
        assert!(store.check_writes().await.is_err(), "{name}: {refused:?}");
        sqlx::query(&format!(
            "ALTER TABLE \"{schema}\".store_probe DROP CONSTRAINT refuse_all"
        ))
        .execute(&mut other)
        .await
        .unwrap();
        store.check_writes().await.unwrap();
        assert!(probe_at(&mut other).await > first, "{name}: probed again");
        other.close().await.unwrap();
    }
}

#[tokio::test]
async fn unleased_new_work_wakes_waiting_workers_on_postgresql() {
    for (name, backend) in backends().await {
        if name != "postgres" {
            continue;
        }
        let store = backend.store.clone();
        let app = app(store.as_ref(), None).await;
        endpoint(store.as_ref(), app, "http://a.test/1").await;
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for_work().await })
        };
        tokio::task::yield_now().await;

        store
            .create_message(app, message("call.started", None), None, None)
            .await
            .unwrap();

        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the notification wakes the waiter")
            .unwrap();
    }
}

#[tokio::test]
async fn an_idempotency_key_runs_one_request_and_replays_its_response() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let at = now();
        let response = StoredResponse {
            status: 202,
            body: "{\"a\":1}".into(),
            created_at: at,
        };

        let first = store
            .reserve_idempotency_key("s", "k", "f1", at, at - 1_000)
            .await
            .unwrap();
        let concurrent = store
            .reserve_idempotency_key("s", "k", "f1", at, at - 1_000)
            .await
            .unwrap();
        store
            .complete_idempotency_key("s", "k", response.clone())
            .await
            .unwrap();
        let repeat = store
            .reserve_idempotency_key("s", "k", "f1", at, at - 1_000)
            .await
            .unwrap();

        let other_body = store
            .reserve_idempotency_key("s", "k", "f2", at, at - 1_000)
            .await
            .unwrap();

        assert_eq!(first, Reservation::Reserved, "{name}");
        assert_eq!(concurrent, Reservation::InProgress, "{name}");
        assert_eq!(repeat, Reservation::Done(response), "{name}");
        assert_eq!(
            other_body,
            Reservation::Mismatch,
            "{name}: the same key with another request's fingerprint"
        );

        store
            .reserve_idempotency_key("s", "failed", "f1", at, at - 1_000)
            .await
            .unwrap();
        store.abandon_idempotency_key("s", "failed").await.unwrap();
        let retried = store
            .reserve_idempotency_key("s", "failed", "f1", at, at - 1_000)
            .await
            .unwrap();
        assert_eq!(
            retried,
            Reservation::Reserved,
            "{name}: an abandoned key can run again"
        );

        store
            .reserve_idempotency_key("s", "dead", "f1", at, at - 1_000)
            .await
            .unwrap();
        let later = at + 10_000;
        let taken_over = store
            .reserve_idempotency_key("s", "dead", "f1", later, later - 1_000)
            .await
            .unwrap();
        assert_eq!(
            taken_over,
            Reservation::Reserved,
            "{name}: a stale reservation is taken over"
        );

        assert_eq!(
            store.purge_idempotency_keys(later + 1).await.unwrap(),
            3,
            "{name}"
        );
        let gone = store
            .reserve_idempotency_key("s", "k", "f1", later, later - 1_000)
            .await
            .unwrap();
        assert_eq!(
            gone,
            Reservation::Reserved,
            "{name}: purged keys are forgotten"
        );
    }
}

#[tokio::test]
async fn claims_skip_busy_endpoints_and_released_deliveries_are_due_again() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let busy = endpoint(store, app, "http://a.test/busy").await;
        let free = endpoint(store, app, "http://a.test/free").await;
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap();
        let to_busy = created
            .jobs
            .iter()
            .find(|j| j.endpoint.id == busy.id)
            .unwrap();

        let to_free = created
            .jobs
            .iter()
            .find(|j| j.endpoint.id == free.id)
            .unwrap();
        store.release(to_busy).await.unwrap();
        store.release(to_free).await.unwrap();
        let skipping = store
            .claim_due(claim(now()), 10, Room::skipping([busy.id]))
            .await
            .unwrap();
        let due_later = store.next_due_at(vec![busy.id]).await.unwrap();
        let rest = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();

        assert_eq!(
            skipping.len(),
            1,
            "{name}: only the free endpoint's delivery"
        );
        assert_eq!(skipping[0].endpoint.id, free.id, "{name}");
        assert_eq!(
            due_later,
            Some(skipping[0].lease_until),
            "{name}: outside the skipped endpoint, only the claimed delivery, due when its lease ends"
        );
        assert_eq!(
            rest.len(),
            1,
            "{name}: the released busy delivery is still due"
        );
        assert_eq!(rest[0].endpoint.id, busy.id, "{name}");
    }
}

#[tokio::test]
async fn claims_take_no_more_of_an_endpoint_than_the_room_given_for_it() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let narrow = endpoint(store, app, "http://a.test/narrow").await;
        let wide = endpoint(store, app, "http://a.test/wide").await;
        let other = endpoint(store, app, "http://a.test/other").await;
        for _ in 0..10 {
            store
                .create_message(app, message("call.started", None), None, None)
                .await
                .unwrap();
        }
        let count = |jobs: &[DeliveryJob], id: EndpointId| {
            jobs.iter().filter(|j| j.endpoint.id == id).count()
        };

        // Room for 2 at one endpoint, 6 at another, 3 at the rest: 11 of
        // the 30 due deliveries, though the claim could take them all.
        let room = Room {
            limited: vec![(narrow.id, 2), (wide.id, 6)],
            otherwise: Some(3),
        };
        let first = store.claim_due(claim(now()), 30, room).await.unwrap();
        assert_eq!(count(&first, narrow.id), 2, "{name}: {first:?}");
        assert_eq!(count(&first, wide.id), 6, "{name}");
        assert_eq!(count(&first, other.id), 3, "{name}");
        assert_eq!(first.len(), 11, "{name}");

        // The claim's own limit still holds, and a full endpoint is left out.
        let room = Room {
            limited: vec![(narrow.id, 0)],
            otherwise: None,
        };
        let second = store.claim_due(claim(now()), 5, room).await.unwrap();
        assert_eq!(second.len(), 5, "{name}");
        assert_eq!(count(&second, narrow.id), 0, "{name}: {second:?}");

        // What the rooms left out is still due, each delivery once.
        let rest = store
            .claim_due(claim(now()), 100, Room::default())
            .await
            .unwrap();
        assert_eq!(rest.len(), 14, "{name}");
        let mut all: Vec<_> = first
            .iter()
            .chain(&second)
            .chain(&rest)
            .map(|j| (j.message.id, j.endpoint.id))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30, "{name}");
    }
}

#[tokio::test]
async fn a_worker_whose_lease_ran_out_cannot_give_back_the_next_holder_s_delivery() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        let at = now();
        let first = leased(store, app, Claim::new(at, at + 1)).await;
        // The first lease ran out; a second worker holds the delivery now.
        let second = store
            .claim_due(claim(at + 10), 10, Room::default())
            .await
            .unwrap();
        assert_eq!(second.len(), 1, "{name}");

        // The first worker, late, gives it back: that must not free it.
        store.release(&first).await.unwrap();
        store.release_until(&first, at + 10).await.unwrap();
        assert!(
            store
                .claim_due(claim(at + 20), 10, Room::default())
                .await
                .unwrap()
                .is_empty(),
            "{name}: still the second worker's"
        );
        // Its holder can.
        store.release(&second[0]).await.unwrap();
        assert_eq!(
            store
                .claim_due(claim(now()), 10, Room::default())
                .await
                .unwrap()
                .len(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_worker_whose_lease_ran_out_cannot_overwrite_the_next_holder() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/1").await;
        let at = now();
        let short = Claim::new(at, at + 1);
        let first = leased(store, app, short).await;
        let second = store
            .claim_due(claim(at + 10), 10, Room::default())
            .await
            .unwrap()
            .remove(0);
        let outcome = |job: &DeliveryJob| AttemptOutcome {
            lease_until: job.lease_until,
            attempt: Attempt {
                id: AttemptId::generate(),
                app_id: app,
                message_id: job.message.id,
                endpoint_id: job.endpoint.id,
                url: job.endpoint.url.to_string(),
                status: DeliveryStatus::Succeeded,
                response_status_code: 200,
                response: String::new(),
                response_duration_ms: 1,
                error_class: None,
                trigger: Trigger::Scheduled,
                created_at: now(),
            },
            next: NextStep::Succeeded,
            disable_endpoint: false,
        };

        store.record_attempt(outcome(&first)).await.unwrap();
        let after_stale = store.endpoint_stats(app, endpoint.id).await.unwrap();
        store.record_attempt(outcome(&second)).await.unwrap();
        let after_holder = store.endpoint_stats(app, endpoint.id).await.unwrap();

        assert_eq!(
            (after_stale.success, after_stale.sending),
            (0, 1),
            "{name}: the stale result changes nothing"
        );
        assert_eq!(
            (after_holder.success, after_holder.sending),
            (1, 0),
            "{name}: the holder's result counts"
        );
    }
}

#[tokio::test]
async fn an_attempt_that_failed_for_want_of_local_resources_is_not_charged() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        let at = now();
        let job = leased(store, app, claim(at)).await;
        let failed = |job: &DeliveryJob, class: herald_domain::ErrorClass| AttemptOutcome {
            lease_until: job.lease_until,
            attempt: Attempt {
                id: AttemptId::generate(),
                app_id: app,
                message_id: job.message.id,
                endpoint_id: job.endpoint.id,
                url: job.endpoint.url.to_string(),
                status: DeliveryStatus::Failed,
                response_status_code: 0,
                response: "Too many open files (os error 24)".into(),
                response_duration_ms: 1,
                error_class: Some(class),
                trigger: Trigger::Scheduled,
                created_at: now(),
            },
            next: NextStep::RetryAt(now() - 1),
            disable_endpoint: false,
        };

        store
            .record_attempt(failed(&job, herald_domain::ErrorClass::Local))
            .await
            .unwrap();
        let again = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();
        store
            .record_attempt(failed(&again[0], herald_domain::ErrorClass::Connect))
            .await
            .unwrap();
        let third = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();

        assert_eq!(again.len(), 1, "{name}: retried");
        assert_eq!(
            again[0].attempts_made, 0,
            "{name}: the local failure was not charged"
        );
        assert_eq!(
            third[0].attempts_made, 1,
            "{name}: the receiver's failure was"
        );
    }
}

#[tokio::test]
async fn postgresql_drops_whole_weeks_of_attempts_and_keeps_a_week_ahead() {
    use sqlx::Connection;
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/days").await;
        let job = |created: CreatedMessage| created.jobs.into_iter().next().unwrap();
        let old = job(store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap());
        let fresh = job(store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap());
        // One attempt with an id from before the store was made (the
        // first partition), one from now.
        let old_id = AttemptId::lowest_at(now() - 3_600_000);
        store
            .record_attempt(outcome(&old, old_id, true))
            .await
            .unwrap();
        let fresh_id = AttemptId::generate();
        store
            .record_attempt(outcome(&fresh, fresh_id, true))
            .await
            .unwrap();
        let listed = || async {
            let page = store
                .list_attempts(
                    app,
                    AttemptQuery::new(
                        AttemptFilter::App,
                        PageRequest {
                            limit: 10,
                            cursor: Cursor::default(),
                        },
                    ),
                )
                .await
                .unwrap();
            page.data.into_iter().map(|a| a.id).collect::<Vec<_>>()
        };
        assert_eq!(listed().await, [fresh_id, old_id], "{name}");

        // Nothing is wholly older than an hour ago; the first partition
        // (everything before the store was made) is older than now.
        assert_eq!(
            store.drop_attempts_before(now() - 3_600_000).await.unwrap(),
            0,
            "{name}"
        );
        let dropped = store.drop_attempts_before(now()).await.unwrap();
        let Some(schema) = backend.schema.clone() else {
            assert_eq!(dropped, 0, "{name}: attempts go with their messages");
            continue;
        };
        assert_eq!(dropped, 1, "{name}: the first partition");
        assert_eq!(
            listed().await,
            [fresh_id],
            "{name}: the old day is gone, today stays"
        );
        // Even a cut in the future never drops the day being written.
        assert_eq!(
            store
                .drop_attempts_before(now() + 30 * 86_400_000)
                .await
                .unwrap(),
            0,
            "{name}"
        );
        assert_eq!(listed().await, [fresh_id], "{name}");

        // This week (from the store's making) and the next exist, and a
        // second process (a restart) finds them and adds none.
        let url = std::env::var("HERALD_TEST_DATABASE_URL").unwrap();
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let days = async |conn: &mut sqlx::PgConnection| {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname = 'attempts' AND n.nspname = $1",
            )
            .bind(schema.clone())
            .fetch_one(conn)
            .await
            .unwrap()
        };
        assert_eq!(days(&mut conn).await, 2, "{name}: this week and the next");
        let mut options = PgOptions::new(&url);
        options.schema = Some(schema.clone());
        let again = PgStore::open(&options).await.unwrap();
        assert_eq!(days(&mut conn).await, 2, "{name}: a restart adds none");
        drop(again);
    }
}

/// Records the one attempt of `job` with a final outcome.
async fn finish(store: &dyn Store, job: &DeliveryJob, succeeded: bool) {
    store
        .record_attempt(outcome(job, AttemptId::generate(), succeeded))
        .await
        .unwrap();
}

/// The final outcome of `job`'s attempt `id`: a 200, or a 500.
fn outcome(job: &DeliveryJob, id: AttemptId, succeeded: bool) -> AttemptOutcome {
    AttemptOutcome {
        lease_until: job.lease_until,
        attempt: Attempt {
            id,
            app_id: job.message.app_id,
            message_id: job.message.id,
            endpoint_id: job.endpoint.id,
            url: job.endpoint.url.to_string(),
            status: if succeeded {
                DeliveryStatus::Succeeded
            } else {
                DeliveryStatus::Failed
            },
            response_status_code: if succeeded { 200 } else { 500 },
            response: String::new(),
            response_duration_ms: 1,
            error_class: None,
            trigger: job.trigger,
            created_at: now(),
        },
        next: if succeeded {
            NextStep::Succeeded
        } else {
            NextStep::Failed
        },
        disable_endpoint: false,
    }
}

#[tokio::test]
async fn recovery_resends_the_failed_and_missed_deliveries_in_its_window_once() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let target = endpoint(store, app, "http://a.test/target").await;
        let other = endpoint(store, app, "http://a.test/other").await;
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
        // Every message goes to both endpoints; `succeeds` marks the one
        // whose delivery to `target` succeeds (all others fail).
        let send = async |succeeds: bool| {
            let created = store
                .create_message(app, message("call.started", None), Some(claim(now())), None)
                .await
                .unwrap();
            for job in &created.jobs {
                finish(store, job, succeeds && job.endpoint.id == target.id).await;
            }
            created.message.id
        };
        send(false).await;
        send(false).await;
        pause().await;
        let since = now();
        pause().await;
        let (failed, succeeded) = (send(false).await, send(true).await);
        let also_failed = send(false).await;
        let switch = async |disabled: bool| {
            store
                .update_endpoint(
                    app,
                    target.id,
                    endpoint_input("http://a.test/target", &[], disabled),
                    None,
                )
                .await
                .unwrap();
        };
        switch(true).await;
        let missed = send(false).await; // only `other` gets it
        switch(false).await;
        let inside = [failed, succeeded, also_failed, missed];
        pause().await;
        let until = now();
        pause().await;
        send(false).await;

        let task = store
            .start_recovery(
                app,
                Recovery {
                    endpoint_id: target.id,
                    since,
                    until: Some(until),
                },
                None,
            )
            .await
            .unwrap();
        let mut steps = Vec::new();
        loop {
            let state = store.recovery_step(task.id, 1).await.unwrap();
            steps.push((state.status, state.done));
            if state.status != TaskStatus::Running || steps.len() > 10 {
                break;
            }
        }
        let after = store.recovery_step(task.id, 1).await.unwrap();
        let due = store
            .claim_due(claim(now()), 100, Room::default())
            .await
            .unwrap();

        assert_eq!(
            steps,
            [
                (TaskStatus::Running, 1),
                (TaskStatus::Running, 1),
                (TaskStatus::Running, 2),
                (TaskStatus::Running, 3),
                (TaskStatus::Finished, 3)
            ],
            "{name}: one message looked at per step, then done"
        );
        assert_eq!(
            (after.status, after.done),
            (TaskStatus::Finished, 3),
            "{name}"
        );
        assert_eq!(store.get_task(task.id).await.unwrap(), after, "{name}");
        let mut recovered: Vec<_> = due
            .iter()
            .map(|job| (job.message.id, job.endpoint.id, job.trigger))
            .collect();
        recovered.sort_by_key(|(message, _, _)| *message);
        assert_eq!(
            recovered,
            [
                (inside[0], target.id, Trigger::Manual),
                (inside[2], target.id, Trigger::Manual),
                (inside[3], target.id, Trigger::Manual)
            ],
            "{name}: the failed deliveries to the endpoint inside the window, and the one it missed"
        );
        assert!(store.running_tasks().await.unwrap().is_empty(), "{name}");
        let elsewhere = store
            .start_recovery(
                AppId::generate(),
                Recovery {
                    endpoint_id: other.id,
                    since,
                    until: None,
                },
                None,
            )
            .await;
        assert!(
            matches!(elsewhere, Err(StoreError::NotFound)),
            "{name}: another app's endpoint: {elsewhere:?}"
        );
    }
}

#[tokio::test]
async fn health_reports_add_up_by_window_and_carry_the_run_of_failures() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/1").await;
        let at = now();
        let hours_ago = |h: i64| at - h * 3_600_000;
        let mut first = HealthUpdate::new(endpoint.id);
        first.observe(hours_ago(30), true, 40); // in the week only
        first.observe(hours_ago(3), false, 7); // in the day
        first.observe(at - 1_000, true, 5);
        first.observe(at - 900, false, 300);
        let mut second = HealthUpdate::new(endpoint.id);
        second.observe(at - 800, false, 12);
        second.observe(at - 700, false, 3);

        store.record_health(vec![first], None).await.unwrap();
        let a_day = AutoDisable {
            after: 24 * 3_600_000,
            min_attempts: 1,
        };
        let disabled = store
            .record_health(vec![second], Some(a_day))
            .await
            .unwrap();
        assert!(
            !disabled.iter().any(|run| run.disabled),
            "{name}: failing for a second only"
        );
        assert_eq!(
            (disabled[0].consecutive_failures, disabled[0].failing_since),
            (3, Some(at - 900)),
            "{name}"
        );
        let health = store.endpoint_health(app, endpoint.id, at).await.unwrap();

        let summary = |c: &HealthCounts| (c.succeeded, c.failed, c.duration_sum_ms);
        assert_eq!(summary(&health.last_hour), (1, 3, 320), "{name}");
        assert_eq!(summary(&health.last_day), (1, 4, 327), "{name}");
        assert_eq!(summary(&health.last_week), (2, 4, 367), "{name}");
        assert_eq!(health.last_week.p95_ms(), Some(500), "{name}");
        // Hour by hour, the day adds up to the day's window, and the last
        // column is the last hour's window (both start on a bucket 23 h
        // after the day's).
        assert_eq!(health.last_day_by_hour.len(), 24, "{name}");
        let mut day = HealthCounts::default();
        for hour in &health.last_day_by_hour {
            day.add(hour);
        }
        assert_eq!(summary(&day), summary(&health.last_day), "{name}");
        assert_eq!(
            summary(&health.last_day_by_hour[23]),
            summary(&health.last_hour),
            "{name}: the last column is the last hour"
        );
        assert_eq!(
            health.consecutive_failures, 3,
            "{name}: one from the first report, two after"
        );
        assert_eq!(health.failing_since, Some(at - 900), "{name}");
        assert_eq!(health.last_success_at, Some(at - 1_000), "{name}");
        assert_eq!(health.last_failure_at, Some(at - 700), "{name}");

        let mut recovered = HealthUpdate::new(endpoint.id);
        recovered.observe(at - 100, true, 1);
        let runs = store.record_health(vec![recovered], None).await.unwrap();
        assert_eq!(
            runs[0].ended_run,
            Some(at - 900),
            "{name}: the run this success ended"
        );
        let health = store.endpoint_health(app, endpoint.id, at).await.unwrap();
        assert_eq!(
            (health.consecutive_failures, health.failing_since),
            (0, None),
            "{name}"
        );

        assert!(
            store.purge_health(hours_ago(24)).await.unwrap() >= 1,
            "{name}"
        );
        let health = store.endpoint_health(app, endpoint.id, at).await.unwrap();
        assert_eq!(
            summary(&health.last_week),
            (2, 4, 328),
            "{name}: the 30 h old bucket is gone"
        );
    }
}

#[tokio::test]
async fn an_endpoints_retry_policy_is_stored_and_travels_with_its_jobs() {
    let spec: herald_domain::RetryPolicySpec = serde_json::from_str(
        r#"{"type":"exponential","initialDelay":"2s","factor":2,"maxDelay":"1m","maxAttempts":4,"maxAge":"1h"}"#,
    )
    .unwrap();
    let policy = herald_domain::RetryPolicy::from_spec(&spec).unwrap();
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let created = store
            .create_endpoint(
                app,
                EndpointInput {
                    retry_policy: Some(policy.clone()),
                    ..endpoint_input("http://a.test/1", &[], false)
                },
                Headers::new(),
                Secret::generate(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(created.retry_policy.as_ref(), Some(&policy), "{name}");

        let job = leased(store, app, claim(now())).await;
        assert_eq!(
            job.endpoint.retry_policy.as_deref(),
            Some(&policy),
            "{name}: fresh job"
        );
        store.release(&job).await.unwrap();
        let claimed = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();
        assert_eq!(
            claimed[0].endpoint.retry_policy.as_deref(),
            Some(&policy),
            "{name}: claimed job"
        );

        let cleared = store
            .update_endpoint(
                app,
                created.id,
                endpoint_input("http://a.test/1", &[], false),
                None,
            )
            .await
            .unwrap();
        assert_eq!(cleared.retry_policy, None, "{name}");
    }
}

#[tokio::test]
async fn an_endpoint_failing_long_enough_is_disabled_until_enabled_again() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/1").await;
        let at = now();
        let rule = AutoDisable {
            after: 5_000,
            min_attempts: 3,
        };
        let failures = |times: &[i64]| {
            let mut update = HealthUpdate::new(endpoint.id);
            for t in times {
                update.observe(*t, false, 5);
            }
            update
        };

        let too_few = store
            .record_health(vec![failures(&[at - 9_000, at - 8_000])], Some(rule))
            .await
            .unwrap();
        let enough = store
            .record_health(vec![failures(&[at - 100])], Some(rule))
            .await
            .unwrap();
        let disabled = store
            .get_endpoint(app, &IdOrUid::Id(endpoint.id))
            .await
            .unwrap();

        let disabled_now = |runs: &[EndpointRun]| runs.iter().any(|run| run.disabled);
        assert!(
            !disabled_now(&too_few),
            "{name}: two attempts are not enough"
        );
        assert!(disabled_now(&enough), "{name}");
        assert_eq!(enough[0].endpoint_id, endpoint.id, "{name}");
        assert!(disabled.disabled, "{name}");
        assert_eq!(
            disabled.disabled_reason.as_deref(),
            Some("failing"),
            "{name}"
        );
        assert!(disabled.disabled_at.is_some_and(|t| t >= at), "{name}");
        let none_twice = store
            .record_health(vec![failures(&[at - 50])], Some(rule))
            .await
            .unwrap();
        assert!(!disabled_now(&none_twice), "{name}: disabled once");

        let enabled = store
            .update_endpoint(
                app,
                endpoint.id,
                endpoint_input("http://a.test/1", &[], false),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            (enabled.disabled, enabled.disabled_reason),
            (false, None),
            "{name}"
        );
        let health = store
            .endpoint_health(app, endpoint.id, now())
            .await
            .unwrap();
        assert_eq!(
            (health.consecutive_failures, health.failing_since),
            (0, Some(at - 9_000)),
            "{name}: counting afresh, still failing since then"
        );
        let fresh = store
            .record_health(vec![failures(&[now()])], Some(rule))
            .await
            .unwrap();
        assert!(
            !disabled_now(&fresh),
            "{name}: one new failure is not enough"
        );
        assert_eq!(fresh[0].consecutive_failures, 1, "{name}");
        let again = store
            .record_health(vec![failures(&[now(), now()])], Some(rule))
            .await
            .unwrap();
        assert!(disabled_now(&again), "{name}: three new failures are");

        let still = store
            .update_endpoint(
                app,
                endpoint.id,
                endpoint_input("http://a.test/1", &[], true),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            still.disabled_reason.as_deref(),
            Some("failing"),
            "{name}: kept"
        );
        store
            .update_endpoint(
                app,
                endpoint.id,
                endpoint_input("http://a.test/1", &[], false),
                None,
            )
            .await
            .unwrap();
        let paused = store
            .update_endpoint(
                app,
                endpoint.id,
                endpoint_input("http://a.test/1", &[], true),
                None,
            )
            .await
            .unwrap();
        assert_eq!(paused.disabled_reason.as_deref(), Some("manual"), "{name}");
    }
}

#[tokio::test]
async fn a_strictly_ordered_endpoint_is_claimed_one_message_at_a_time_in_order() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let ordered = store
            .create_endpoint(
                app,
                EndpointInput {
                    strict_ordering: true,
                    ..endpoint_input("http://a.test/ordered", &[], false)
                },
                Headers::new(),
                Secret::generate(),
                None,
            )
            .await
            .unwrap();
        assert!(ordered.strict_ordering, "{name}");
        let mut sent = Vec::new();
        for _ in 0..3 {
            let created = store
                .create_message(app, message("call.started", None), Some(claim(now())), None)
                .await
                .unwrap();
            assert!(
                created.jobs.is_empty(),
                "{name}: not leased on the fast path"
            );
            sent.push(created.message.id);
        }

        let first = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();
        let while_in_flight = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();
        assert_eq!(
            first.iter().map(|j| j.message.id).collect::<Vec<_>>(),
            [sent[0]],
            "{name}: the oldest only"
        );
        assert!(while_in_flight.is_empty(), "{name}: the rest wait");
        finish(store, &first[0], true).await;
        let second = store
            .claim_due(claim(now()), 10, Room::default())
            .await
            .unwrap();
        assert_eq!(
            second.iter().map(|j| j.message.id).collect::<Vec<_>>(),
            [sent[1]],
            "{name}: then the next"
        );
    }
}

#[tokio::test]
async fn retention_purges_finished_messages_in_batches_and_keeps_pending_ones() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/1").await;
        let mut finished = Vec::new();
        for succeeded in [true, false, true] {
            let created = store
                .create_message(app, message("call.started", None), Some(claim(now())), None)
                .await
                .unwrap();
            finish(store, &created.jobs[0], succeeded).await;
            finished.push(created.message.id);
        }
        let pending = store
            .create_message(app, message("call.started", None), None, None)
            .await
            .unwrap()
            .message
            .id;
        let later = now() + 1_000;
        let too_young = store.purge_messages(now() - 60_000, 10).await.unwrap();

        let first = store.purge_messages(later, 2).await.unwrap();
        let second = store.purge_messages(later, 2).await.unwrap();
        let third = store.purge_messages(later, 2).await.unwrap();

        assert_eq!(too_young, 0, "{name}: nothing is older than a minute");
        assert_eq!((first, second, third), (2, 1, 0), "{name}: in batches");
        for id in &finished {
            let gone = store.get_message(app, &IdOrUid::Id(*id)).await;
            assert!(matches!(gone, Err(StoreError::NotFound)), "{name}");
        }
        let attempts = store
            .list_attempts(
                app,
                AttemptQuery::new(
                    AttemptFilter::Endpoint(endpoint.id),
                    PageRequest {
                        limit: 10,
                        cursor: Cursor::Start,
                    },
                ),
            )
            .await
            .unwrap();
        if backend.schema.is_none() {
            assert!(
                attempts.data.is_empty(),
                "{name}: their attempts went with them"
            );
        } else {
            // PostgreSQL keeps each attempt until its week is dropped
            // (`drop_attempts_before`), whatever became of its message.
            assert_eq!(
                attempts.data.len(),
                3,
                "{name}: attempts go by their own age"
            );
        }
        assert!(
            store.get_message(app, &IdOrUid::Id(pending)).await.is_ok(),
            "{name}: undelivered work is never purged"
        );
    }
}

#[tokio::test]
async fn a_success_rate_drop_keeps_its_start_until_the_rate_recovers() {
    let rule = RateRule {
        threshold: 0.8,
        min_attempts: 10,
    };
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/1").await;
        let report = async |ok: usize, failed: usize| {
            let mut update = HealthUpdate::new(endpoint.id);
            for n in 0..ok + failed {
                update.observe(now() - 1_000, n < ok, 5);
            }
            store.record_health(vec![update], None).await.unwrap();
        };

        report(5, 3).await;
        let too_few = store
            .check_success_rate(endpoint.id, rule, now())
            .await
            .unwrap();
        report(0, 2).await;
        let at = now();
        let dropped = store
            .check_success_rate(endpoint.id, rule, at)
            .await
            .unwrap();
        let still = store
            .check_success_rate(endpoint.id, rule, at + 50)
            .await
            .unwrap();
        report(40, 0).await;
        let recovered = store
            .check_success_rate(endpoint.id, rule, now())
            .await
            .unwrap();
        report(0, 30).await;
        let later = now() + 100;
        let again = store
            .check_success_rate(endpoint.id, rule, later)
            .await
            .unwrap();

        assert_eq!(too_few, None, "{name}: 8 attempts are too few");
        let dropped = dropped.expect("5 of 10");
        assert_eq!(
            (dropped.since, dropped.last_hour.attempts()),
            (at, 10),
            "{name}"
        );
        assert_eq!(still.map(|d| d.since), Some(at), "{name}: the same episode");
        assert_eq!(recovered, None, "{name}");
        assert_eq!(again.map(|d| d.since), Some(later), "{name}: a new episode");
    }
}

#[tokio::test]
async fn alert_rules_are_kept_per_app_and_reset_to_the_defaults() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let (first, second, third) = (
            app(store, None).await,
            app(store, None).await,
            app(store, None).await,
        );
        let rules = herald_domain::AlertRules::parse(
            serde_json::from_value(serde_json::json!({
                "events": ["endpoint.failing"], "filterTypes": ["call.*"], "failingAfter": 3,
            }))
            .unwrap(),
        )
        .unwrap();
        store
            .set_alert_rules(first, Some(rules.clone()), None)
            .await
            .unwrap();
        store
            .set_alert_rules(third, Some(herald_domain::AlertRules::default()), None)
            .await
            .unwrap();

        let mut found = store.alert_rules(vec![first, second, third]).await.unwrap();
        found.sort_by_key(|(app, _)| *app);
        let mut expected = vec![
            (first, rules),
            (third, herald_domain::AlertRules::default()),
        ];
        expected.sort_by_key(|(app, _)| *app);
        assert_eq!(found, expected, "{name}: only apps with rules");

        store.set_alert_rules(first, None, None).await.unwrap();
        assert_eq!(
            store.alert_rules(vec![first]).await.unwrap(),
            Vec::new(),
            "{name}: reset"
        );
        let unknown = AppId::generate();
        assert!(
            matches!(
                store.set_alert_rules(unknown, None, None).await,
                Err(StoreError::NotFound)
            ),
            "{name}: unknown app"
        );
    }
}

#[tokio::test]
async fn tokens_are_found_by_hash_scoped_to_their_app_and_revoked_once() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let (first, second) = (app(store, None).await, app(store, None).await);
        let input = |app, byte, expires_at| TokenInput {
            app_id: app,
            kind: TokenKind::Api,
            name: "ci".into(),
            hash: [byte; 32],
            expires_at,
        };
        let token = store
            .create_token(input(first, 1, None), None)
            .await
            .unwrap();
        store
            .create_token(input(second, 2, Some(5)), None)
            .await
            .unwrap();
        assert!(
            matches!(
                store
                    .create_token(input(AppId::generate(), 3, None), None)
                    .await,
                Err(StoreError::NotFound)
            ),
            "{name}: no token for an unknown app"
        );

        let found = store.token_by_hash([1; 32]).await.unwrap().unwrap();
        assert_eq!(found, token, "{name}");
        assert!(found.is_valid_at(i64::MAX - 1), "{name}: no expiry");
        let expiring = store.token_by_hash([2; 32]).await.unwrap().unwrap();
        assert!(
            expiring.is_valid_at(4) && !expiring.is_valid_at(5),
            "{name}"
        );
        assert_eq!(store.token_by_hash([9; 32]).await.unwrap(), None, "{name}");

        // Another app cannot revoke it; its own can, once.
        assert!(
            matches!(
                store.revoke_token(second, token.id, 10, None).await,
                Err(StoreError::NotFound)
            ),
            "{name}"
        );
        assert_eq!(
            store
                .revoke_token(first, token.id, 10, None)
                .await
                .unwrap()
                .revoked_at,
            Some(10)
        );
        let again = store.revoke_token(first, token.id, 20, None).await.unwrap();
        assert_eq!(
            again.revoked_at,
            Some(10),
            "{name}: the first revocation stays"
        );
        assert!(!again.is_valid_at(11), "{name}");
        let listed = store
            .list_tokens(
                first,
                PageRequest {
                    limit: 10,
                    cursor: Cursor::default(),
                },
            )
            .await
            .unwrap();
        assert_eq!(listed.data, vec![again], "{name}: only the app's own");
    }
}

#[tokio::test]
async fn the_audit_log_lists_newest_first_per_app_or_all() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let (first, second) = (app(store, None).await, app(store, None).await);
        for (n, app) in [
            (0, Some(first)),
            (1, Some(second)),
            (2, Some(first)),
            (3, None),
        ] {
            store
                .record_audit(AuditEntry {
                    id: herald_domain::AuditId::generate(),
                    actor: "admin".into(),
                    app_id: app,
                    action: format!("thing.{n}"),
                    target: format!("t{n}"),
                    detail: None,
                    created_at: n,
                })
                .await
                .unwrap();
        }
        let page = |app| AuditQuery {
            app,
            page: PageRequest {
                limit: 10,
                cursor: Cursor::default(),
            },
        };
        let actions = |entries: Page<AuditEntry>| {
            entries
                .data
                .into_iter()
                .map(|e| e.action)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            actions(store.list_audit(page(Some(first))).await.unwrap()),
            ["thing.2", "thing.0"],
            "{name}"
        );
        assert_eq!(
            actions(store.list_audit(page(None)).await.unwrap()),
            ["thing.3", "thing.2", "thing.1", "thing.0"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_change_and_its_audit_entry_are_stored_together_or_not_at_all() {
    let entry = |app: Option<AppId>, action: &str, target: &str| {
        Some(AuditEntry {
            id: herald_domain::AuditId::generate(),
            actor: "admin".into(),
            app_id: app,
            action: action.into(),
            target: target.into(),
            detail: None,
            created_at: now(),
        })
    };
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let input = |uid: &str| AppInput {
            uid: Some(Uid::parse("uid", uid).unwrap()),
            name: uid.into(),
            rate_limit: None,
            metadata: Default::default(),
        };
        // A new app: the entry names it, though the caller could not.
        let made = store
            .create_app(input("audited"), entry(None, "app.created", ""))
            .await
            .unwrap();
        // A clash writes neither the app nor the entry.
        let clash = store
            .create_app(input("audited"), entry(None, "app.created", ""))
            .await;
        assert!(matches!(clash, Err(StoreError::Conflict { .. })), "{name}");
        // A change to something missing: no entry either.
        let gone = herald_domain::EndpointId::generate();
        let missing = store
            .delete_endpoint(
                made.id,
                gone,
                entry(Some(made.id), "endpoint.deleted", &gone.to_string()),
            )
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{name}");
        // A new endpoint and a test event (a message, batched on PostgreSQL).
        let created = store
            .create_endpoint(
                made.id,
                endpoint_input("https://hooks.test/audited", &[], false),
                Headers::new(),
                Secret::generate(),
                entry(Some(made.id), "endpoint.created", ""),
            )
            .await
            .unwrap();
        store
            .create_message(
                made.id,
                message("call.completed", Some("audited-1")),
                None,
                entry(Some(made.id), "endpoint.test_event_sent", "t"),
            )
            .await
            .unwrap();
        // The same event id again is refused, and so is its entry.
        let repeated = store
            .create_message(
                made.id,
                message("call.completed", Some("audited-1")),
                None,
                entry(Some(made.id), "endpoint.test_event_sent", "repeated"),
            )
            .await;
        assert!(
            matches!(repeated, Err(StoreError::Conflict { .. })),
            "{name}"
        );

        let listed = store
            .list_audit(AuditQuery {
                app: Some(made.id),
                page: PageRequest {
                    limit: 10,
                    cursor: Cursor::default(),
                },
            })
            .await
            .unwrap();
        let mut logged: Vec<(String, String)> = listed
            .data
            .into_iter()
            .map(|e| (e.action, e.target))
            .collect();
        logged.sort();
        assert_eq!(
            logged,
            [
                ("app.created".to_owned(), made.id.to_string()),
                ("endpoint.created".to_owned(), created.id.to_string()),
                ("endpoint.test_event_sent".to_owned(), "t".to_owned()),
            ],
            "{name}"
        );
    }
}

#[tokio::test]
async fn sealed_secrets_sign_and_need_their_key_to_open_the_store() {
    use herald_domain::sealing::{MasterKey, Sealing};
    let key = |byte: u8| {
        use base64::Engine;
        MasterKey::parse(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap()
    };
    let sealed = Sealing {
        current: Some(key(1)),
        previous: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sealed.db");
    let url = std::env::var("HERALD_TEST_DATABASE_URL").ok();
    let schema = format!(
        "herald_test_{}_sealed_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let open = |sealing: Sealing, postgres: bool| {
        let path = path.clone();
        let url = url.clone();
        let schema = schema.clone();
        async move {
            if postgres {
                let mut options = PgOptions::new(url.unwrap());
                options.schema = Some(schema);
                options.sealing = sealing;
                PgStore::open(&options)
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Store>)
            } else {
                let mut options = SqliteOptions::new(path);
                options.sealing = sealing;
                SqliteStore::open(&options).map(|s| Arc::new(s) as Arc<dyn Store>)
            }
        }
    };
    let mut kinds = vec![false];
    if url.is_some() {
        kinds.push(true);
    }
    for postgres in kinds {
        let name = if postgres { "postgres" } else { "sqlite" };
        let store = open(sealed.clone(), postgres).await.unwrap();
        seed(store.as_ref()).await;
        let app = app(store.as_ref(), None).await;
        let secret = Secret::generate();
        let endpoint = store
            .create_endpoint(
                app,
                endpoint_input("http://a.test/1", &[], false),
                Headers::new(),
                secret.clone(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            store.endpoint_secret(app, endpoint.id).await.unwrap(),
            secret,
            "{name}"
        );
        let created = store
            .create_message(
                app,
                MessageInput {
                    event_type: EventTypeName::parse("call.started").unwrap(),
                    event_id: None,
                    payload: "{}".into(),
                    channels: None,
                    to_endpoint: None,
                    filters: Default::default(),
                    deliver_at: None,
                },
                Some(Claim::new(now(), now() + 60_000)),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            created.jobs[0].endpoint.secrets,
            vec![secret.clone()],
            "{name}: signs"
        );
        drop(created);
        drop(store);

        let refused = open(Sealing::default(), postgres).await.unwrap_err();
        assert!(
            refused.to_string().contains("HERALD_MASTER_KEY"),
            "{name}: {refused}"
        );
        let wrong = Sealing {
            current: Some(key(2)),
            previous: None,
        };
        let refused = open(wrong, postgres).await.unwrap_err();
        assert!(
            refused.to_string().contains("does not open"),
            "{name}: {refused}"
        );
        let rotating = Sealing {
            current: Some(key(2)),
            previous: Some(key(1)),
        };
        drop(open(rotating, postgres).await.unwrap());
        let rotated = open(
            Sealing {
                current: Some(key(2)),
                previous: None,
            },
            postgres,
        )
        .await
        .unwrap();
        assert_eq!(
            rotated.endpoint_secret(app, endpoint.id).await.unwrap(),
            secret,
            "{name}"
        );
    }
}

#[tokio::test]
async fn rotating_often_keeps_at_most_five_signing_secrets() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = store
            .create_endpoint(
                app,
                endpoint_input("http://a.test/1", &[], false),
                Headers::new(),
                Secret::generate(),
                None,
            )
            .await
            .unwrap();
        let mut current = Secret::generate();
        for _ in 0..7 {
            current = Secret::generate();
            store
                .rotate_endpoint_secret(app, endpoint.id, current.clone(), now() + 3_600_000, None)
                .await
                .unwrap();
        }
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())), None)
            .await
            .unwrap();
        let secrets = &created.jobs[0].endpoint.secrets;
        assert_eq!(
            secrets.len(),
            5,
            "{name}: the current one and four in grace"
        );
        assert_eq!(secrets[0], current, "{name}: the current one signs first");
    }
}

#[tokio::test]
async fn queue_gauges_count_due_and_scheduled_deliveries_and_endpoints_in_trouble() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        store
            .create_endpoint(
                app,
                endpoint_input("http://a.test/off", &[], true),
                Headers::new(),
                Secret::generate(),
                None,
            )
            .await
            .unwrap();
        for _ in 0..3 {
            store
                .create_message(app, message("call.started", None), None, None)
                .await
                .unwrap();
        }
        let at = now() + 1;
        let gauges = store.queue_gauges(at).await.unwrap();
        assert_eq!(
            (gauges.due, gauges.scheduled, gauges.disabled_endpoints),
            (3, 0, 1),
            "{name}: three due, the disabled endpoint gets nothing"
        );

        // One claimed (leased: due when the lease ends), one failed and
        // scheduled for a retry, one left due.
        let jobs = store
            .claim_due(claim(at), 2, Room::default())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 2, "{name}");
        let failed = &jobs[0];
        store
            .record_attempt(AttemptOutcome {
                lease_until: failed.lease_until,
                attempt: Attempt {
                    id: AttemptId::generate(),
                    app_id: app,
                    message_id: failed.message.id,
                    endpoint_id: failed.endpoint.id,
                    url: failed.endpoint.url.to_string(),
                    status: DeliveryStatus::Failed,
                    response_status_code: 503,
                    response: String::new(),
                    response_duration_ms: 3,
                    error_class: Some(herald_domain::ErrorClass::HttpStatus),
                    trigger: Trigger::Scheduled,
                    created_at: at,
                },
                next: NextStep::RetryAt(at + 60_000),
                disable_endpoint: false,
            })
            .await
            .unwrap();
        let mut update = HealthUpdate::new(failed.endpoint.id);
        update.observe(at, false, 3);
        store.record_health(vec![update], None).await.unwrap();
        let gauges = store.queue_gauges(at + 1).await.unwrap();
        assert_eq!(
            gauges,
            QueueGauges {
                due: 1,
                scheduled: 2,
                disabled_endpoints: 1,
                failing_endpoints: 1,
            },
            "{name}"
        );

        let gauges = store.endpoint_gauges().await.unwrap();
        assert_eq!(gauges.len(), 2, "{name}: {gauges:?}");
        assert_eq!(
            gauges.iter().filter(|g| g.disabled).count(),
            1,
            "{name}: the disabled one"
        );
        let failing = gauges
            .iter()
            .find(|g| g.endpoint_id == failed.endpoint.id)
            .unwrap();
        assert_eq!(
            (failing.app_id, failing.consecutive_failures),
            (app, 1),
            "{name}"
        );

        let pool = store.pool_usage();
        assert!(
            pool.max > 0 && pool.connections <= pool.max,
            "{name}: {pool:?}"
        );
        assert!(pool.idle <= pool.connections, "{name}: {pool:?}");
    }
}

#[tokio::test]
async fn an_inspector_keeps_the_newest_hundred_requests_until_closed() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let opened = store
            .open_inspector(app, "tok-a".into(), None)
            .await
            .unwrap();
        let again = store
            .open_inspector(app, "tok-b".into(), None)
            .await
            .unwrap();
        assert_eq!(again, opened, "{name}: an app has one inspector");
        assert_eq!(
            store.inspector_by_token("tok-a".into()).await.unwrap(),
            Some(opened.clone()),
            "{name}"
        );
        assert_eq!(
            store.inspector_by_token("tok-b".into()).await.unwrap(),
            None
        );

        let request = |n: i64| InspectedRequest {
            id: format!("ireq_{n:04}"),
            app_id: app,
            method: "POST".into(),
            path: "/inspect/tok-a".into(),
            query: (n % 2 == 0).then(|| format!("n={n}")),
            headers: vec![("webhook-id".into(), format!("msg_{n}"))],
            body: vec![0, 159, 146, 150, n as u8],
            body_truncated: n == 104,
            received_at: 1_000 + n,
        };
        for n in 0..105 {
            store.record_inspected(request(n)).await.unwrap();
        }
        let kept = store.list_inspected(app, 500).await.unwrap();
        assert_eq!(kept.len(), INSPECTED_KEPT, "{name}");
        assert_eq!(kept[0], request(104), "{name}: newest first, bytes intact");
        assert_eq!(kept[99].id, "ireq_0005", "{name}: the oldest five are gone");
        assert_eq!(store.list_inspected(app, 3).await.unwrap().len(), 3);

        store.close_inspector(app, None).await.unwrap();
        assert_eq!(store.inspector(app).await.unwrap(), None, "{name}");
        assert!(store.list_inspected(app, 500).await.unwrap().is_empty());
        assert!(matches!(
            store.record_inspected(request(200)).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.close_inspector(app, None).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn an_apps_attempts_list_across_its_endpoints_newest_first() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let other = self::app(store, Some("other")).await;
        endpoint(store, app, "http://a.test/1").await;
        endpoint(store, app, "http://a.test/2").await;
        endpoint(store, other, "http://b.test/1").await;
        for (tenant, count) in [(app, 2), (other, 1)] {
            for _ in 0..count {
                let created = store
                    .create_message(
                        tenant,
                        message("call.started", None),
                        Some(claim(now())),
                        None,
                    )
                    .await
                    .unwrap();
                for job in &created.jobs {
                    finish(store, job, tenant == app).await;
                }
            }
        }
        let page = |limit| {
            AttemptQuery::new(
                AttemptFilter::App,
                PageRequest {
                    limit,
                    cursor: Cursor::Start,
                },
            )
        };
        let listed = store.list_attempts(app, page(10)).await.unwrap();
        assert_eq!(listed.data.len(), 4, "{name}: two messages × two endpoints");
        assert!(listed.data.iter().all(|a| a.app_id == app), "{name}");
        assert!(
            listed.data.windows(2).all(|w| w[0].id > w[1].id),
            "{name}: newest first"
        );
        let endpoints: std::collections::HashSet<_> =
            listed.data.iter().map(|a| a.endpoint_id).collect();
        assert_eq!(endpoints.len(), 2, "{name}");
        let first = store.list_attempts(app, page(3)).await.unwrap();
        assert!(!first.done, "{name}");
        let mut next = page(3);
        next.page.cursor = Cursor::parse(first.iterator.as_deref());
        let rest = store.list_attempts(app, next).await.unwrap();
        assert_eq!(rest.data.len(), 1, "{name}: the page after");
        assert_eq!(rest.data[0].id, listed.data[3].id, "{name}");
        let mut failed = page(10);
        failed.status = Some(DeliveryStatus::Failed);
        assert!(store
            .list_attempts(app, failed)
            .await
            .unwrap()
            .data
            .is_empty());
    }
}

#[tokio::test]
async fn send_slots_are_shared_on_postgresql_and_local_on_sqlite() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let endpoint = endpoint(store, app, "http://a.test/paced").await;
        let at = 1_000_000;
        let first = store
            .reserve_send(endpoint.id, 250, at, at + 10_000)
            .await
            .unwrap();
        if name == "sqlite" {
            assert_eq!(first, SendSlot::Local, "{name}");
            continue;
        }
        assert_eq!(first, SendSlot::At(at), "{name}: free now");
        let second = store.reserve_send(endpoint.id, 250, at, at + 10_000).await;
        assert_eq!(
            second.unwrap(),
            SendSlot::At(at + 250),
            "{name}: the next slot"
        );
        // A caller whose deadline comes before the next free slot gets none,
        // and the slot stays free for others.
        let late = store.reserve_send(endpoint.id, 250, at, at + 100).await;
        assert_eq!(late.unwrap(), SendSlot::NotBefore(at + 500), "{name}");
        let third = store.reserve_send(endpoint.id, 250, at, at + 10_000).await;
        assert_eq!(third.unwrap(), SendSlot::At(at + 500), "{name}");
        // Later than the schedule: the slot is now.
        let idle = store
            .reserve_send(endpoint.id, 250, at + 60_000, at + 70_000)
            .await;
        assert_eq!(idle.unwrap(), SendSlot::At(at + 60_000), "{name}");
    }
}

#[tokio::test]
async fn destinations_show_each_delivery_and_removed_content_is_gone_for_good() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let done = endpoint(store, app, "http://a.test/done").await;
        let waiting = endpoint(store, app, "http://a.test/waiting").await;
        let sending = endpoint(store, app, "http://a.test/sending").await;
        let created = store
            .create_message(
                app,
                message("call.started", Some("erase-me")),
                Some(claim(now())),
                None,
            )
            .await
            .unwrap();
        let job = |endpoint: herald_domain::EndpointId| {
            created
                .jobs
                .iter()
                .find(|j| j.endpoint.id == endpoint)
                .unwrap()
        };
        let message_id = created.message.id;
        store
            .record_attempt(outcome(job(done.id), AttemptId::generate(), true))
            .await
            .unwrap();
        let retry_at = now() + 60_000;
        let mut failed = outcome(job(waiting.id), AttemptId::generate(), false);
        failed.next = NextStep::RetryAt(retry_at);
        store.record_attempt(failed).await.unwrap();

        let page = PageRequest {
            limit: 2,
            cursor: Cursor::Start,
        };
        let first = store
            .list_destinations(app, message_id, page.clone())
            .await
            .unwrap();
        let rest = store
            .list_destinations(
                app,
                message_id,
                PageRequest {
                    limit: 2,
                    cursor: Cursor::After(first.iterator.clone().unwrap()),
                },
            )
            .await
            .unwrap();
        assert!(!first.done && rest.done, "{name}: two pages");
        let mut seen: Vec<(herald_domain::EndpointId, DeliveryStatus, Option<Timestamp>)> = first
            .data
            .iter()
            .chain(&rest.data)
            .map(|d| (d.endpoint.id, d.status, d.next_attempt))
            .collect();
        let mut expected = vec![
            (done.id, DeliveryStatus::Succeeded, None),
            (waiting.id, DeliveryStatus::Pending, Some(retry_at)),
            (sending.id, DeliveryStatus::Sending, None),
        ];
        seen.sort_by_key(|d| d.0.to_string());
        expected.sort_by_key(|d| d.0.to_string());
        assert_eq!(seen, expected, "{name}");
        // The same from each endpoint's side (the portal's activity log).
        let unsettled = |endpoint: herald_domain::EndpointId| async move {
            store
                .pending_deliveries(app, endpoint, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|p| {
                    (
                        p.message_id,
                        p.event_type,
                        p.attempts,
                        p.status,
                        p.next_attempt,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(unsettled(done.id).await, [], "{name}");
        assert_eq!(
            unsettled(waiting.id).await,
            [(
                message_id,
                "call.started".to_owned(),
                1,
                DeliveryStatus::Pending,
                Some(retry_at)
            )],
            "{name}"
        );
        assert_eq!(
            unsettled(sending.id).await,
            [(
                message_id,
                "call.started".to_owned(),
                0,
                DeliveryStatus::Sending,
                None
            )],
            "{name}"
        );
        let other = self::app(store, None).await;
        assert!(
            store
                .pending_deliveries(other, waiting.id, 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}: another app sees none"
        );
        assert!(
            matches!(
                store.list_destinations(other, message_id, page).await,
                Err(StoreError::NotFound)
            ),
            "{name}: another app's message is not found"
        );

        // The answer an Idempotency-Key keeps for the message's creation.
        let at = now();
        let answer = format!(
            r#"{{"id":"{message_id}","eventType":"call.started","payload":{{"email":"someone@example.test"}},"channels":null}}"#
        );
        assert_eq!(
            store
                .reserve_idempotency_key("send", "erase-key", "f", at, at - 1_000)
                .await
                .unwrap(),
            Reservation::Reserved
        );
        store
            .complete_idempotency_key(
                "send",
                "erase-key",
                StoredResponse {
                    status: 202,
                    body: answer,
                    created_at: at,
                },
            )
            .await
            .unwrap();

        store.remove_content(app, message_id, None).await.unwrap();
        // A retried request with the key is answered with the message, its
        // payload gone (not run again: that would send a second message).
        match store
            .reserve_idempotency_key("send", "erase-key", "f", at, at - 1_000)
            .await
            .unwrap()
        {
            Reservation::Done(replayed) => {
                let body: serde_json::Value = serde_json::from_str(&replayed.body).unwrap();
                assert_eq!(body["id"], message_id.to_string(), "{name}");
                assert_eq!(body["payload"], serde_json::json!({}), "{name}");
                assert!(
                    !replayed.body.contains("someone"),
                    "{name}: {}",
                    replayed.body
                );
            }
            other => panic!("{name}: the key's answer was not kept: {other:?}"),
        }
        let erased = store
            .get_message(app, &IdOrUid::Id(message_id))
            .await
            .unwrap();
        assert_eq!(erased.payload, "{}", "{name}");
        let after = store
            .list_destinations(
                app,
                message_id,
                PageRequest {
                    limit: 10,
                    cursor: Cursor::Start,
                },
            )
            .await
            .unwrap();
        assert!(
            after
                .data
                .iter()
                .all(|d| d.endpoint.id == done.id || d.status == DeliveryStatus::Failed),
            "{name}: pending deliveries ended as failed: {:?}",
            after.data.iter().map(|d| d.status).collect::<Vec<_>>()
        );
        assert!(
            store
                .claim_due(claim(retry_at + 1), 10, Room::default())
                .await
                .unwrap()
                .is_empty(),
            "{name}: nothing left to send"
        );
        let attempts = store
            .list_attempts(
                app,
                AttemptQuery::new(
                    AttemptFilter::Message(message_id),
                    PageRequest {
                        limit: 10,
                        cursor: Cursor::Start,
                    },
                ),
            )
            .await
            .unwrap();
        let mut why: Vec<herald_domain::EndpointId> = attempts
            .data
            .iter()
            .filter(|a| a.error_class == Some(herald_domain::ErrorClass::ContentRemoved))
            .map(|a| a.endpoint_id)
            .collect();
        why.sort_by_key(ToString::to_string);
        let mut unsent = vec![waiting.id, sending.id];
        unsent.sort_by_key(ToString::to_string);
        assert_eq!(
            why, unsent,
            "{name}: one attempt says why per unsent delivery"
        );
        // The worker that was sending finds its lease gone: its outcome
        // does not bring the delivery back.
        store
            .record_attempt(outcome(job(sending.id), AttemptId::generate(), false))
            .await
            .unwrap();
        assert!(
            store.next_due_at(vec![]).await.unwrap().is_none(),
            "{name}: the late outcome schedules nothing"
        );
        let resend = store
            .resend(app, message_id, done.id, claim(now()), None)
            .await;
        assert!(
            matches!(resend, Err(StoreError::ContentRemoved)),
            "{name}: a removed message is not sent again: {resend:?}"
        );
        assert!(
            matches!(
                store.remove_content(other, message_id, None).await,
                Err(StoreError::NotFound)
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_endpoint_s_filter_decides_at_fan_out_and_its_options_reach_the_sender() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let options = herald_domain::DeliveryOptions {
            filter: Some(r#"data.direction == "inbound""#.into()),
            transformation: Some(r#"{"text": "Call " + data.callId}"#.into()),
            raw_payload: false,
            timeout: Some(3),
        };
        let inbound_only = store
            .create_endpoint(
                app,
                EndpointInput {
                    options: options.clone(),
                    ..endpoint_input("http://a.test/inbound", &[], false)
                },
                Headers::new(),
                Secret::generate(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(inbound_only.options, options, "{name}: options kept");
        let everything = endpoint(store, app, "http://a.test/all").await;
        let send = |direction: &str| MessageInput {
            payload: format!(r#"{{"direction":"{direction}","callId":"c1"}}"#),
            ..message("call.started", None)
        };
        let at = now();
        let inbound = store
            .create_message(app, send("inbound"), Some(claim(at)), None)
            .await
            .unwrap();
        let outbound = store
            .create_message(app, send("outbound"), Some(claim(at)), None)
            .await
            .unwrap();
        // A payload the filter cannot read (no `direction`) is not let through.
        let unreadable = store
            .create_message(app, message("call.started", None), Some(claim(at)), None)
            .await
            .unwrap();
        let targets = |created: &CreatedMessage| {
            let mut ids: Vec<_> = created.jobs.iter().map(|j| j.endpoint.id).collect();
            ids.sort();
            ids
        };
        let mut both = vec![inbound_only.id, everything.id];
        both.sort();
        assert_eq!(targets(&inbound), both, "{name}: inbound goes to both");
        assert_eq!(
            targets(&outbound),
            vec![everything.id],
            "{name}: outbound only to the unfiltered"
        );
        assert_eq!(
            targets(&unreadable),
            vec![everything.id],
            "{name}: a failing filter keeps it out"
        );
        let job = inbound
            .jobs
            .iter()
            .find(|j| j.endpoint.id == inbound_only.id)
            .unwrap();
        assert_eq!(job.endpoint.options, options, "{name}: fresh job");

        // A retry reads the endpoint again: the options come with it.
        let mut failed = outcome(job, AttemptId::generate(), false);
        failed.next = NextStep::RetryAt(at + 5);
        store.record_attempt(failed).await.unwrap();
        let retried = store
            .claim_due(claim(at + 70_000), 10, Room::skipping([everything.id]))
            .await
            .unwrap();
        let retried = retried
            .iter()
            .find(|j| j.endpoint.id == inbound_only.id)
            .expect("the retry is due");
        assert_eq!(retried.endpoint.options, options, "{name}: claimed job");

        // Options are cleared like any other field.
        let cleared = store
            .update_endpoint(
                app,
                inbound_only.id,
                endpoint_input("http://a.test/inbound", &[], false),
                None,
            )
            .await
            .unwrap();
        assert_eq!(cleared.options, Default::default(), "{name}: cleared");
    }
}

#[tokio::test]
async fn a_filter_decided_before_the_write_is_taken_as_decided_while_its_source_is_current() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        let source = r#"data.direction == "inbound""#;
        let filtered = store
            .create_endpoint(
                app,
                EndpointInput {
                    options: herald_domain::DeliveryOptions {
                        filter: Some(source.into()),
                        ..Default::default()
                    },
                    ..endpoint_input("http://a.test/inbound", &[], false)
                },
                Headers::new(),
                Secret::generate(),
                None,
            )
            .await
            .unwrap();
        let inbound = |decided: Vec<(EndpointId, &str, bool)>| MessageInput {
            payload: r#"{"direction":"inbound"}"#.into(),
            filters: FilterDecisions(
                decided
                    .into_iter()
                    .map(|(id, source, passes)| (id, Arc::from(source), passes))
                    .collect(),
            ),
            ..message("call.started", None)
        };
        let at = now();
        let sent_to = |created: CreatedMessage| created.jobs.len();

        let undecided = store
            .create_message(app, inbound(vec![]), Some(claim(at)), None)
            .await
            .unwrap();
        // The decision stands even against the filter (it was made on the
        // same message before the write; here it says no).
        let decided_no = store
            .create_message(
                app,
                inbound(vec![(filtered.id, source, false)]),
                Some(claim(at)),
                None,
            )
            .await
            .unwrap();
        // A decision for another filter (changed since) is not used.
        let stale = store
            .create_message(
                app,
                inbound(vec![(filtered.id, "data.direction == \"outbound\"", false)]),
                Some(claim(at)),
                None,
            )
            .await
            .unwrap();

        assert_eq!(
            sent_to(undecided),
            1,
            "{name}: the writer runs an undecided filter"
        );
        assert_eq!(
            sent_to(decided_no),
            0,
            "{name}: a current decision is taken"
        );
        assert_eq!(sent_to(stale), 1, "{name}: a stale decision is run again");
    }
}

#[tokio::test]
async fn a_message_to_deliver_later_is_neither_leased_nor_due_before_its_time() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/later").await;
        let at = now();
        let later = MessageInput {
            deliver_at: Some(at + 3_600_000),
            ..message("call.started", None)
        };

        let created = store
            .create_message(app, later, Some(claim(at)), None)
            .await
            .unwrap();
        let before = store
            .claim_due(claim(at + 60_000), 10, Room::default())
            .await
            .unwrap();
        let due = store
            .claim_due(claim(at + 3_600_001), 10, Room::default())
            .await
            .unwrap();

        assert!(created.jobs.is_empty(), "{name}: nothing leased at once");
        assert!(before.is_empty(), "{name}: not due before its time");
        assert_eq!(due.len(), 1, "{name}: due at its time");
    }
}
