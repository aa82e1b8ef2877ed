//! One tenant cannot take Herald away from the others: expressions that
//! would run for seconds, and listings that would hold hundreds of
//! megabytes per reader. Wall time and memory are what these tests are
//! about, so they measure them, with bounds far from the failures they
//! guard against (seconds per request, gigabytes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{sqlite_env, Receiver, Server, TestDatabase, POSTGRES, TOKEN};

/// The pattern of the report: ten thousand automaton states per byte of
/// input for the `regex` crate (7 s over 150 KB of random 0s and 1s).
const PATTERN: &str = "1[01]{10000}[^01]";

/// `bytes` random `0`s and `1`s (a fixed seed: the same text every run).
fn bits(bytes: usize) -> String {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    (0..bytes)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed & 1 == 0 {
                '0'
            } else {
                '1'
            }
        })
        .collect()
}

/// The time each of `count` messages of `tenant` took to be accepted, one
/// after the other, sorted.
async fn accept_times(
    server: &Server,
    client: &reqwest::Client,
    tenant: &str,
    count: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for n in 0..count {
        let started = Instant::now();
        let response = client
            .post(format!(
                "http://{}/api/v1/app/{tenant}/msg/",
                server.address
            ))
            .bearer_auth(TOKEN)
            .json(&json!({"eventType": "call.started", "payload": {"n": n}}))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 202);
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

/// 50 endpoints of one tenant filter with [`PATTERN`] while it sends
/// 150 KB payloads of 0s and 1s; another tenant's messages are accepted
/// about as fast as before.
async fn filters_that_would_run_for_seconds_leave_another_tenant_s_writes_alone(server: Server) {
    let client = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let attacker = server
        .post(&client, "/app/", json!({"name": "Greedy"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = server.post(&client, "/app/", json!({"name": "Acme"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut greedy_endpoints = Vec::new();
    for n in 0..50 {
        let made = server
            .post(
                &client,
                &format!("/app/{attacker}/endpoint/"),
                json!({
                    "url": receiver.url(&format!("/greedy/{n}")),
                    "filter": format!("data.s.matches('{PATTERN}')"),
                }),
            )
            .await;
        greedy_endpoints.push(made["id"].as_str().unwrap().to_owned());
    }
    server
        .post(
            &client,
            &format!("/app/{victim}/endpoint/"),
            json!({"url": receiver.url("/acme")}),
        )
        .await;
    let baseline = accept_times(&server, &client, &victim, 50).await;

    let stop = Arc::new(AtomicBool::new(false));
    let payload = json!({"eventType": "call.started", "payload": {"s": bits(150_000)}});
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (client, stop, payload) = (client.clone(), stop.clone(), payload.clone());
        let url = format!("http://{}/api/v1/app/{attacker}/msg/", server.address);
        senders.push(tokio::spawn(async move {
            let mut accepted = 0;
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&payload)
                    .timeout(Duration::from_secs(120))
                    .send()
                    .await
                    .expect("an answer");
                assert_eq!(response.status(), 202);
                accepted += 1;
            }
            accepted
        }));
    }
    let during = accept_times(&server, &client, &victim, 50).await;
    stop.store(true, Ordering::Relaxed);
    let mut greedy = 0;
    for sender in senders {
        greedy += sender.await.unwrap();
    }

    let metrics = server.metrics(&client).await;
    let stopped = metrics
        .lines()
        .find(|line| line.starts_with("herald_filter_evaluations_total{outcome=\"stopped\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    // Without the pattern's charge, each greedy message held the writer
    // for many seconds and the other tenant waited behind it.
    let (before, after) = (p99(&baseline), p99(&during));
    assert!(
        after <= (before * 3).max(Duration::from_millis(250)),
        "the other tenant's p99 went from {before:?} to {after:?} ({greedy} greedy messages)"
    );
    assert!(
        greedy >= 2,
        "the greedy tenant's messages were accepted too: {greedy}"
    );
    assert!(
        stopped >= greedy as f64,
        "each greedy message's filters were stopped: {stopped}"
    );
    assert!(
        receiver.requests_to("/greedy/0").is_empty(),
        "no greedy endpoint got a message"
    );
    let health = server
        .get(
            &client,
            &format!("/app/{attacker}/endpoint/{}/health/", greedy_endpoints[0]),
        )
        .await;
    assert!(
        health["filterFailures"]["count"].as_u64().unwrap_or(0) >= 1,
        "the endpoint's health shows its filter failing: {health}"
    );
    assert!(
        health["filterFailures"]["lastError"]
            .as_str()
            .is_some_and(|error| error.contains("budget")),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_that_would_run_for_seconds_leave_another_tenant_s_writes_alone_on_sqlite() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_env(data_dir.path()));
    filters_that_would_run_for_seconds_leave_another_tenant_s_writes_alone(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_that_would_run_for_seconds_leave_another_tenant_s_writes_alone_on_postgres() {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the greedy-filter test").await else {
        return;
    };
    let server = Server::start(&database.env());
    filters_that_would_run_for_seconds_leave_another_tenant_s_writes_alone(server).await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_that_would_run_for_seconds_leaves_the_health_check_answering() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_env(data_dir.path()));
    let client = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let tenant = server
        .post(&client, "/app/", json!({"name": "Greedy"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = server
        .post(
            &client,
            &format!("/app/{tenant}/endpoint/"),
            json!({
                "url": receiver.url("/greedy"),
                "transformation": format!("{{\"m\": data.s.matches('{PATTERN}')}}"),
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (client, stop) = (client.clone(), stop.clone());
        let url = format!("http://{}/api/v1/health/", server.address);
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut checks = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = client
                    .get(&url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                assert!(
                    answer.is_ok_and(|a| a.status() == 200),
                    "the health check answers"
                );
                slowest = slowest.max(started.elapsed());
                checks += 1;
                tokio::time::sleep(Duration::from_millis(50)).await; // paces the checks
            }
            (checks, slowest)
        })
    };
    let payload = json!({"eventType": "call.started", "payload": {"s": bits(1_000_000)}});
    for _ in 0..4 {
        let response = client
            .post(format!(
                "http://{}/api/v1/app/{tenant}/msg/",
                server.address
            ))
            .bearer_auth(TOKEN)
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    // Every message's first attempt recorded: each transformation ran.
    let attempts: Vec<Value> = crate::helpers::eventually(
        Duration::from_secs(120),
        "the four first attempts",
        || async {
            let list = server
                .get(
                    &client,
                    &format!("/app/{tenant}/attempt/endpoint/{endpoint}/"),
                )
                .await;
            let data = list["data"].as_array()?.clone();
            (data.len() >= 4).then_some(data)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (checks, slowest) = watcher.await.unwrap();

    assert!(checks >= 2, "{checks} health checks");
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest health check took {slowest:?}"
    );
    for attempt in &attempts {
        assert_eq!(attempt["errorClass"], "transformation", "{attempt}");
    }
    assert!(receiver.requests().is_empty(), "nothing was sent");
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Asks for `path` with `token` over a connection whose receive buffer is
/// tiny, and reads the answer 16 KiB at a time, ten times a second, for
/// `hold`; returns the status line.
async fn slow_read(
    address: std::net::SocketAddr,
    path: String,
    token: String,
    hold: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 16 << 10];
    let mut first = Vec::new();
    let until = Instant::now() + hold;
    while Instant::now() < until {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) if first.is_empty() => first.extend_from_slice(&buffer[..n.min(64)]),
            Ok(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the slowness is the point
    }
    String::from_utf8_lossy(&first)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_slow_readers_of_a_page_of_large_messages_hold_bounded_memory() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_env(data_dir.path()));
    let client = reqwest::Client::new();
    let tenant = server.post(&client, "/app/", json!({"name": "Acme"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = server
        .post(
            &client,
            &format!("/app/{tenant}/token/"),
            json!({"name": "reader"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = json!({"eventType": "call.started", "payload": {"s": "x".repeat(1_000_000)}});
    for _ in 0..60 {
        server
            .post(&client, &format!("/app/{tenant}/msg/"), payload.clone())
            .await;
    }
    let pid = server.child.id();
    let at_rest = rss_mib(pid);

    let readers: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn(slow_read(
                server.address,
                format!("/api/v1/app/{tenant}/msg/?limit=250"),
                token.clone(),
                Duration::from_secs(4),
            ))
        })
        .collect();
    let mut peak = at_rest;
    while readers.iter().any(|reader| !reader.is_finished()) {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await; // samples the memory
    }
    let mut statuses = Vec::new();
    for reader in readers {
        statuses.push(reader.await.unwrap());
    }
    // The pages are still whole for a client that reads them all.
    let mut listed = 0;
    let mut iterator: Option<String> = None;
    loop {
        let query = iterator
            .as_ref()
            .map_or(String::new(), |i| format!("&iterator={i}"));
        let page = server
            .get(&client, &format!("/app/{tenant}/msg/?limit=250{query}"))
            .await;
        listed += page["data"].as_array().unwrap().len();
        if page["done"] == true {
            break;
        }
        iterator = page["iterator"].as_str().map(str::to_owned);
    }

    let served = statuses.iter().filter(|s| s.contains(" 200 ")).count();
    let refused = statuses.iter().filter(|s| s.contains(" 429 ")).count();
    eprintln!(
        "resident memory: {at_rest:.0} MiB at rest, {peak:.0} MiB at the peak with 32 slow readers ({served} served, {refused} refused)"
    );
    assert_eq!(
        served + refused,
        32,
        "each got a page or a 429: {statuses:?}"
    );
    assert!(served >= 1, "{statuses:?}");
    assert!(
        peak - at_rest < 150.0,
        "32 slow readers grew memory from {at_rest:.0} MiB to {peak:.0} MiB"
    );
    assert_eq!(listed, 60, "every message is listed, over several pages");
}
