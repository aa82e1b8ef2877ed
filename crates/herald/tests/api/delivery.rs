//! Delivery behaviour: fan-out, signatures, retries, error classes,
//! de-duplication, idempotency and secret rotation.

use std::time::Duration;

use serde_json::{json, Value};

use herald_domain::Secret;

use crate::helpers::{eventually, spawn_app, spawn_app_with, verifies, Options, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_message_reaches_exactly_the_matching_endpoints_with_valid_signatures() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let exact = app
        .create_endpoint(&tenant, &receiver.url("/exact"), Some(&["call.completed"]))
        .await;
    let group = app
        .create_endpoint(&tenant, &receiver.url("/group"), Some(&["call.*"]))
        .await;
    app.create_endpoint(&tenant, &receiver.url("/other"), Some(&["contact.created"]))
        .await;

    let message = app
        .send(
            &tenant,
            "call.completed",
            json!({"callId": "call_1", "durationSeconds": 42}),
        )
        .await;

    let requests = receiver.wait_for(2, WAIT).await;
    let mut paths: Vec<_> = requests.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/exact", "/group"],
        "only the two matching endpoints"
    );
    for (path, endpoint) in [("/exact", &exact), ("/group", &group)] {
        let request = &receiver.requests_to(path)[0];
        let secret = Secret::parse(&app.secret(&tenant, endpoint).await).unwrap();
        assert!(verifies(request, &secret), "{path}: signature must verify");
        assert_eq!(request.header("webhook-id"), message);
        assert_eq!(request.header("svix-id"), message);
        assert_eq!(
            request.header("svix-signature"),
            request.header("webhook-signature")
        );
        assert_eq!(request.header("content-type"), "application/json");
        let body = request.json();
        assert_eq!(body["type"], "call.completed");
        assert_eq!(body["data"]["callId"], "call_1");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        let other = Secret::generate();
        assert!(
            !verifies(request, &other),
            "a different secret must not verify"
        );
    }
    // Nothing reaches the non-matching endpoint, even after its chance.
    app.send(&tenant, "contact.created", json!({"contactId": "c1"}))
        .await;
    receiver.wait_for(3, WAIT).await;
    assert_eq!(
        receiver.requests_to("/other").len(),
        1,
        "contact.created goes to /other only"
    );
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn a_500_response_is_retried_until_it_succeeds() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", &[Reply::Status(500), Reply::Status(500)]);
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/flaky"), None)
        .await;

    let message = app
        .send(&tenant, "call.started", json!({"callId": "c"}))
        .await;

    let requests = receiver.wait_for(3, WAIT).await;
    assert!(
        requests.iter().all(|r| r.header("webhook-id") == message),
        "same id on retries"
    );
    let attempts = eventually(WAIT, "three attempts in the log", || async {
        let attempts = app.attempts_of(&tenant, &message).await;
        (attempts.len() == 3).then_some(attempts)
    })
    .await;
    let codes: Vec<_> = attempts
        .iter()
        .map(|a| a["responseStatusCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    assert_eq!(attempts[0]["errorClass"], "http_status");
    assert_eq!(attempts[2]["status"], 0, "the last attempt succeeded");
    assert_eq!(receiver.requests().len(), 3, "no attempt after the success");
}

#[tokio::test]
async fn a_receiver_that_always_fails_ends_failed_after_the_schedule() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::Status(503));
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/down"), None)
        .await;

    let message = app
        .send(&tenant, "call.failed", json!({"callId": "c"}))
        .await;

    // Schedule 100ms,100ms,100ms: four attempts in all, then `failed`.
    eventually(WAIT, "the delivery to end failed", || async {
        let (_, stats) = app
            .get(&format!("/app/{tenant}/endpoint/{endpoint}/stats/"))
            .await;
        (stats["fail"] == 1).then_some(())
    })
    .await;
    let attempts = app.attempts_of(&tenant, &message).await;
    assert_eq!(attempts.len(), 4);
    assert!(attempts
        .iter()
        .all(|a| a["status"] == 2 && a["responseStatusCode"] == 503));
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_recorded_with_their_error_class() {
    let app = spawn_app_with(Options {
        retry_schedule: "",
        request_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always("/slow", Reply::Delay(Duration::from_secs(5)));
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/slow"), Some(&["call.started"]))
        .await;
    app.create_endpoint(
        &tenant,
        &format!("http://{closed}/hook"),
        Some(&["call.failed"]),
    )
    .await;

    let slow = app.send(&tenant, "call.started", json!({})).await;
    let refused = app.send(&tenant, "call.failed", json!({})).await;

    for (message, class) in [(slow, "timeout"), (refused, "connect")] {
        let attempt = eventually(WAIT, "the attempt to be logged", || async {
            app.attempts_of(&tenant, &message).await.into_iter().next()
        })
        .await;
        assert_eq!(attempt["errorClass"], class, "{attempt}");
        assert_eq!(attempt["responseStatusCode"], 0);
        assert_eq!(attempt["status"], 2);
    }
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let app = spawn_app_with(Options {
        retry_schedule: "",
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always("/moved", Reply::Status(302));
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/moved"), None)
        .await;

    let message = app.send(&tenant, "call.started", json!({})).await;

    let attempt = eventually(WAIT, "the attempt", || async {
        app.attempts_of(&tenant, &message).await.into_iter().next()
    })
    .await;
    assert_eq!(attempt["responseStatusCode"], 302);
    assert_eq!(attempt["errorClass"], "http_status");
}

#[tokio::test]
async fn the_same_event_id_twice_creates_one_message() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let body = json!({"eventType": "call.completed", "payload": {"n": 1}, "eventId": "evt-42"});

    let (first, created) = app.post(&format!("/app/{tenant}/msg/"), body.clone()).await;
    let (second, error) = app.post(&format!("/app/{tenant}/msg/"), body).await;

    assert_eq!(first, 202);
    assert_eq!(second, 409, "{error}");
    assert_eq!(error["code"], "conflict");
    let (_, list) = app.get(&format!("/app/{tenant}/msg/")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, by_event_id) = app.get(&format!("/app/{tenant}/msg/evt-42/")).await;
    assert_eq!(status, 200);
    assert_eq!(by_event_id["id"], created["id"]);
    receiver.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn the_same_idempotency_key_twice_returns_the_same_response() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let send = || {
        app.client
            .post(app.url(&format!("/app/{tenant}/msg/")))
            .bearer_auth(crate::helpers::TOKEN)
            .header("idempotency-key", "key-1")
            .json(&json!({"eventType": "call.completed", "payload": {"n": 1}}))
            .send()
    };

    let first = send().await.unwrap();
    let (first_status, first_body) = (first.status(), first.text().await.unwrap());
    let second = send().await.unwrap();
    let (second_status, second_body) = (second.status(), second.text().await.unwrap());

    assert_eq!(first_status, 202);
    assert_eq!(second_status, 202);
    assert_eq!(first_body, second_body, "the saved response is replayed");
    let (_, list) = app.get(&format!("/app/{tenant}/msg/")).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one message was created"
    );
}

#[tokio::test]
async fn after_rotation_deliveries_carry_two_valid_signatures() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let old = Secret::parse(&app.secret(&tenant, &endpoint).await).unwrap();

    let (status, rotated) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/secret/rotate/"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = Secret::parse(&app.secret(&tenant, &endpoint).await).unwrap();
    assert_ne!(old, new, "rotation makes a new current secret");
    assert_eq!(
        Secret::parse(rotated["key"].as_str().unwrap()).unwrap(),
        new,
        "the answer is the new secret (Svix's SDK 2 reads it)"
    );
    app.send(&tenant, "call.completed", json!({})).await;

    let request = &receiver.wait_for(1, WAIT).await[0];
    let signatures = request.header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(
        verifies(request, &old),
        "the previous secret still verifies"
    );
    assert!(verifies(request, &new), "the new secret verifies");
}

#[tokio::test]
async fn a_rotation_with_no_grace_period_stops_the_old_secret_at_once() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/secret/rotate/");

    let (too_long, error) = app
        .post(&path, json!({"gracePeriodSeconds": 604_801}))
        .await;
    let (status, rotated) = app.post(&path, json!({"gracePeriodSeconds": 0})).await;
    app.send(&tenant, "call.completed", json!({})).await;

    assert_eq!(too_long, 422, "past 7 days: {error}");
    assert_eq!(status, 200, "{rotated}");
    let request = &receiver.wait_for(1, WAIT).await[0];
    let signatures = request.header("webhook-signature");
    assert_eq!(
        signatures.split(' ').count(),
        1,
        "only the new secret signs: {signatures}"
    );
    let new = Secret::parse(rotated["key"].as_str().unwrap()).unwrap();
    assert!(verifies(request, &new));
}

