//! Hostile clients and careless receivers, over real sockets on loopback:
//! connections that trickle or idle, a tenant hoarding uploads, a process
//! short of file descriptors, idempotency keys used the wrong way, a
//! receiver that answers and stalls, `Retry-After` dates, addresses that
//! embed refused ones, odd input. Each case is bounded in time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    eventually, spawn_app, spawn_app_with, Options, Receiver, Reply, Server, TestApp, TestDatabase,
    TOKEN,
};

const WAIT: Duration = Duration::from_secs(15);

/// Connection rules with short timeouts, so the cases run in seconds.
fn quick_connections() -> herald_api::ConnectionLimits {
    herald_api::ConnectionLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        body_min_rate: 100,
        keepalive_timeout: Duration::from_secs(2),
        send_timeout: Duration::from_secs(2),
        ..herald_api::ConnectionLimits::default()
    }
}

/// Reads until the server closes the connection (or `limit` passes, which
/// fails the test); returns what it sent and how long that took.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open for {limit:?}"));
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn trickled_headers_idle_connections_and_idle_keep_alives_are_closed_in_time() {
    let app = spawn_app_with(Options {
        connections: quick_connections(),
        ..Options::default()
    })
    .await;

    // A request head sent one byte every 200 ms never completes in 1 s.
    let mut trickling = TcpStream::connect(app.address).await.unwrap();
    let trickle = async {
        for byte in b"GET /api/v1/health HTTP/1.1\r\nHost: herald\r\nX-Slow: yes" {
            if trickling.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .unwrap_or(());
    let (answer, _) = until_closed(&mut trickling, WAIT).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A connection that says nothing at all.
    let mut silent = TcpStream::connect(app.address).await.unwrap();
    let (answer, waited) = until_closed(&mut silent, WAIT).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed only once the header timeout passed ({waited:?})"
    );

    // A kept-alive connection is left open between requests for the
    // keep-alive timeout (2 s), not the header timeout (1 s).
    let mut kept = TcpStream::connect(app.address).await.unwrap();
    kept.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (_, idle) = until_closed(&mut kept, WAIT).await;
    assert!(
        idle >= Duration::from_millis(1500),
        "kept alive past the header timeout ({idle:?})"
    );
}

#[tokio::test]
async fn a_stalled_or_trickled_body_gets_408_and_the_connection_is_closed() {
    let app = spawn_app_with(Options {
        connections: quick_connections(),
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let head = format!(
        "POST /api/v1/app/{tenant}/msg/ HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    );

    // Part of the body, then nothing.
    let mut stalled = TcpStream::connect(app.address).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(b"{\"eventType\": ").await.unwrap();
    let (answer, _) = until_closed(&mut stalled, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A byte every 150 ms: never a long pause, but under 100 bytes/s once
    // the 1 s grace has passed.
    let mut trickling = TcpStream::connect(app.address).await.unwrap();
    trickling.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let trickle = async {
        let mut buffer = [0u8; 1024];
        for byte in std::iter::repeat_n(b' ', 399) {
            if trickling.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::select! {
                read = trickling.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(150)) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, trickle)
        .await
        .expect("the trickle was cut short");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "cut long before the 60 s the trickle would take"
    );
    let (_, list) = app.get(&format!("/app/{tenant}/msg/")).await;
    assert_eq!(list["data"], json!([]), "nothing was stored");
}

/// A client that asks for a large export and stops reading is cut off
/// once its send stalls (`send_timeout`), and holds nothing: the server
/// answers others meanwhile. The export reads a page at a time, so the
/// stalled client holds at most one page.
#[tokio::test]
async fn a_client_that_stops_reading_its_export_is_cut_off() {
    let app = spawn_app_with(Options {
        connections: quick_connections(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // Each attempt keeps 4 KiB of response: 1,500 attempts make an export
    // of ~6.5 MB, more than loopback's socket buffers hold.
    let answer: &'static str = Box::leak("r".repeat(4096).into_boxed_str());
    receiver.always("/big", Reply::Body(200, answer));
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &receiver.url("/big"), None)
        .await;
    const MESSAGES: usize = 1_500;
    for n in 0..MESSAGES {
        app.send(&tenant, "call.started", json!({"n": n})).await;
    }
    let path = format!("/app/{tenant}/attempt/export/?format=jsonl");
    let whole = eventually(WAIT * 2, "every attempt recorded", || async {
        let text = app
            .client
            .get(app.url(&path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (text.lines().count() == MESSAGES).then_some(text.len())
    })
    .await;
    assert!(whole > 6_000_000, "{whole} bytes");

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.address).await.unwrap();
    stalled
        .write_all(
            format!("GET /api/v1{path} HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = stalled.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // Not a byte more for three send timeouts; others are answered.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, _) = app.get("/health/").await;
    assert_eq!(status, 200);
    let (rest, _) = until_closed(&mut stalled, WAIT).await;
    assert!(
        n + rest.len() < whole,
        "the stalled client got all {whole} bytes: it was not cut off"
    );
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_sent() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /api/v1/app/{tenant}/msg/ HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();

    let (answer, _) = until_closed(&mut stream, WAIT).await;

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[tokio::test]
async fn a_client_that_keeps_sending_a_refused_body_is_cut_off_after_the_lingering_bound() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let stream = TcpStream::connect(app.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /api/v1/app/{tenant}/msg/ HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    // Sends without end, as fast as the server reads.
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        while writer.write_all(&chunk).await.is_ok() {}
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server ends the lingering read (4 x the body limit, 5 s)");
    let took = started.elapsed();
    sender.abort();

    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(took < Duration::from_secs(20), "closed after {took:?}");
}

/// App-scoped tokens for `tenant`.
async fn tokens(app: &TestApp, tenant: &str, count: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for n in 0..count {
        let (status, made) = app
            .post(
                &format!("/app/{tenant}/token/"),
                json!({"name": format!("uploader {n}")}),
            )
            .await;
        assert_eq!(status, 201, "{made}");
        tokens.push(made["token"].as_str().unwrap().to_owned());
    }
    tokens
}

#[tokio::test]
async fn a_tenant_holding_a_thousand_unfinished_uploads_leaves_the_others_answered() {
    let app = spawn_app().await;
    let greedy = app.create_app("Greedy").await;
    let other = app.create_app("Other").await;
    let greedy_tokens = tokens(&app, &greedy, 5).await;
    let other_token = tokens(&app, &other, 1).await.remove(0);

    // 1,000 uploads over five tokens, 200 each, paced under the per-token
    // rate limit (100/s): each sends its head and part of its body, then
    // holds the connection.
    let mut held = Vec::new();
    let mut refused_early = Vec::new();
    for round in 0..200 {
        for token in &greedy_tokens {
            let mut stream = TcpStream::connect(app.address).await.unwrap();
            let head = format!(
                "POST /api/v1/app/{greedy}/msg/ HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"eventType\": \"call.completed\", "
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            held.push(stream);
        }
        if round % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
    }
    // The uploads beyond the app's share were answered at once.
    for stream in held.iter_mut().rev().take(50) {
        let mut answer = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("an upload past the app's share is answered at once")
            .unwrap();
        refused_early.push(String::from_utf8_lossy(&answer[..n]).into_owned());
    }

    let started = Instant::now();
    let other_answer = tokio::time::timeout(
        Duration::from_secs(2),
        app.client
            .post(app.url(&format!("/app/{other}/msg/")))
            .bearer_auth(&other_token)
            .json(&json!({"eventType": "call.completed", "payload": {"callId": "c1"}}))
            .send(),
    )
    .await
    .expect("the other tenant is answered within 2 s")
    .unwrap();
    let admin_answer = tokio::time::timeout(
        Duration::from_secs(2),
        app.client.get(app.url("/app/")).bearer_auth(TOKEN).send(),
    )
    .await
    .expect("the admin is answered within 2 s")
    .unwrap();

    assert_eq!(other_answer.status(), 202, "after {:?}", started.elapsed());
    assert_eq!(admin_answer.status(), 200);
    assert!(
        refused_early
            .iter()
            .all(|a| a.starts_with("HTTP/1.1 429") && a.contains("too_many_concurrent_requests")),
        "{:?}",
        refused_early.first()
    );
    drop(held);
}

#[tokio::test]
async fn under_a_1024_descriptor_limit_1100_idle_connections_neither_silence_the_api_nor_fail_deliveries(
) {
    if !std::path::Path::new("/usr/bin/prlimit").exists() {
        crate::helpers::skip_or_fail(
            "under_a_1024_descriptor_limit…",
            "prlimit (util-linux) is not installed",
        );
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = crate::helpers::sqlite_env(data_dir.path());
    // Idle connections are only closed by eviction here, not by timeout.
    env.push(("HERALD_CLIENT_HEADER_TIMEOUT", "60s".into()));
    let server = Server::start_wrapped(&["/usr/bin/prlimit", "--nofile=1024:1024", "--"], &env);
    let client = reqwest::Client::new();
    let receiver = Receiver::start().await;

    let mut idle = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect(server.address).await {
            Ok(stream) => idle.push(stream),
            Err(error) => panic!("connect failed after {}: {error}", idle.len()),
        }
    }

    let health = tokio::time::timeout(
        Duration::from_secs(5),
        client
            .get(format!("http://{}/api/v1/health", server.address))
            .send(),
    )
    .await
    .expect("the API answers within 5 s")
    .unwrap();
    assert_eq!(health.status(), 200);
    let tenant = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    server
        .post(
            &client,
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/hook")}),
        )
        .await;
    let message = server
        .post(
            &client,
            &format!("/app/{tenant}/msg/"),
            json!({"eventType": "call.completed", "payload": {"callId": "c1"}}),
        )
        .await;
    receiver.wait_for(1, WAIT).await;
    let message = message["id"].as_str().unwrap().to_owned();
    let attempts = eventually(WAIT, "the attempt in the log", || async {
        let list = server
            .get(&client, &format!("/app/{tenant}/attempt/msg/{message}/"))
            .await;
        let data = list["data"].as_array().cloned().unwrap_or_default();
        (!data.is_empty()).then_some(data)
    })
    .await;

    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["status"], 0, "succeeded: {:?}", attempts[0]);
    let log = server.log_lines().join("\n");
    assert!(
        log.contains("\"max_connections\":768"),
        "the cap leaves a quarter of 1,024 descriptors"
    );
    drop(idle);
}

/// A message POST with `key`, as raw JSON text.
async fn post_with_key(app: &TestApp, tenant: &str, key: &str, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/app/{tenant}/msg/")))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn message_count(app: &TestApp, tenant: &str) -> usize {
    let (_, list) = app.get(&format!("/app/{tenant}/msg/")).await;
    list["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn idempotency_keys_keep_only_answers_of_requests_that_ran() {
    let app = spawn_app_with(Options {
        connections: quick_connections(),
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let body = r#"{"eventType": "call.completed", "payload": {"callId": "c1"}}"#;

    // An upload that dropped mid-body reserves nothing: the SDK's retry
    // with the whole body runs.
    let mut dropped = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /api/v1/app/{tenant}/msg/ HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {TOKEN}\r\n\
         Idempotency-Key: dropped\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    dropped.write_all(head.as_bytes()).await.unwrap();
    dropped.write_all(&body.as_bytes()[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (retried, created) = post_with_key(&app, &tenant, "dropped", body).await;
    assert_eq!(retried, 202, "the retry ran: {created}");

    // A refused request (422) saves nothing: the corrected body runs.
    let (refused, error) = post_with_key(
        &app,
        &tenant,
        "corrected",
        r#"{"eventType": "call..completed", "payload": {}}"#,
    )
    .await;
    assert_eq!(refused, 422, "{error}");
    let (corrected, _) = post_with_key(&app, &tenant, "corrected", body).await;
    assert_eq!(corrected, 202, "the corrected request ran");

    // A success is replayed for the same body, refused for another.
    let (replayed, again) = post_with_key(&app, &tenant, "dropped", body).await;
    assert_eq!(replayed, 202);
    assert_eq!(again["id"], created["id"], "the saved answer");
    let (reused, error) = post_with_key(
        &app,
        &tenant,
        "dropped",
        r#"{"eventType": "call.completed", "payload": {"callId": "c2"}}"#,
    )
    .await;
    assert_eq!(reused, 422, "{error}");
    assert!(
        crate::helpers::detail_text(&error).contains("different request body"),
        "{error}"
    );
    assert_eq!(message_count(&app, &tenant).await, 2, "two ran, once each");
}

#[tokio::test]
async fn an_idempotency_key_holds_whichever_way_the_app_or_endpoint_is_spelled() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (_, created) = app
        .post("/app/", json!({"name": "Acme", "uid": "acme"}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let body = r#"{"eventType": "call.completed", "payload": {"callId": "c1"}}"#;

    let (first, sent) = post_with_key(&app, "acme", "spelled", body).await;
    let (by_id, replayed) = post_with_key(&app, &id, "spelled", body).await;
    let (slashless, _) = {
        let response = app
            .client
            .post(app.url(&format!("/app/{id}/msg")))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "spelled")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    let (other_body, error) = post_with_key(
        &app,
        &id,
        "spelled",
        r#"{"eventType": "call.completed", "payload": {"callId": "c2"}}"#,
    )
    .await;

    assert_eq!(first, 202, "{sent}");
    assert_eq!(by_id, 202, "{replayed}");
    assert_eq!(
        replayed["id"], sent["id"],
        "the uid's answer is replayed for the id"
    );
    assert_eq!(slashless, 202);
    assert_eq!(other_body, 422, "another body under the same key: {error}");
    assert_eq!(message_count(&app, "acme").await, 1, "one message ran");

    // An endpoint named by uid and by id is one scope too: one recovery.
    app.post(
        "/app/acme/endpoint/",
        json!({"url": receiver.url("/hook"), "uid": "crm"}),
    )
    .await;
    let (_, endpoint) = app.get("/app/acme/endpoint/crm/").await;
    let recover = |path: String| {
        app.client
            .post(app.url(&path))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "recover-once")
            .json(&json!({"since": "2026-01-01T00:00:00Z"}))
            .send()
    };
    let by_uid: Value = recover("/app/acme/endpoint/crm/recover/".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_ids: Value = recover(format!(
        "/app/{id}/endpoint/{}/recover/",
        endpoint["id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(by_uid["id"].is_string(), "{by_uid}");
    assert_eq!(
        by_uid["id"], by_ids["id"],
        "one recovery task: {by_uid} {by_ids}"
    );
}

#[tokio::test]
async fn a_concurrent_duplicate_of_a_running_request_gets_409_and_does_not_run() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script("/slow", &[Reply::Delay(Duration::from_secs(2))]);
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/slow"), None)
        .await;
    let path = format!("/app/{tenant}/endpoint/{endpoint}/send-example/?wait=true");
    let send = || {
        app.client
            .post(app.url(&path))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "test-event-1")
            .json(&json!({"eventType": "call.completed"}))
            .send()
    };

    // The first runs until the receiver answers, two seconds later.
    let first = tokio::spawn(send());
    receiver.wait_for(1, WAIT).await;
    let concurrent = send().await.unwrap();
    let concurrent_status = concurrent.status();
    let concurrent_error: Value = concurrent.json().await.unwrap();
    let first = first.await.unwrap().unwrap();
    let first_status = first.status();
    let first_body = first.text().await.unwrap();
    let later = send().await.unwrap();
    let later_status = later.status();
    let later_body = later.text().await.unwrap();

    assert_eq!(concurrent_status, 409, "{concurrent_error}");
    assert_eq!(concurrent_error["code"], "conflict");
    assert!(first_status.is_success(), "{first_body}");
    assert_eq!(later_status, first_status, "replayed");
    assert_eq!(later_body, first_body, "replayed");
    assert_eq!(
        receiver.requests().len(),
        1,
        "one test event was sent, however often it was asked for"
    );
}

/// A receiver that answers every request with `head` and `body`, then
/// holds the connection without sending anything more.
async fn stalling_receiver(
    head: &'static str,
    body: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let mut seen = Vec::new();
                // Read the request head, then answer and stall.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    (address, requests)
}

#[tokio::test]
async fn a_200_whose_body_stalls_is_one_successful_attempt() {
    let app = spawn_app().await;
    let (address, requests) = stalling_receiver(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n",
        "received",
    )
    .await;
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &format!("http://{address}/hook"), None)
        .await;

    let message = app
        .send(&tenant, "call.completed", json!({"callId": "c1"}))
        .await;
    let attempts = eventually(WAIT, "the attempt in the log", || async {
        let attempts = app.attempts_of(&tenant, &message).await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    // Retries (100 ms apart here) would have come by now were it a failure.
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(attempts[0]["status"], 0, "succeeded: {:?}", attempts[0]);
    assert_eq!(attempts[0]["responseStatusCode"], 200);
    assert_eq!(attempts[0]["response"], "received", "what arrived is kept");
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "delivered once"
    );
    assert_eq!(app.attempts_of(&tenant, &message).await.len(), 1);
}

#[tokio::test]
async fn retry_after_as_an_http_date_delays_the_next_attempt() {
    let app = spawn_app_with(Options {
        retry_schedule: "1s,1s",
        ..Options::default()
    })
    .await;
    // 503 with a date three seconds ahead (whole seconds: two at least),
    // which is honoured up to twice the 1 s schedule.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let mut request = Vec::new();
                loop {
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    let head_end = text.find("\r\n\r\n").unwrap() + 4;
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while request.len() < head_end + length {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    request.drain(..head_end + length);
                    let count = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(Instant::now());
                        seen.len()
                    };
                    let answer = if count == 1 {
                        let date = httpdate::fmt_http_date(
                            std::time::SystemTime::now() + Duration::from_secs(3),
                        );
                        format!("HTTP/1.1 503 Service Unavailable\r\nRetry-After: {date}\r\nContent-Length: 0\r\n\r\n")
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned()
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let tenant = app.create_app("Acme").await;
    app.create_endpoint(&tenant, &format!("http://{address}/hook"), None)
        .await;

    app.send(&tenant, "call.completed", json!({"callId": "c1"}))
        .await;
    let times = eventually(WAIT, "the second attempt", || async {
        let times = arrivals.lock().unwrap().clone();
        (times.len() >= 2).then_some(times)
    })
    .await;

    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(1500),
        "the retry waited for the date (2 s ± 20 %), not the 1 s schedule: {gap:?}"
    );
}

/// Input refused the same way on every backend: names with empty
/// segments, iterators no list gave, payload strings that are not Unicode
/// or hold NUL, and endpoint addresses that embed refused ones.
async fn odd_input_is_refused(
    base: &str,
    client: &reqwest::Client,
    private_networks_allowed: bool,
) {
    let call = |method: reqwest::Method, path: String, body: Option<&'static str>| {
        let mut request = client
            .request(method, format!("{base}/api/v1{path}"))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, made) = call(
        reqwest::Method::POST,
        "/app/".into(),
        Some(r#"{"name": "Acme"}"#),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let tenant = made["id"].as_str().unwrap().to_owned();
    let mut cases: Vec<(reqwest::Method, String, Option<&'static str>, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            "/event-type/".into(),
            Some(r#"{"name": "a..b", "description": "x"}"#),
            422,
            "an event type with an empty segment",
        ),
        (
            reqwest::Method::POST,
            format!("/app/{tenant}/msg/"),
            Some(r#"{"eventType": "call..completed", "payload": {}}"#),
            422,
            "a message of such a type",
        ),
        (
            reqwest::Method::POST,
            format!("/app/{tenant}/msg/"),
            Some(r#"{"eventType": "call.completed", "payload": {"a": "\ud800"}}"#),
            422,
            "a lone surrogate",
        ),
        (
            reqwest::Method::POST,
            format!("/app/{tenant}/msg/"),
            Some(r#"{"eventType": "call.completed", "payload": {"a": "x\u0000y"}}"#),
            422,
            "NUL",
        ),
        (
            reqwest::Method::GET,
            "/app/?iterator=garbage".into(),
            None,
            400,
            "an iterator no list gave",
        ),
        (
            reqwest::Method::GET,
            format!("/app/{tenant}/msg/?iterator=garbage"),
            None,
            400,
            "an iterator of the wrong list",
        ),
        (
            reqwest::Method::GET,
            format!("/app/{tenant}/msg/?iterator=-app_01H0000000000000000000000"),
            None,
            400,
            "a prevIterator of another list",
        ),
    ];
    // Nested past the documented limit (64 levels, the body counting as
    // one): the payload's 63 levels pass, a 64th is refused, as is the
    // 100,000 levels a recursive parser in an SDK cannot read back.
    let nested = |levels: usize| -> &'static str {
        Box::leak(
            format!(
                r#"{{"eventType": "call.completed", "payload": {}{}}}"#,
                r#"{"a": "#.repeat(levels) + "1",
                "}".repeat(levels)
            )
            .into_boxed_str(),
        )
    };
    for (levels, why) in [
        (64, "a payload 64 levels deep"),
        (100_000, "100,000 levels"),
    ] {
        cases.push((
            reqwest::Method::POST,
            format!("/app/{tenant}/msg/"),
            Some(nested(levels)),
            422,
            why,
        ));
    }
    let (status, accepted) = call(
        reqwest::Method::POST,
        format!("/app/{tenant}/msg/"),
        Some(nested(63)),
    )
    .await;
    assert_eq!(status, 202, "63 levels are within the limit: {accepted}");
    if !private_networks_allowed {
        for (url, why) in [
            ("https://[2002:7f00:1::]/hook", "6to4 of 127.0.0.1"),
            ("https://[2002:a9fe:a9fe::]/hook", "6to4 of 169.254.169.254"),
            (
                "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
                "Teredo",
            ),
            (
                "https://[64:ff9b::a9fe:a9fe]/hook",
                "NAT64 of 169.254.169.254",
            ),
            ("https://[::ffff:0:7f00:1]/hook", "IPv4-translated loopback"),
            ("https://[2001:db8::5efe:a00:1]/hook", "ISATAP of 10.0.0.1"),
        ] {
            let body: &'static str = Box::leak(format!(r#"{{"url": "{url}"}}"#).into_boxed_str());
            cases.push((
                reqwest::Method::POST,
                format!("/app/{tenant}/endpoint/"),
                Some(body),
                422,
                why,
            ));
        }
    }
    for (method, path, body, expected, why) in cases {
        let (status, error) = call(method, path.clone(), body).await;
        assert_eq!(status, expected, "{why}: {path} {error}");
        assert!(
            !crate::helpers::detail_text(&error).is_empty(),
            "{why}: a clear detail: {error}"
        );
    }
    let (_, list) = call(reqwest::Method::GET, format!("/app/{tenant}/msg/"), None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "no refused message was stored, only the one within the limit"
    );
    let (_, list) = call(
        reqwest::Method::GET,
        format!("/app/{tenant}/endpoint/"),
        None,
    )
    .await;
    assert_eq!(list["data"], json!([]), "no refused endpoint was stored");
}

#[tokio::test]
async fn odd_input_is_refused_with_a_clear_4xx_on_sqlite() {
    let app = spawn_app_with(Options {
        allow_private_networks: false,
        ..Options::default()
    })
    .await;
    odd_input_is_refused(&format!("http://{}", app.address), &app.client, false).await;
}

#[tokio::test]
async fn odd_input_is_refused_with_a_clear_4xx_on_postgres() {
    let _shared = crate::helpers::POSTGRES.read().await;
    let Some(database) =
        TestDatabase::create("odd_input_is_refused_with_a_clear_4xx_on_postgres").await
    else {
        return;
    };
    let mut env = database.env();
    env.push(("HERALD_ALLOW_PRIVATE_NETWORKS", "false".into()));
    let server = Server::start(&env);
    odd_input_is_refused(
        &format!("http://{}", server.address),
        &reqwest::Client::new(),
        false,
    )
    .await;
    drop(server);
    database.drop_database().await;
}

/// A small tmpfs of its own, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("running mount: {e}"))?;
        if !status.success() {
            return Err("mount -t tmpfs failed (it needs root)".into());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_reports_unhealthy_and_resumes_without_losing_anything() {
    let disk = match SmallDisk::mount("12m") {
        Ok(disk) => disk,
        Err(why) => {
            crate::helpers::skip_or_fail("a_full_disk_refuses_writes…", &why);
            return;
        }
    };
    // Space to free later.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 4 * 1024 * 1024]).unwrap();
    let receiver = Receiver::start().await;
    let server = Server::start(&crate::helpers::sqlite_env(&disk.path().join("data")));
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1", server.address);
    let tenant = server.post(&client, "/app/", json!({"name": "Acme"})).await;
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    server
        .post(
            &client,
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": receiver.url("/hook")}),
        )
        .await;
    let send = |n: usize| {
        client
            .post(format!("{base}/app/{tenant}/msg/"))
            .bearer_auth(TOKEN)
            .json(&json!({
                "eventType": "call.completed",
                "eventId": format!("call-{n}"),
                "payload": {"callId": format!("call-{n}"), "notes": "x".repeat(2000)},
            }))
            .send()
    };

    // Send until the disk is full and messages are refused.
    let mut accepted = std::collections::HashSet::new();
    let mut refused = 0;
    for n in 0..20_000 {
        let response = send(n).await.unwrap();
        match response.status().as_u16() {
            202 => {
                let message: Value = response.json().await.unwrap();
                accepted.insert(message["id"].as_str().unwrap().to_owned());
            }
            503 => {
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["code"], "database_unavailable", "{error}");
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(
        refused,
        20,
        "the disk filled up ({} accepted)",
        accepted.len()
    );
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    let status = health.status();
    let body: Value = health.json().await.unwrap();
    assert_eq!(status, 503, "{body} after {} accepted", accepted.len());
    assert_eq!(body["code"], "database_writes_failing", "{body}");
    assert!(
        crate::helpers::detail_text(&body).contains("disk is full"),
        "{body}"
    );

    // Free space: writes resume by themselves, without a restart.
    std::fs::remove_file(&filler).unwrap();
    eventually(WAIT, "health back to 200", || async {
        let health = client.get(format!("{base}/health")).send().await.ok()?;
        (health.status() == 200).then_some(())
    })
    .await;
    let after = send(1_000_000).await.unwrap();
    assert_eq!(after.status(), 202, "a new message is accepted again");
    let after: Value = after.json().await.unwrap();
    accepted.insert(after["id"].as_str().unwrap().to_owned());

    // Every accepted message is stored and delivered.
    let mut stored = 0;
    let mut iterator = String::new();
    loop {
        let page = server
            .get(
                &client,
                &format!("/app/{tenant}/msg/?limit=250&iterator={iterator}"),
            )
            .await;
        for message in page["data"].as_array().unwrap() {
            assert!(accepted.contains(message["id"].as_str().unwrap()));
            stored += 1;
        }
        if page["done"] == true {
            break;
        }
        iterator = page["iterator"].as_str().unwrap().to_owned();
    }
    assert_eq!(stored, accepted.len(), "every accepted message is stored");
    let delivered = eventually(Duration::from_secs(60), "every delivery", || async {
        let ids: std::collections::HashSet<String> = receiver
            .requests()
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect();
        accepted.iter().all(|id| ids.contains(id)).then_some(ids)
    })
    .await;
    assert!(delivered.len() >= accepted.len());
    drop(server);
}

/// A client that opens a connection, sends one byte of a request head and
/// waits for Herald to close it, then does it again, until `stop`; counts
/// its connections in `made`.
async fn one_byte_client(
    address: std::net::SocketAddr,
    made: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await
        else {
            continue;
        };
        made.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(b"G").await.is_err() {
            continue;
        }
        let mut buffer = [0u8; 64];
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = async { while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {} } => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_hundred_one_byte_clients_at_a_cap_of_500_leave_a_real_client_answered() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = crate::helpers::sqlite_env(data_dir.path());
    env.push(("HERALD_MAX_CONNECTIONS", "500".into()));
    env.push(("HERALD_CLIENT_HEADER_TIMEOUT", "10s".into()));
    let server = Server::start(&env);
    let stop = tokio_util::sync::CancellationToken::new();
    let made = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..700)
        .map(|_| tokio::spawn(one_byte_client(server.address, made.clone(), stop.clone())))
        .collect();
    // The cap is full once 300 connections more than it holds were made
    // (each client whose connection is closed comes back at once).
    eventually(Duration::from_secs(20), "the cap to fill", || async {
        (made.load(Ordering::Relaxed) >= 1_000).then_some(())
    })
    .await;

    // A fresh connection for every check: the worst case for the client.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut answered = 0;
    for _ in 0..100 {
        let health = client
            .get(format!("http://{}/api/v1/health/", server.address))
            .send()
            .await;
        answered += usize::from(health.is_ok_and(|r| r.status() == 200));
    }
    stop.cancel();
    for attacker in attackers {
        let _ = attacker.await;
    }

    eprintln!("{answered} of 100 health checks answered");
    assert!(answered >= 95, "{answered} of 100 health checks answered");
}

#[tokio::test]
async fn a_client_that_sends_a_whole_oversized_body_before_reading_gets_the_413() {
    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    // Python's urllib writes the whole body before it reads the answer.
    let script = r#"
import sys, urllib.request, urllib.error
body = b'{"eventType": "call.completed", "payload": {"s": "' + b"x" * (2 << 20) + b'"}}'
for _ in range(20):
    request = urllib.request.Request(sys.argv[1], data=body, method="POST", headers={
        "Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=20)
        print("accepted")
    except urllib.error.HTTPError as error:
        print(error.code)
    except Exception as error:
        print(type(error).__name__, error)
"#;
    let url = app.url(&format!("/app/{tenant}/msg/"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &url, TOKEN])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let outcomes: Vec<&str> = printed.lines().collect();
    assert_eq!(
        outcomes.len(),
        20,
        "{printed} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        outcomes.iter().all(|outcome| *outcome == "413"),
        "every attempt reads the 413: {outcomes:?}"
    );
}
