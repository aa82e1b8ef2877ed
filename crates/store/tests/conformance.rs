//! The store conformance suite: every behaviour the rest of Herald relies
//! on, run against each backend. SQLite always; PostgreSQL joins when its
//! implementation lands (it will read HERALD_TEST_DATABASE_URL).

use std::sync::Arc;

use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{
    AddressPolicy, AppId, AttemptId, DeliveryStatus, EndpointUrl, EventTypeName, FilterTypes,
    Secret, Trigger,
};
use herald_store::*;

struct Backend {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteOptions::new(dir.path().join("test.db"))).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
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
                })
                .collect(),
        )
        .await
        .unwrap();
    Backend { store, _dir: dir }
}

async fn backends() -> Vec<(&'static str, Backend)> {
    vec![("sqlite", sqlite().await)]
}

async fn app(store: &dyn Store, uid: Option<&str>) -> AppId {
    store
        .create_app(AppInput {
            uid: uid.map(|u| Uid::parse("uid", u).unwrap()),
            name: "Acme".into(),
            rate_limit: None,
            metadata: Metadata::new(),
        })
        .await
        .unwrap()
        .id
}

fn endpoint_input(url: &str, filter: &[&str], disabled: bool) -> EndpointInput {
    let policy = AddressPolicy {
        allow_http: true,
        allow_private_networks: true,
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
    }
}

async fn endpoint(store: &dyn Store, app: AppId, url: &str) -> Endpoint {
    store
        .create_endpoint(
            app,
            endpoint_input(url, &[], false),
            Headers::new(),
            Secret::generate(),
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
    }
}

fn claim(now: Timestamp) -> Claim {
    Claim {
        now,
        until: now + 60_000,
    }
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
                )
                .await
                .unwrap();
            if matches {
                wanted.push(endpoint.id);
            }
        }

        let created = store
            .create_message(app, message("call.completed", None), Some(claim(now())))
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
        let at = now();
        store
            .create_message(app, message("call.started", None), None)
            .await
            .unwrap();

        let first = store.claim_due(claim(at + 1), 10).await.unwrap();
        let second = store.claim_due(claim(at + 2), 10).await.unwrap();
        let after_expiry = store.claim_due(claim(at + 61_000 + 10), 10).await.unwrap();

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
            .create_message(app, message("call.started", None), Some(claim(now())))
            .await
            .unwrap();
        let job = &created.jobs[0];
        let attempt = |status: DeliveryStatus, code: u16| Attempt {
            id: AttemptId::generate(),
            app_id: app,
            message_id: job.message.id,
            endpoint_id: job.endpoint.id,
            url: job.endpoint.url.clone(),
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
                attempt: attempt(DeliveryStatus::Failed, 500),
                next: NextStep::RetryAt(retry_at),
                disable_endpoint: false,
            })
            .await
            .unwrap();
        assert_eq!(store.next_due_at().await.unwrap(), Some(retry_at), "{name}");
        assert!(
            store.claim_due(claim(now()), 10).await.unwrap().is_empty(),
            "{name}: not due yet"
        );
        let retried = store.claim_due(claim(retry_at), 10).await.unwrap();
        assert_eq!(retried[0].attempts_made, 1, "{name}");
        store
            .record_attempt(AttemptOutcome {
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
        assert_eq!(store.next_due_at().await.unwrap(), None, "{name}");
        let attempts = store
            .list_attempts(
                app,
                AttemptQuery {
                    filter: AttemptFilter::Message(job.message.id),
                    page: PageRequest {
                        limit: 10,
                        cursor: Cursor::Start,
                    },
                    status: None,
                },
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
            .create_message(app, message("call.started", Some("evt-1")), None)
            .await
            .unwrap();

        let again = store
            .create_message(app, message("call.started", Some("evt-1")), None)
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
            store.claim_due(claim(now()), 10).await.unwrap().len(),
            1,
            "{name}: one delivery"
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
                    .create_app(AppInput {
                        uid: Some(Uid::parse("uid", &uid).unwrap()),
                        name: "x".into(),
                        rate_limit: None,
                        metadata: Metadata::new(),
                    })
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
            )
            .await
            .unwrap();
        let new = Secret::generate();

        store
            .rotate_endpoint_secret(app, endpoint.id, new.clone(), now() + 3_600_000)
            .await
            .unwrap();
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())))
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
            .rotate_endpoint_secret(app, endpoint.id, newest.clone(), now() - 1)
            .await
            .unwrap();
        let created = store
            .create_message(app, message("call.started", None), Some(claim(now())))
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
async fn releasing_all_leases_makes_in_flight_deliveries_claimable_at_once() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let app = app(store, None).await;
        endpoint(store, app, "http://a.test/1").await;
        store
            .create_message(app, message("call.started", None), Some(claim(now())))
            .await
            .unwrap();
        assert!(
            store.claim_due(claim(now()), 10).await.unwrap().is_empty(),
            "{name}: leased"
        );

        assert_eq!(store.release_all_leases().await.unwrap(), 1, "{name}");

        assert_eq!(
            store.claim_due(claim(now()), 10).await.unwrap().len(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn idempotent_responses_are_saved_once() {
    for (name, backend) in backends().await {
        let store = backend.store.as_ref();
        let first = StoredResponse {
            status: 202,
            body: "{\"a\":1}".into(),
            created_at: now(),
        };
        let second = StoredResponse {
            status: 202,
            body: "{\"a\":2}".into(),
            created_at: now(),
        };

        assert_eq!(
            store
                .save_idempotent_response("s", "k", first.clone())
                .await
                .unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            store
                .save_idempotent_response("s", "k", second)
                .await
                .unwrap(),
            Some(first.clone()),
            "{name}"
        );
        assert_eq!(
            store.idempotent_response("s", "k").await.unwrap(),
            Some(first),
            "{name}"
        );
        assert_eq!(
            store.purge_idempotency_keys(now() + 1).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(
            store.idempotent_response("s", "k").await.unwrap(),
            None,
            "{name}"
        );
    }
}