#[tokio::test]
async fn a_manual_resend_makes_one_more_attempt_marked_manual() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let message = app.send(&tenant, "call.completed", json!({})).await;
    receiver.wait_for(1, WAIT).await;

    let (status, _) = app
        .post(
            &format!("/app/{tenant}/msg/{message}/endpoint/{endpoint}/resend/"),
            json!({}),
        )
        .await;

    assert_eq!(status, 202);
    receiver.wait_for(2, WAIT).await;
    let attempts = eventually(WAIT, "two attempts", || async {
        let attempts = app.attempts_of(&tenant, &message).await;
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    assert_eq!(attempts[0]["triggerType"], 0);
    assert_eq!(attempts[1]["triggerType"], 1, "the resend is manual");
    let (status, one) = app
        .get(&format!(
            "/app/{tenant}/msg/{message}/attempt/{}/",
            attempts[1]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], attempts[1]["id"]);
}

#[tokio::test]
async fn a_410_gone_disables_the_endpoint() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.always("/gone", Reply::Status(410));
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/gone"), None)
        .await;

    app.send(&tenant, "call.completed", json!({})).await;

    eventually(WAIT, "the endpoint to be disabled", || async {
        let (_, body) = app
            .get(&format!("/app/{tenant}/endpoint/{endpoint}/"))
            .await;
        (body["disabled"] == true).then_some(())
    })
    .await;
    assert_eq!(receiver.requests().len(), 1, "no retry after 410");
}

