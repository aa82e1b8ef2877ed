//! `/metrics`: Prometheus text format, and counters that move as a scripted
//! flow says they should.

use std::time::Duration;

use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;

use crate::helpers::{
    attempted, eventually, spawn_app, spawn_app_with, sqlite_env, Options, Receiver, Reply, Server,
    TestApp, TOKEN,
};

/// Fetches `/metrics` (no token needed), checks every line is a HELP, TYPE
/// or sample line of the text format, and parses it.
async fn scrape(app: &TestApp) -> Scrape {
    let url = format!("http://{}/metrics", app.address);
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not Prometheus text format: {line:?}"
        );
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of `metric` with exactly these labels (0 when absent: a
/// labelled counter appears at its first increment).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| {
            s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("no summaries here"),
        })
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?} twice");
    found.first().copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_and_count_a_scripted_flow() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::Status(503));

    let before = scrape(&app).await;
    assert_eq!(value(&before, "herald_messages_accepted_total", &[]), 0.0);
    assert_eq!(
        value(
            &before,
            "herald_attempts_total",
            &[("outcome", "success"), ("error_class", "none")]
        ),
        0.0
    );
    assert_eq!(
        value(&before, "herald_queue_deliveries", &[("state", "due")]),
        0.0
    );
    assert_eq!(value(&before, "herald_db_max_connections", &[]), 4.0);
    assert!(
        !before
            .samples
            .iter()
            .any(|s| s.metric.starts_with("herald_endpoint_")),
        "per-endpoint series are off by default"
    );
    assert_eq!(
        before
            .samples
            .iter()
            .find(|s| s.metric == "herald_build_info")
            .map(|s| s
                .labels
                .get("version")
                .unwrap_or("")
                .starts_with("0.1.0 (commit ")),
        Some(true)
    );

    // Two messages to a healthy endpoint and to one that answers 503 to
    // every attempt (the test schedule: 3 retries, so 4 attempts each).
    let tenant = app.create_app("Acme").await;
    let up = app
        .create_endpoint(&tenant, &receiver.url("/up"), None)
        .await;
    app.create_endpoint(&tenant, &receiver.url("/down"), None)
        .await;
    let first = app.send(&tenant, "call.completed", json!({"n": 1})).await;
    let second = app.send(&tenant, "call.completed", json!({"n": 2})).await;
    // An eventId duplicate is refused and not counted as accepted.
    let body = json!({"eventType": "call.completed", "payload": {"n": 3}, "eventId": "once"});
    assert_eq!(
        app.post(&format!("/app/{tenant}/msg/"), body.clone())
            .await
            .0,
        202
    );
    let (status, _) = app.post(&format!("/app/{tenant}/msg/"), body).await;
    assert_eq!(status, 409);
    let third = {
        let (_, page) = app.get(&format!("/app/{tenant}/msg/?limit=1")).await;
        page["data"][0]["id"].as_str().unwrap().to_owned()
    };
    for message in [&first, &second, &third] {
        attempted(&app, &tenant, message, 5).await;
    }
    // A resend by hand to the healthy endpoint.
    let (status, _) = app
        .post(
            &format!("/app/{tenant}/msg/{first}/endpoint/{up}/resend/"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    attempted(&app, &tenant, &first, 6).await;
    // Unknown app: a 404 for the request counter.
    assert_eq!(app.get("/app/app_unknown/").await.0, 404);

    let after = eventually(Duration::from_secs(10), "the queue to drain", || async {
        let scrape = scrape(&app).await;
        // Endpoint health reaches the store within a second.
        let settled = value(&scrape, "herald_queue_deliveries", &[("state", "due")]) == 0.0
            && value(
                &scrape,
                "herald_queue_deliveries",
                &[("state", "scheduled")],
            ) == 0.0
            && value(&scrape, "herald_endpoints", &[("state", "failing")]) == 1.0;
        settled.then_some(scrape)
    })
    .await;
    assert_eq!(value(&after, "herald_messages_accepted_total", &[]), 3.0);
    assert_eq!(
        value(
            &after,
            "herald_attempts_total",
            &[("outcome", "success"), ("error_class", "none")]
        ),
        4.0,
        "3 first attempts at /up and the resend"
    );
    assert_eq!(
        value(
            &after,
            "herald_attempts_total",
            &[("outcome", "failure"), ("error_class", "http_status")]
        ),
        12.0,
        "4 attempts of each message at /down"
    );
    assert_eq!(value(&after, "herald_retries_scheduled_total", &[]), 9.0);
    assert_eq!(value(&after, "herald_deliveries_exhausted_total", &[]), 3.0);
    assert_eq!(value(&after, "herald_manual_attempts_total", &[]), 1.0);
    assert_eq!(
        value(&after, "herald_attempt_duration_seconds_count", &[]),
        16.0
    );
    assert_eq!(
        value(&after, "herald_endpoints", &[("state", "failing")]),
        1.0
    );
    assert_eq!(
        value(&after, "herald_endpoints", &[("state", "disabled")]),
        0.0
    );
    assert!(value(&after, "herald_http_requests_total", &[("class", "2xx")]) >= 10.0);
    assert_eq!(
        value(&after, "herald_http_requests_total", &[("class", "4xx")]),
        2.0,
        "the eventId conflict and the unknown app"
    );
}

/// A request id (the caller's, or a new one) is echoed, and the delivery the
/// request starts logs it: JSON log lines of a real `herald serve`.
#[tokio::test]
async fn request_ids_are_echoed_and_carried_into_delivery_logs() {
    let receiver = Receiver::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = sqlite_env(data_dir.path());
    env.push((
        "HERALD_LOG",
        "warn,herald=info,herald_dispatch=debug".into(),
    ));
    let server = Server::start(&env);
    let client = reqwest::Client::new();
    let tenant = server.post(&client, "/app/", json!({"name": "Acme"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            &client,
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/hook")}),
        )
        .await;

    let send = |request_id: Option<&'static str>| {
        let mut request = client
            .post(format!(
                "http://{}/api/v1/app/{tenant}/msg/",
                server.address
            ))
            .bearer_auth(TOKEN)
            .json(&json!({"eventType": "call.completed", "payload": {"callId": "c1"}}));
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let given = send(Some("crm-sync-4711")).await.unwrap();
    assert_eq!(given.status(), 202);
    assert_eq!(given.headers()["x-request-id"], "crm-sync-4711");
    let given_message = given.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = send(None).await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        made_id.starts_with("req_") && made_id.len() == 30,
        "{made_id}"
    );
    let made_message = made.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver.wait_for(2, Duration::from_secs(10)).await;

    // Each delivery's attempt line names its own request.
    for (message, request_id) in [
        (&given_message, "crm-sync-4711"),
        (&made_message, made_id.as_str()),
    ] {
        let line = eventually(Duration::from_secs(5), "the attempt's log line", || {
            let line = server
                .log_lines()
                .into_iter()
                .find(|line| line.contains("\"attempt\"") && line.contains(message.as_str()));
            async move { line }
        })
        .await;
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        assert_eq!(parsed["span"]["request_id"], request_id, "{line}");
        assert_eq!(parsed["fields"]["next"], "done", "{line}");
    }
    server.terminate();
}

#[tokio::test]
async fn per_endpoint_series_follow_each_endpoints_failures_when_enabled() {
    let app = spawn_app_with(Options {
        metrics_per_endpoint: true,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::Status(503));
    let tenant = app.create_app("Acme").await;
    let up = app
        .create_endpoint(&tenant, &receiver.url("/up"), None)
        .await;
    let down = app
        .create_endpoint(&tenant, &receiver.url("/down"), None)
        .await;
    let message = app.send(&tenant, "call.completed", json!({"n": 1})).await;
    attempted(&app, &tenant, &message, 5).await;
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &format!("/app/{tenant}/endpoint/{up}/"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);

    let down_labels = [("app_id", tenant.as_str()), ("endpoint_id", down.as_str())];
    let up_labels = [("app_id", tenant.as_str()), ("endpoint_id", up.as_str())];
    let scrape = eventually(
        Duration::from_secs(10),
        "the per-endpoint series",
        || async {
            let scrape = scrape(&app).await;
            (value(
                &scrape,
                "herald_endpoint_consecutive_failures",
                &down_labels,
            ) == 4.0
                && value(&scrape, "herald_endpoint_disabled", &up_labels) == 1.0)
                .then_some(scrape)
        },
    )
    .await;
    assert_eq!(
        value(&scrape, "herald_endpoint_consecutive_failures", &up_labels),
        0.0
    );
    assert_eq!(
        value(&scrape, "herald_endpoint_disabled", &down_labels),
        0.0
    );
    // The built-in operations app's endpoints are none; only these two.
    let series = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "herald_endpoint_disabled")
        .count();
    assert_eq!(series, 2);
}

/// Herald's own failures (class `local`) are not the receiver's and keep
/// their attempts; they pause the dispatcher instead of being retried in a
/// loop. The source address here cannot be bound (TEST-NET-1 is not this
/// machine's), so every send fails before any connect.
#[tokio::test]
async fn herald_s_own_failures_pause_claims_and_one_probe_tests_the_water() {
    let app = spawn_app_with(Options {
        network: herald_dispatch::Network {
            source_address: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    for n in 0..30 {
        let (status, body) = app
            .post(
                &format!("/app/{tenant}/msg/"),
                json!({"eventType": "call.completed", "payload": {"n": n}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let local = &[("outcome", "failure"), ("error_class", "local")];

    // The first failure paused claims; the probe sent after the first pause
    // failed too and doubled it.
    let probed = eventually(Duration::from_secs(30), "the probe's failure", || async {
        let scrape = scrape(&app).await;
        (value(&scrape, "herald_dispatch_pauses_total", &[]) == 2.0).then_some(scrape)
    })
    .await;
    assert_eq!(value(&probed, "herald_dispatch_paused", &[]), 1.0);
    let failed = value(&probed, "herald_attempts_total", local);
    // At most one attempt per message before the pause (those already
    // out), then one probe: with retries every 2 s the 30 would have come
    // round again.
    assert!(
        (2.0..=31.0).contains(&failed),
        "{failed} local failures after the first pause"
    );
    // The second pause (4 s) holds: nothing more is attempted during it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = scrape(&app).await;
    assert_eq!(value(&held, "herald_attempts_total", local), failed);
    assert_eq!(value(&held, "herald_dispatch_pauses_total", &[]), 2.0);
    // None of it is charged to the endpoint, and nothing was lost.
    assert_eq!(value(&held, "herald_retries_scheduled_total", &[]), failed);
    assert_eq!(value(&held, "herald_deliveries_exhausted_total", &[]), 0.0);
    assert!(receiver.requests().is_empty());
    let (_, messages) = app.get(&format!("/app/{tenant}/msg/?limit=50")).await;
    assert_eq!(messages["data"].as_array().unwrap().len(), 30);
}

#[tokio::test]
async fn deliveries_an_endpoint_has_no_room_for_wait_in_the_database_not_given_back() {
    // Two per endpoint: two in flight and two waiting fill the slow
    // endpoint's share here. The other sixteen of twenty messages are left
    // due in the database (not leased and given back), and each claim takes
    // no more of them than the endpoint has room for: nothing is given
    // back, and every message arrives once.
    let app = spawn_app_with(Options {
        max_in_flight: 64,
        max_in_flight_per_endpoint: 2,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // Slower than a quick endpoint's answers: it may not borrow slots.
    receiver.always("/slow", Reply::Delay(Duration::from_millis(400)));
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/slow"), None)
        .await;
    for n in 0..20 {
        app.send(&tenant, "call.started", json!({"n": n})).await;
    }

    let arrived = receiver.wait_for(20, Duration::from_secs(30)).await;
    let mut seen: Vec<_> = arrived
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "twenty messages, each once");
    let metrics = scrape(&app).await;
    assert_eq!(
        value(&metrics, "herald_deliveries_given_back_total", &[]),
        0.0
    );
    assert!(
        value(&metrics, "herald_deliveries_claimed_total", &[]) >= 16.0,
        "the deliveries without room went through claims"
    );
}
