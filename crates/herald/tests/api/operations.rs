//! Operating webhooks: test events, and what operators do when deliveries
//! fail.

use std::time::Duration;

use serde_json::json;

use herald_domain::{catalog, Secret};

use crate::helpers::{
    attempted, eventually, spawn_app, spawn_app_with, verifies, Options, Receiver, Reply, SmtpSink,
};

/// Sends a test event and waits for its attempt: the answer of `?wait=true`.
async fn test_event(
    app: &crate::helpers::TestApp,
    tenant: &str,
    endpoint: &str,
    event_type: &str,
) -> serde_json::Value {
    let (status, body) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/send-example/?wait=true"),
            json!({ "eventType": event_type }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn catalog_example(name: &str) -> serde_json::Value {
    catalog::builtin()
        .into_iter()
        .find(|entry| entry.name == name)
        .unwrap()
        .example
}

#[tokio::test]
async fn a_test_event_reaches_only_the_chosen_endpoint_and_waiting_returns_the_answer() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    // Subscribed to something else: a test event goes to it all the same.
    let chosen = app
        .create_endpoint(
            &tenant,
            &receiver.url("/chosen"),
            Some(&["contact.created"]),
        )
        .await;
    app.create_endpoint(&tenant, &receiver.url("/bystander"), None)
        .await;
    receiver.script("/chosen", &[Reply::Body(201, "{\"seen\":true}")]);

    let body = test_event(&app, &tenant, &chosen, "call.completed").await;

    let attempt = &body["attempt"];
    assert_eq!(attempt["responseStatusCode"], 201, "{body}");
    assert_eq!(attempt["response"], "{\"seen\":true}");
    assert_eq!(attempt["status"], 0, "succeeded");
    assert_eq!(
        attempt["triggerType"], 1,
        "a test event is a manual attempt"
    );
    assert_eq!(attempt["endpointId"], chosen.as_str());
    assert!(attempt["responseDurationMs"].is_u64());
    assert_eq!(
        body["message"]["payload"],
        catalog_example("call.completed")
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "nobody else got it");
    assert_eq!(requests[0].path, "/chosen");
    assert_eq!(
        requests[0].json()["data"],
        catalog_example("call.completed")
    );
    let secret = Secret::parse(&app.secret(&tenant, &chosen).await).unwrap();
    assert!(verifies(&requests[0], &secret));
}

#[tokio::test]
async fn a_failing_test_event_is_attempted_once_and_reports_the_failure() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/broken"), None)
        .await;
    receiver.always("/broken", Reply::Body(500, "database down"));

    let body = test_event(&app, &tenant, &endpoint, "contact.created").await;

    assert_eq!(body["attempt"]["responseStatusCode"], 500);
    assert_eq!(body["attempt"]["response"], "database down");
    assert_eq!(body["attempt"]["errorClass"], "http_status");
    // The retry schedule of these tests is 100 ms apart: a retry would
    // have arrived well within this pause.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.requests().len(), 1, "no retries of a test event");
    let message = body["message"]["id"].as_str().unwrap();
    let attempts = app.attempts_of(&tenant, message).await;
    assert_eq!(attempts.len(), 1);
}