#[tokio::test]
async fn the_payload_reaches_the_receiver_exactly_as_sent() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let raw = r#"{"eventType":"call.started","payload":{"zeta":1,"alpha":12345678901234567890,"nested":{"b":[1,2],"a":null}}}"#;

    let response = app
        .client
        .post(app.url(&format!("/app/{tenant}/msg/")))
        .bearer_auth(crate::helpers::TOKEN)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let request = &receiver.wait_for(1, WAIT).await[0];
    let body = String::from_utf8(request.body.to_vec()).unwrap();
    assert!(
        body.ends_with(
            r#","data":{"zeta":1,"alpha":12345678901234567890,"nested":{"b":[1,2],"a":null}}}"#
        ),
        "key order and big numbers survive: {body}"
    );
}

#[tokio::test]
async fn a_slow_endpoint_cannot_take_the_slots_of_the_others() {
    // Six slots in all, two per endpoint: the slow endpoint may have two in
    // flight and two waiting, the rest is given back to the database.
    let app = spawn_app_with(Options {
        max_in_flight: 6,
        max_in_flight_per_endpoint: 2,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.always("/slow", Reply::Delay(Duration::from_secs(3)));
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/slow"), Some(&["call.started"]))
        .await;
    app.create_endpoint(&tenant, &receiver.url("/fast"), Some(&["call.completed"]))
        .await;
    for n in 0..8 {
        app.send(&tenant, "call.started", json!({"n": n})).await;
    }
    receiver.wait_for(2, WAIT).await;

    app.send(&tenant, "call.completed", json!({})).await;

    let arrived = eventually(WAIT, "the fast endpoint's delivery", || async {
        let requests = receiver.requests();
        requests
            .iter()
            .position(|r| r.path == "/fast")
            .map(|at| requests[..at].to_vec())
    })
    .await;
    // Without the per-endpoint limit the slow endpoint would hold all six
    // slots, and the fast delivery would wait for one of them to finish.
    assert_eq!(
        arrived.iter().filter(|r| r.path == "/slow").count(),
        2,
        "only two slow requests were in flight when the fast one was sent"
    );
    // Every deferred slow delivery is still delivered.
    receiver.wait_for(9, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_quick_endpoint_borrows_idle_slots_past_its_share() {
    // Two slots per endpoint of 64 in all. An endpoint that has answered
    // quickly may go past its two while more than half the slots are free,
    // so twelve held requests are all in flight at once; held to its share
    // it would have two in flight and the rest waiting or given back, and
    // nothing answers within the wait.
    let app = spawn_app_with(Options {
        max_in_flight: 64,
        max_in_flight_per_endpoint: 2,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.script("/quick", &[Reply::Status(200); 6]);
    receiver.always("/quick", Reply::Delay(Duration::from_secs(30)));
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/quick"), None)
        .await;
    for n in 0..6 {
        app.send(&tenant, "call.started", json!({"n": n})).await;
        receiver.wait_for(n + 1, WAIT).await;
    }

    for n in 6..18 {
        app.send(&tenant, "call.started", json!({"n": n})).await;
    }

    let arrived = receiver.wait_for(18, Duration::from_secs(10)).await;
    assert_eq!(
        arrived.len(),
        18,
        "all twelve held requests in flight at once"
    );
}

#[tokio::test]
async fn a_url_check_posts_one_signed_test_event_and_stores_nothing() {
    let app = crate::helpers::spawn_app().await;
    let receiver = crate::helpers::Receiver::start().await;
    receiver.always("/new", crate::helpers::Reply::Body(200, "hello"));
    let tenant = app.create_app("Acme").await;

    let (status, check) = app
        .post(
            &format!("/app/{tenant}/url-check/"),
            serde_json::json!({"url": receiver.url("/new")}),
        )
        .await;

    assert_eq!(status, 200, "{check}");
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["statusCode"], 200);
    assert_eq!(check["response"], "hello");
    let received = receiver.requests_to("/new");
    assert_eq!(received.len(), 1);
    assert!(received[0].header("webhook-signature").starts_with("v1,"));
    assert_eq!(received[0].json()["type"], "herald.url_check");
    let (_, endpoints) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    assert_eq!(endpoints["data"], serde_json::json!([]), "nothing saved");
    let (_, messages) = app.get(&format!("/app/{tenant}/msg/")).await;
    assert_eq!(messages["data"], serde_json::json!([]), "nothing logged");
    let (status, error) = app
        .post(
            &format!("/app/{tenant}/url-check/"),
            serde_json::json!({"url": "ftp://example.com/"}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
}

/// Runs `herald verify` on a saved request; (exit success, what it printed).
fn herald_verify(secret: &str, headers: &str, body: &[u8], extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (headers_file, body_file) = (dir.path().join("headers"), dir.path().join("body"));
    std::fs::write(&headers_file, headers).unwrap();
    std::fs::write(&body_file, body).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["verify", "--secret", secret, "--headers"])
        .arg(&headers_file)
        .arg("--body")
        .arg(&body_file)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn herald_verify_checks_a_saved_delivery_against_its_secret() {
    let app = crate::helpers::spawn_app().await;
    let receiver = crate::helpers::Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/saved"), None)
        .await;
    let secret = app.secret(&tenant, &endpoint).await;
    app.send(&tenant, "call.completed", serde_json::json!({"n": 1}))
        .await;
    let request = receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await[0]
        .clone();
    let headers: String = [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    ]
    .iter()
    .map(|name| format!("{name}: {}\n", request.header(name)))
    .collect();

    let (valid, said) = herald_verify(&secret, &headers, &request.body, &["--tolerance", "5m"]);
    assert!(valid, "{said}");
    assert!(said.starts_with("signature valid"), "{said}");

    let other = herald_domain::Secret::generate().expose();
    let (valid, said) = herald_verify(&other, &headers, &request.body, &[]);
    assert!(!valid, "{said}");
    assert!(said.starts_with("signature invalid"), "{said}");

    let mut tampered = request.body.to_vec();
    tampered.push(b' ');
    let (valid, _) = herald_verify(&secret, &headers, &tampered, &[]);
    assert!(!valid, "a changed body does not verify");

    let svix_only = headers.replace("webhook-", "svix-");
    assert!(
        herald_verify(&secret, &svix_only, &request.body, &[]).0,
        "svix-* headers work too"
    );
    let stale = headers.replace(
        &request.header("webhook-timestamp"),
        &(request.header("webhook-timestamp").parse::<i64>().unwrap() - 3600).to_string(),
    );
    let (valid, said) = herald_verify(&secret, &stale, &request.body, &["--tolerance", "5m"]);
    assert!(!valid && said.contains("tolerance"), "{said}");
}

/// `herald listen` as a child process: its address, and its output lines.
struct Listen {
    child: std::process::Child,
    address: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Listen {
    fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["listen", "--port", "0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let address = first
            .split("http://")
            .nth(1)
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        Self {
            child,
            address,
            lines,
        }
    }

    /// Output lines until one contains `text` (or 10 s pass).
    fn until(&self, text: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("`{text}` not printed; got: {seen:#?}");
    }
}

#[tokio::test]
async fn herald_listen_prints_deliveries_and_says_whether_they_verify() {
    let app = crate::helpers::spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let secret = herald_domain::Secret::generate().expose();
    let (status, _) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            serde_json::json!({"url": "http://127.0.0.1:9/placeholder", "secret": secret}),
        )
        .await;
    assert_eq!(status, 201);

    // Right secret, relaying to the app behind it.
    let receiver = crate::helpers::Receiver::start().await;
    receiver.always("/app", crate::helpers::Reply::Body(202, "queued"));
    let forward = receiver.url("/app");
    let listen = Listen::start(&["--secret", &secret, "--forward", &forward]);
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            serde_json::json!({"url": format!("http://{}/hooks", listen.address), "secret": secret}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    let (_, result) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/send-example/?wait=true"),
            serde_json::json!({"eventType": "call.completed"}),
        )
        .await;
    let printed = listen.until("relayed to").join("\n");
    assert!(printed.contains("call.completed"), "{printed}");
    assert!(printed.contains("signature valid"), "{printed}");
    assert!(
        printed.contains("\"callId\""),
        "the body, pretty-printed: {printed}"
    );
    assert_eq!(result["attempt"]["responseStatusCode"], 202, "{result}");
    assert_eq!(receiver.requests_to("/app").len(), 1, "relayed");

    // A wrong secret: said so.
    let wrong = Listen::start(&["--secret", &herald_domain::Secret::generate().expose()]);
    let (_, other) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            serde_json::json!({"url": format!("http://{}/", wrong.address), "secret": secret}),
        )
        .await;
    let other = other["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/app/{tenant}/endpoint/{other}/send-example/?wait=true"),
        serde_json::json!({"eventType": "contact.created"}),
    )
    .await;
    let printed = wrong.until("   signature ").join("\n");
    assert!(printed.contains("signature invalid"), "{printed}");
}

#[tokio::test]
async fn a_message_with_deliver_at_waits_for_its_time_and_shows_as_pending_until_then() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let messages = format!("/app/{tenant}/msg/");
    let in_a_while = |seconds: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(seconds))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };

    let (past, error) = app
        .post(
            &messages,
            json!({"eventType": "call.started", "payload": {}, "deliverAt": in_a_while(-3600)}),
        )
        .await;
    assert_eq!(past, 422, "an hour ago: {error}");
    let (far, error) = app
        .post(&messages, json!({"eventType": "call.started", "payload": {}, "deliverAt": in_a_while(400 * 86_400)}))
        .await;
    assert_eq!(far, 422, "past the retention: {error}");

    let due = in_a_while(2);
    let (status, message) = app
        .post(
            &messages,
            json!({"eventType": "call.started", "payload": {}, "deliverAt": due}),
        )
        .await;
    assert_eq!(status, 202, "{message}");
    let id = message["id"].as_str().unwrap();
    let (_, destinations) = app.get(&format!("/app/{tenant}/msg/{id}/endpoint/")).await;
    let pending = &destinations["data"][0];
    assert_eq!(pending["id"], endpoint.as_str());
    assert_eq!(pending["status"], 1, "pending: {pending}");
    assert_eq!(
        pending["nextAttempt"].as_str().unwrap(),
        due,
        "due at its deliverAt"
    );

    let request = &receiver.wait_for(1, WAIT).await[0];
    let due = chrono::DateTime::parse_from_rfc3339(&due)
        .unwrap()
        .timestamp();
    let signed: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!(signed >= due, "signed at {signed}, before its time {due}");
}

#[tokio::test]
async fn an_endpoint_s_attempted_messages_are_listed_newest_first_with_their_status() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.always("/failing", crate::helpers::Reply::Status(500));
    let tenant = app.create_app("Acme").await;
    let calls = app
        .create_endpoint(&tenant, &receiver.url("/calls"), Some(&["call.*"]))
        .await;
    let failing = app
        .create_endpoint(&tenant, &receiver.url("/failing"), None)
        .await;
    let first = app
        .send(&tenant, "call.started", json!({"callId": "a"}))
        .await;
    let contact = app
        .send(&tenant, "contact.created", json!({"contactId": "c"}))
        .await;
    let second = app
        .send(&tenant, "call.completed", json!({"callId": "a"}))
        .await;
    receiver.wait_for(5, WAIT).await;
    crate::helpers::attempted(&app, &tenant, &second, 2).await;

    let (status, listed) = app
        .get(&format!("/app/{tenant}/endpoint/{calls}/msg/"))
        .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [second.as_str(), first.as_str()],
        "only its messages, newest first"
    );
    assert_eq!(listed["data"][0]["status"], 0, "delivered: {listed}");
    assert_eq!(listed["data"][0]["statusText"], "success");
    assert_eq!(listed["data"][0]["payload"], json!({"callId": "a"}));

    let (_, all) = app
        .get(&format!("/app/{tenant}/endpoint/{failing}/msg/"))
        .await;
    assert_eq!(all["data"].as_array().unwrap().len(), 3, "{all}");
    let (_, only_contacts) = app
        .get(&format!(
            "/app/{tenant}/endpoint/{failing}/msg/?event_types=contact.created"
        ))
        .await;
    assert_eq!(only_contacts["data"][0]["id"], contact.as_str());
    assert_eq!(only_contacts["data"].as_array().unwrap().len(), 1);
    let (_, delivered) = app
        .get(&format!("/app/{tenant}/endpoint/{failing}/msg/?status=0"))
        .await;
    assert_eq!(
        delivered["data"],
        json!([]),
        "none delivered to the failing one"
    );
    let (tagged, error) = app
        .get(&format!("/app/{tenant}/endpoint/{calls}/msg/?tag=x"))
        .await;
    assert_eq!(tagged, 422, "{error}");
    let other = app.create_app("Other").await;
    let (foreign, _) = app
        .get(&format!("/app/{other}/endpoint/{calls}/msg/"))
        .await;
    assert_eq!(foreign, 404, "another app's endpoint");
}

