//! The `herald-verify` receiver crate against real deliveries: an axum
//! receiver whose handler takes `Verified` accepts Herald's requests (HMAC
//! and Ed25519 endpoints, and across a secret rotation) and refuses a
//! request signed with another key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::post;
use herald_verify::{Verified, Webhook};
use serde_json::json;

use crate::helpers::{eventually, spawn_app};

#[derive(Clone)]
struct ReceiverState {
    webhook: Webhook,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FromRef<ReceiverState> for Webhook {
    fn from_ref(state: &ReceiverState) -> Webhook {
        state.webhook.clone()
    }
}

/// An axum app on loopback that records the ids of verified webhooks.
async fn verifying_receiver(webhook: Webhook) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = ReceiverState {
        webhook,
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |axum::extract::State(state): axum::extract::State<ReceiverState>,
                 verified: Verified| async move {
                    state.seen.lock().unwrap().push(verified.id);
                    "ok"
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn the_receiver_crate_accepts_herald_deliveries_and_refuses_other_keys() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;

    // An HMAC endpoint whose receiver knows its secret — after a rotation too.
    let (placeholder_url, _) = verifying_receiver(Webhook::new("whsec_AAAA").unwrap()).await;
    let endpoint = app.create_endpoint(&tenant, &placeholder_url, None).await;
    let secret = app.secret(&tenant, &endpoint).await;
    let (url, seen) = verifying_receiver(Webhook::new(&secret).unwrap()).await;
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/app/{tenant}/endpoint/{endpoint}/"),
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(status, 200);
    let first = app.send(&tenant, "call.completed", json!({"n": 1})).await;
    let (status, _) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/secret/rotate/"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    // Signed with the new and (in its grace period) the old secret.
    let second = app.send(&tenant, "call.completed", json!({"n": 2})).await;
    eventually(Duration::from_secs(10), "both verified", || {
        let seen = seen.lock().unwrap().clone();
        let (first, second) = (first.clone(), second.clone());
        async move { (seen.contains(&first) && seen.contains(&second)).then_some(()) }
    })
    .await;

    // An Ed25519 endpoint: the receiver holds only the public key.
    let (status, created) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": placeholder_url, "signing": "ed25519", "filterTypes": ["contact.created"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let ed = created["id"].as_str().unwrap().to_owned();
    let (_, secret) = app
        .get(&format!("/app/{tenant}/endpoint/{ed}/secret/"))
        .await;
    let public = secret["publicKey"].as_str().unwrap();
    let (ed_url, ed_seen) = verifying_receiver(Webhook::new(public).unwrap()).await;
    app.request(
        reqwest::Method::PATCH,
        &format!("/app/{tenant}/endpoint/{ed}/"),
        Some(json!({"url": ed_url})),
    )
    .await;
    let third = app.send(&tenant, "contact.created", json!({"n": 3})).await;
    eventually(Duration::from_secs(10), "the v1a delivery verified", || {
        let seen = ed_seen.lock().unwrap().clone();
        let third = third.clone();
        async move { seen.contains(&third).then_some(()) }
    })
    .await;

    // A receiver with another key answers 401, and Herald records it.
    let (wrong_url, wrong_seen) =
        verifying_receiver(Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()).await;
    let wrong = app
        .create_endpoint(&tenant, &wrong_url, Some(&["call.started"]))
        .await;
    let fourth = app.send(&tenant, "call.started", json!({"n": 4})).await;
    let attempt = eventually(Duration::from_secs(10), "the refused attempt", || async {
        app.attempts_of(&tenant, &fourth)
            .await
            .into_iter()
            .find(|a| a["endpointId"] == wrong.as_str())
    })
    .await;
    assert_eq!(attempt["responseStatusCode"], 401, "{attempt}");
    assert_eq!(attempt["response"], "no signature matches");
    assert!(wrong_seen.lock().unwrap().is_empty());
}