#[tokio::test]
async fn a_test_event_without_waiting_is_accepted_and_bad_requests_name_the_field() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/send-example/");

    let (status, body) = app
        .post(&path, json!({"eventType": "campaign.paused"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["eventType"], "campaign.paused");
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    let (status, body) = app.post(&path, json!({"eventType": "no.such"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("validation_error")),
        "{body}"
    );
    assert!(
        crate::helpers::detail_text(&body).contains("eventType"),
        "{body}"
    );
    let (status, body) = app
        .post(
            &path,
            json!({"eventType": "call.started", "exampleIndex": 3}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        crate::helpers::detail_text(&body).contains("exampleIndex"),
        "{body}"
    );
    let (status, _) = app
        .post(
            &format!("/app/{tenant}/endpoint/ep_01H0000000000000000000000/send-example/"),
            json!({"eventType": "call.started"}),
        )
        .await;
    assert_eq!(status, 404);
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn recovery_resends_exactly_the_failed_deliveries_in_the_window_once_each() {
    let app = spawn_app().await; // three 100 ms retries: four attempts, then failed
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/crm"), None)
        .await;
    let pause = || tokio::time::sleep(Duration::from_millis(20));
    let payload = json!({"callId": "call_1"});
    receiver.always("/crm", Reply::Status(500));
    let before = app.send(&tenant, "call.started", payload.clone()).await;
    pause().await;
    let since = rfc3339_now();
    pause().await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(app.send(&tenant, "call.started", payload.clone()).await);
    }
    // No retry may land while the receiver briefly answers 200 below.
    for message in failed.iter().chain([&before]) {
        attempted(&app, &tenant, message, 4).await;
    }
    receiver.always("/crm", Reply::Status(200));
    let delivered = app.send(&tenant, "call.started", payload.clone()).await;
    attempted(&app, &tenant, &delivered, 1).await;
    receiver.always("/crm", Reply::Status(500));
    pause().await;
    let until = rfc3339_now();
    pause().await;
    let after = app.send(&tenant, "call.started", payload.clone()).await;
    for message in failed.iter().chain([&before, &after]) {
        attempted(&app, &tenant, message, 4).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.always("/crm", Reply::Status(200));
    let seen_before = receiver.requests().len();

    let (status, task) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/recover/"),
            json!({"since": since, "until": until}),
        )
        .await;

    assert_eq!(status, 202, "{task}");
    assert_eq!(task["task"], "endpoint.recover");
    let id = task["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("qtask_"), "{task}");
    let finished = eventually(
        Duration::from_secs(10),
        "the recovery to finish",
        || async {
            let (_, task) = app.get(&format!("/background-task/{id}/")).await;
            (task["status"] == "finished").then_some(task)
        },
    )
    .await;
    assert_eq!(finished["data"]["recovered"], 3, "{finished}");
    assert_eq!(finished["data"]["endpointId"], endpoint.as_str());
    receiver
        .wait_for(seen_before + 3, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resent: Vec<String> = receiver.requests()[seen_before..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    resent.sort();
    failed.sort();
    assert_eq!(resent, failed, "each failed delivery in the window, once");
    for message in &failed {
        let attempts = app.attempts_of(&tenant, message).await;
        let last = attempts.last().unwrap();
        assert_eq!(attempts.len(), 5, "{message}");
        assert_eq!(
            (last["triggerType"].as_i64(), last["status"].as_i64()),
            (Some(1), Some(0))
        );
    }
}

#[tokio::test]
async fn recovery_rejects_a_bad_window_and_unknown_tasks() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, "http://127.0.0.1:9/hook", None)
        .await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/recover/");

    let (status, body) = app
        .post(
            &path,
            json!({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        crate::helpers::detail_text(&body).starts_with("until"),
        "{body}"
    );
    let (status, body) = app.post(&path, json!({"since": "yesterday"})).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = app
        .get("/background-task/qtask_01H00000000000000000000000/")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn health_matches_a_scripted_sequence_of_answers() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/h"), None)
        .await;
    let slow = Reply::Delay(Duration::from_millis(300));
    let mut script = vec![Reply::Status(200); 8];
    script.extend([slow, slow, Reply::Status(500), Reply::Status(500)]);
    script.extend([
        Reply::Status(200),
        Reply::Status(503),
        Reply::Status(503),
        Reply::Status(503),
    ]);
    receiver.script("/h", &script);
    // Test events: one attempt each, no retries, in this order.
    for _ in 0..script.len() {
        test_event(&app, &tenant, &endpoint, "call.started").await;
    }
    let (_, log) = app
        .get(&format!(
            "/app/{tenant}/attempt/endpoint/{endpoint}/?limit=50"
        ))
        .await;
    let log = log["data"].as_array().unwrap().clone(); // newest first
    assert_eq!(log.len(), 16);
    let total_ms: u64 = log
        .iter()
        .map(|a| a["responseDurationMs"].as_u64().unwrap())
        .sum();

    let health = eventually(Duration::from_secs(10), "the health counts", || async {
        let (status, health) = app
            .get(&format!("/app/{tenant}/endpoint/{endpoint}/health/"))
            .await;
        assert_eq!(status, 200, "{health}");
        (health["windows"]["1h"]["attempts"] == 16).then_some(health)
    })
    .await;

    for window in ["1h", "24h", "7d"] {
        let w = &health["windows"][window];
        assert_eq!(
            (w["succeeded"].as_u64(), w["failed"].as_u64()),
            (Some(11), Some(5)),
            "{w}"
        );
        assert_eq!(w["successRate"].as_f64(), Some(11.0 / 16.0), "{w}");
        assert_eq!(
            w["avgResponseMs"].as_f64(),
            Some(total_ms as f64 / 16.0),
            "{w}"
        );
        // The 16th of 16 is a 300 ms answer: the bin up to 500 ms.
        assert_eq!(w["p95ResponseMs"].as_u64(), Some(500), "{w}");
    }
    assert_eq!(health["consecutiveFailures"], 3);
    assert_eq!(health["failingSince"], log[2]["timestamp"], "the first 503");
    assert_eq!(health["lastFailureAt"], log[0]["timestamp"]);
    assert_eq!(health["lastSuccessAt"], log[3]["timestamp"]);
    let statuses: Vec<i64> = health["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    let mut expected = vec![2, 2, 2, 0, 2, 2, 0, 0];
    expected.extend([0; 8]);
    assert_eq!(statuses, expected, "newest first");
    assert_eq!(health["disabled"], false);
}

#[tokio::test]
async fn an_endpoints_own_retry_policy_decides_its_retries() {
    let app = spawn_app().await; // server schedule: three 100 ms retries
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let policy = json!({"type": "exponential", "initialDelay": "150ms", "factor": 2,
                        "maxDelay": "300ms", "maxAttempts": 3});
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/flaky"), "retryPolicy": policy}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["retryPolicy"]["type"], "exponential");
    assert_eq!(endpoint["retryPolicy"]["maxAttempts"], 3);
    receiver.always("/flaky", Reply::Status(500));

    app.send(&tenant, "call.started", json!({"n": 1})).await;

    let requests = receiver.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let requests_after = receiver.requests();
    assert_eq!(
        requests_after.len(),
        3,
        "three attempts in all, not the server's four"
    );
    // Never sooner than the policy: 150 ms, then 300 ms, less 20 % jitter.
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(120), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(240), "{gaps:?}");

    let id = endpoint["id"].as_str().unwrap();
    let path = format!("/app/{tenant}/endpoint/{id}/");
    let (status, cleared) = app
        .request(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"retryPolicy": null})),
        )
        .await;
    assert_eq!((status, &cleared["retryPolicy"]), (200, &json!(null)));
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &path,
            Some(
                json!({"retryPolicy": {"type": "exponential", "initialDelay": "1s",
                                        "maxDelay": "1h", "maxAttempts": 0}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        crate::helpers::detail_text(&body).starts_with("retryPolicy.maxAttempts"),
        "{body}"
    );
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_disabled_and_comes_back_with_one_call() {
    let app = spawn_app_with(Options {
        auto_disable: Some(herald_store::AutoDisable {
            after: 1500, // after all four attempts (100 ms apart) have failed
            min_attempts: 3,
        }),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/down"), None)
        .await;
    receiver.always("/down", Reply::Status(500));
    let since = rfc3339_now();
    let message = app.send(&tenant, "call.started", json!({"n": 1})).await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/");
    attempted(&app, &tenant, &message, 4).await;
    // The rule is checked as attempts are made: one more, once the run is
    // old enough, disables it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let trigger = app.send(&tenant, "call.started", json!({"n": 2})).await;

    let disabled = eventually(
        Duration::from_secs(15),
        "the endpoint to be disabled",
        || async {
            let (_, endpoint) = app.get(&path).await;
            (endpoint["disabled"] == true).then_some(endpoint)
        },
    )
    .await;

    assert_eq!(disabled["disabledReason"], "failing", "{disabled}");
    assert!(disabled["disabledAt"].is_string());
    assert_eq!(app.attempts_of(&tenant, &message).await.len(), 4);
    // New messages skip it while disabled.
    let skipped = app.send(&tenant, "call.started", json!({"n": 3})).await;
    let seen_before = receiver.requests().len();

    receiver.always("/down", Reply::Status(200));
    let (status, enabled) = app
        .request(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(
        (enabled["disabled"].as_bool(), &enabled["disabledReason"]),
        (Some(false), &json!(null))
    );
    let (_, health) = app.get(&format!("{path}health/")).await;
    assert_eq!(health["consecutiveFailures"], 0, "{health}");
    let (status, _) = app
        .post(&format!("{path}recover/"), json!({"since": since}))
        .await;
    assert_eq!(status, 202);
    // The failed delivery, the one still pending when it was disabled, and
    // the message it missed while disabled — each once.
    let resent = receiver
        .wait_for(seen_before + 3, Duration::from_secs(10))
        .await;
    let mut ids: Vec<String> = resent[seen_before..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    ids.sort();
    let mut expected = vec![message.clone(), trigger.clone(), skipped.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), seen_before + 3, "each once");
}

#[tokio::test]
async fn operators_are_notified_once_per_episode_with_signed_events() {
    let receiver = Receiver::start().await;
    let smtp = SmtpSink::start().await;
    let app = spawn_app_with(Options {
        email: Some(herald_dispatch::EmailConfig {
            smtp_url: smtp.url(),
            from: "herald@example.com".into(),
            to: vec!["oncall@example.com".into()],
        }),
        auto_disable: Some(herald_store::AutoDisable {
            after: 1500, // after all four attempts (100 ms apart) have failed
            min_attempts: 3,
        }),
        failing_after: 3,
        operator_webhook_url: Some(receiver.url("/ops")),
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/down"), None)
        .await;
    receiver.always("/down", Reply::Status(500));
    let since = rfc3339_now();
    for n in 0..2 {
        let message = app.send(&tenant, "call.completed", json!({"n": n})).await;
        attempted(&app, &tenant, &message, 4).await;
    }
    // The auto-disable rule is checked as attempts are made.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    app.send(&tenant, "call.completed", json!({"n": 2})).await;
    let ops_events = || {
        receiver
            .requests_to("/ops")
            .into_iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(15),
        "the endpoint to be disabled and reported",
        || async {
            ops_events()
                .contains(&"endpoint.disabled".to_owned())
                .then_some(())
        },
    )
    .await;

    // Back up: re-enable, recover, and the recovery is reported too.
    receiver.always("/down", Reply::Status(200));
    let path = format!("/app/{tenant}/endpoint/{endpoint}/");
    app.request(
        reqwest::Method::PATCH,
        &path,
        Some(json!({"disabled": false})),
    )
    .await;
    app.post(&format!("{path}recover/"), json!({"since": since}))
        .await;
    eventually(
        Duration::from_secs(15),
        "the recovery to be reported",
        || async {
            ops_events()
                .contains(&"message.attempt.recovered".to_owned())
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // one more flush

    let mut seen = ops_events();
    seen.sort();
    assert_eq!(
        seen,
        [
            "endpoint.disabled",
            "endpoint.failing",
            "message.attempt.exhausted",
            "message.attempt.recovered"
        ],
        "each once"
    );
    let (_, operators) = app.get("/app/herald-operations/endpoint/").await;
    let operator = operators["data"][0]["id"].as_str().unwrap().to_owned();
    let secret = Secret::parse(&app.secret("herald-operations", &operator).await).unwrap();
    for request in receiver.requests_to("/ops") {
        assert!(verifies(&request, &secret));
        let data = &request.json()["data"];
        assert_eq!(data["appId"], tenant.as_str(), "{data}");
        assert_eq!(data["endpointId"], endpoint.as_str(), "{data}");
    }
    // …and by e-mail, once each too.
    let mails = eventually(Duration::from_secs(10), "four e-mails", || async {
        let mails = smtp.mails();
        (mails.len() >= 4).then_some(mails)
    })
    .await;
    let mut subjects: Vec<String> = mails
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject: "))
                .map(str::to_owned)
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects.len(), 4, "{mails:?}");
    for (subject, event) in subjects.iter().zip(seen.iter()) {
        assert!(subject.contains(event.as_str()), "{subject}");
        assert!(subject.contains(endpoint.as_str()), "{subject}");
    }
    assert!(mails.iter().all(|m| m.contains("To: oncall@example.com")));
    let failing = receiver
        .requests_to("/ops")
        .into_iter()
        .find(|r| r.json()["type"] == "endpoint.failing")
        .unwrap();
    assert!(
        failing.json()["data"]["consecutiveFailures"]
            .as_u64()
            .unwrap()
            >= 3
    );
}

#[tokio::test]
async fn a_rate_limit_spaces_a_burst_out_without_dropping_it() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/slow-lane"), "rateLimit": 5}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    for n in 0..200 {
        app.send(&tenant, "call.started", json!({"n": n})).await;
    }

    let first = receiver.wait_for(1, Duration::from_secs(10)).await[0].at;
    tokio::time::sleep_until((first + Duration::from_secs(10)).into()).await;
    let in_ten_seconds = receiver
        .requests()
        .iter()
        .filter(|r| r.at < first + Duration::from_secs(10))
        .count();

    // 5 per second for 10 seconds, within 10 %.
    assert!(
        (45..=55).contains(&in_ten_seconds),
        "{in_ten_seconds} in 10 s"
    );
    // The rest waits its turn: nothing failed or was dropped.
    let id = endpoint["id"].as_str().unwrap();
    let (_, stats) = app
        .get(&format!("/app/{tenant}/endpoint/{id}/stats/"))
        .await;
    let total: i64 = ["success", "pending", "sending"]
        .iter()
        .map(|k| stats[k].as_i64().unwrap())
        .sum();
    assert_eq!((total, stats["fail"].as_i64()), (200, Some(0)), "{stats}");
}

#[tokio::test]
async fn a_strictly_ordered_endpoint_gets_the_next_message_only_after_the_previous_one() {
    let app = spawn_app().await; // retries 100 ms apart
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/ledger"), "strictOrdering": true}),
        )
        .await;
    assert_eq!(
        (status, &endpoint["strictOrdering"]),
        (201, &json!(true)),
        "{endpoint}"
    );
    // Message 2 fails twice, then succeeds.
    receiver.script(
        "/ledger",
        &[Reply::Status(200), Reply::Status(500), Reply::Status(500)],
    );
    let mut messages = Vec::new();
    for n in 1..=10 {
        messages.push(app.send(&tenant, "call.started", json!({"n": n})).await);
    }

    let arrived: Vec<String> = receiver
        .wait_for(12, Duration::from_secs(20))
        .await
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut expected = vec![messages[0].clone(); 1];
    expected.extend([
        messages[1].clone(),
        messages[1].clone(),
        messages[1].clone(),
    ]);
    expected.extend(messages[2..].iter().cloned());
    assert_eq!(arrived, expected, "in order, 3..10 only after 2 succeeded");
    assert_eq!(receiver.requests().len(), 13 - 1, "nothing twice");
}

#[tokio::test]
async fn a_success_rate_drop_is_reported_once_per_episode() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(Options {
        success_rate: Some(herald_store::RateRule {
            threshold: 0.8,
            min_attempts: 10,
        }),
        operator_webhook_url: Some(receiver.url("/ops")),
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/crm"), None)
        .await;
    let test_events = async |status: u16, count: usize| {
        receiver.always("/crm", Reply::Status(status));
        for _ in 0..count {
            test_event(&app, &tenant, &endpoint, "call.started").await;
        }
    };
    let drops = || {
        receiver
            .requests_to("/ops")
            .into_iter()
            .map(|r| r.json())
            .filter(|event| event["type"] == "endpoint.success_rate_dropped")
            .collect::<Vec<_>>()
    };
    let flush = || tokio::time::sleep(Duration::from_millis(1500));

    test_events(200, 5).await;
    test_events(500, 5).await; // 5 of 10: below 0.8
    let first = eventually(
        Duration::from_secs(10),
        "the drop to be reported",
        || async { drops().first().cloned() },
    )
    .await;
    test_events(500, 2).await; // still below: the same episode
    flush().await;
    assert_eq!(drops().len(), 1, "once per episode");
    assert_eq!(first["data"]["endpointId"], endpoint.as_str());
    assert_eq!(first["data"]["attempts"], 10);
    assert_eq!(first["data"]["successRate"], 0.5);

    test_events(200, 40).await; // 45 of 52: recovered
    flush().await;
    test_events(500, 20).await; // 45 of 72: a new episode
    eventually(Duration::from_secs(10), "the second drop", || async {
        (drops().len() == 2).then_some(())
    })
    .await;
    flush().await;
    assert_eq!(drops().len(), 2);
}