#[tokio::test]
async fn an_attempt_s_response_body_can_be_removed_and_the_attempt_stays() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.always(
        "/leaky",
        crate::helpers::Reply::Body(200, r#"{"debug": "session=4f9a-secret"}"#),
    );
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/leaky"), None)
        .await;
    let message = app.send(&tenant, "call.completed", json!({})).await;
    crate::helpers::attempted(&app, &tenant, &message, 1).await;
    let attempt = app.attempts_of(&tenant, &message).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/app/{tenant}/msg/{message}/attempt/{attempt}/content/");

    let (removed, _) = app.request(reqwest::Method::DELETE, &path, None).await;
    let (_, after) = app
        .get(&format!("/app/{tenant}/msg/{message}/attempt/{attempt}/"))
        .await;
    let other = app.create_app("Other").await;
    let (foreign, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/app/{other}/msg/{message}/attempt/{attempt}/content/"),
            None,
        )
        .await;
    let (missing, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!(
                "/app/{tenant}/msg/{message}/attempt/atmpt_01H0000000000000000000000/content/"
            ),
            None,
        )
        .await;

    assert_eq!(removed, 204);
    assert_eq!(after["response"], "", "the body is gone: {after}");
    assert_eq!(after["responseStatusCode"], 200, "the rest stays: {after}");
    assert_eq!(after["status"], 0);
    assert_eq!(foreign, 404, "another app's attempt");
    assert_eq!(missing, 404, "no such attempt");
}

