//! Durability across a crash: the real binary is killed with SIGKILL while
//! deliveries are in flight or waiting for a retry, restarted on the same
//! data directory, and must deliver every accepted message.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{eventually, sqlite_env, Receiver, Reply, Server};

#[tokio::test]
async fn killing_the_server_with_sigkill_loses_no_accepted_delivery() {
    let data_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    // In flight at the kill: the receiver holds these requests open.
    receiver.always("/hanging", Reply::Delay(Duration::from_secs(60)));
    // Waiting for a retry at the kill: the receiver refuses them for now.
    receiver.always("/failing", Reply::Status(500));
    let client = reqwest::Client::new();
    let first = Server::start(&sqlite_env(data_dir.path()));
    let app = first.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap();
    for (path, filter) in [("/hanging", "call.started"), ("/failing", "call.completed")] {
        first
            .post(
                &client,
                &format!("/app/{app}/endpoint/"),
                json!({"url": receiver.url(path), "filterTypes": [filter]}),
            )
            .await;
    }
    let mut accepted = HashSet::new();
    for n in 0..40 {
        let event = if n % 2 == 0 {
            "call.started"
        } else {
            "call.completed"
        };
        let message = first
            .post(
                &client,
                &format!("/app/{app}/msg/"),
                json!({"eventType": event, "payload": {"n": n}}),
            )
            .await;
        accepted.insert(message["id"].as_str().unwrap().to_owned());
    }
    receiver.wait_for(40, Duration::from_secs(20)).await;

    first.kill();
    let killed_at = Instant::now();
    receiver.always("/hanging", Reply::Status(200));
    receiver.always("/failing", Reply::Status(200));
    let second = Server::start(&sqlite_env(data_dir.path()));

    let delivered = eventually(
        Duration::from_secs(30),
        "every message after the restart",
        || async {
            let delivered: HashSet<String> = receiver
                .requests()
                .into_iter()
                .filter(|r| r.at > killed_at)
                .map(|r| r.header("webhook-id"))
                .collect();
            delivered.is_superset(&accepted).then_some(delivered)
        },
    )
    .await;
    assert_eq!(
        delivered.len(),
        accepted.len(),
        "only accepted messages were sent"
    );
    drop(second);
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_attempt_finish_and_record_its_result() {
    let data_dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.always("/slow", Reply::Delay(Duration::from_millis(1500)));
    let client = reqwest::Client::new();
    let mut server = Server::start(&sqlite_env(data_dir.path()));
    let app = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    server
        .post(
            &client,
            &format!("/app/{app}/endpoint/"),
            json!({"url": receiver.url("/slow")}),
        )
        .await;
    let message = server
        .post(
            &client,
            &format!("/app/{app}/msg/"),
            json!({"eventType": "call.started", "payload": {}}),
        )
        .await;
    let message = message["id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, Duration::from_secs(10)).await;

    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (server, status)
    })
    .await
    .unwrap();
    assert!(
        status.1.success(),
        "a clean exit after SIGTERM: {:?}",
        status.1
    );
    drop(status.0);

    let restarted = Server::start(&sqlite_env(data_dir.path()));
    let attempts = restarted
        .get(&client, &format!("/app/{app}/attempt/msg/{message}/"))
        .await;
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "the in-flight attempt was recorded before exit"
    );
    assert_eq!(attempts[0]["responseStatusCode"], 200);
    let endpoints = restarted
        .get(&client, &format!("/app/{app}/endpoint/"))
        .await;
    let endpoint = endpoints["data"][0]["id"].as_str().unwrap();
    let stats = restarted
        .get(&client, &format!("/app/{app}/endpoint/{endpoint}/stats/"))
        .await;
    assert_eq!(
        (stats["success"].as_u64(), stats["pending"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );
}