#[tokio::test]
async fn a_precheck_says_whether_an_enabled_endpoint_subscribes_to_a_type() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Acme").await;
    let path = format!("/app/{tenant}/msg/precheck/active/");
    let (_, before) = app.post(&path, json!({"eventType": "call.started"})).await;
    app.create_endpoint(&tenant, &receiver.url("/calls"), Some(&["call.*"]))
        .await;
    let contacts = app
        .create_endpoint(
            &tenant,
            &receiver.url("/contacts"),
            Some(&["contact.created"]),
        )
        .await;
    app.request(
        reqwest::Method::PATCH,
        &format!("/app/{tenant}/endpoint/{contacts}/"),
        Some(json!({"disabled": true})),
    )
    .await;

    let (status, calls) = app.post(&path, json!({"eventType": "call.started"})).await;
    let (_, contact) = app
        .post(&path, json!({"eventType": "contact.created"}))
        .await;
    let (refused, error) = app
        .post(&path, json!({"eventType": "call.started", "payload": {}}))
        .await;

    assert_eq!(before["active"], false, "no endpoint yet: {before}");
    assert_eq!(status, 200, "{calls}");
    assert_eq!(calls["active"], true, "call.* takes call.started");
    assert_eq!(contact["active"], false, "its only subscriber is disabled");
    assert_eq!(refused, 422, "a field it does not take: {error}");
}

#[tokio::test]
async fn background_tasks_are_listed_newest_first_and_an_app_token_sees_its_own() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (acme, other) = (app.create_app("Acme").await, app.create_app("Other").await);
    let mut tasks = Vec::new();
    for tenant in [&acme, &other, &acme] {
        let endpoint = app
            .create_endpoint(tenant, &receiver.url("/hook"), None)
            .await;
        let (status, task) = app
            .post(
                &format!("/app/{tenant}/endpoint/{endpoint}/recover/"),
                json!({"since": "2026-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(status, 202, "{task}");
        tasks.push(task["id"].as_str().unwrap().to_owned());
    }
    let (_, token) = app
        .post(&format!("/app/{acme}/token/"), json!({"name": "reader"}))
        .await;
    let token = token["token"].as_str().unwrap();

    let (_, all) = app.get("/background-task/").await;
    let (_, seen) = app
        .request_as(Some(token), reqwest::Method::GET, "/background-task/", None)
        .await;
    let seen: Value = serde_json::from_str(&seen).unwrap();
    let (_, other_kind) = app.get("/background-task/?task=endpoint.replay").await;
    let (bad, _) = app.get("/background-task/?status=sleeping").await;

    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Ids sort by creation time: newest first is descending ids.
    let descending = |mut ids: Vec<String>| {
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    };
    assert_eq!(
        ids(&all),
        descending(tasks.clone()),
        "the admin sees every app's: {all}"
    );
    assert_eq!(
        ids(&seen),
        descending(vec![tasks[0].clone(), tasks[2].clone()]),
        "the app's own: {seen}"
    );
    assert_eq!(all["data"][0]["task"], "endpoint.recover");
    assert_eq!(other_kind["data"], json!([]), "a kind Herald does not run");
    assert_eq!(bad, 422);
}

#[tokio::test]
async fn attempt_stats_count_an_endpoint_s_attempts_in_a_window_by_outcome() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/hook",
        &[
            crate::helpers::Reply::Status(500),
            crate::helpers::Reply::Status(500),
        ],
    );
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let first = app.send(&tenant, "call.started", json!({})).await;
    crate::helpers::attempted(&app, &tenant, &first, 3).await;
    let second = app.send(&tenant, "call.completed", json!({})).await;
    crate::helpers::attempted(&app, &tenant, &second, 1).await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/attempt-stats/");

    let (status, stats) = app.get(&path).await;
    let (_, before) = app
        .get(&format!(
            "{path}?since=2020-01-01T00:00:00Z&until=2020-02-01T00:00:00Z"
        ))
        .await;
    let (backwards, _) = app
        .get(&format!(
            "{path}?since=2021-01-01T00:00:00Z&until=2020-01-01T00:00:00Z"
        ))
        .await;
    let other = app.create_app("Other").await;
    let (foreign, _) = app
        .get(&format!("/app/{other}/endpoint/{endpoint}/attempt-stats/"))
        .await;

    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats,
        json!({"success": 2, "fail": 2, "canceled": 0}),
        "two 500s, then two 2xx"
    );
    assert_eq!(before, json!({"success": 0, "fail": 0, "canceled": 0}));
    assert_eq!(backwards, 422);
    assert_eq!(foreign, 404);
}
