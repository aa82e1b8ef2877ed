//! `herald bench`: starts Herald on a temporary database plus a local
//! receiver in this process, sends messages with a given concurrency to a
//! given number of endpoints, and reports throughput and latency from the
//! POST to the receiver's receipt.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use herald_domain::AddressPolicy;

use crate::{Application, Settings};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Concurrent API requests.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Endpoints per app; each message is delivered to all of them.
    #[arg(long, default_value_t = 1)]
    pub fanout: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug)]
struct Receiver {
    epoch: Instant,
    received: AtomicU64,
    expected: u64,
    latencies_us: Mutex<Vec<u64>>,
    done: Notify,
}

#[derive(Deserialize)]
struct Probe {
    data: ProbeData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbeData {
    sent_us: u64,
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: Bytes) -> &'static str {
    let now = receiver.epoch.elapsed().as_micros() as u64;
    if let Ok(probe) = serde_json::from_slice::<Probe>(&body) {
        receiver
            .latencies_us
            .lock()
            .expect("latency lock")
            .push(now.saturating_sub(probe.data.sent_us));
    }
    if receiver.received.fetch_add(1, Ordering::AcqRel) + 1 >= receiver.expected {
        receiver.done.notify_one();
    }
    ""
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.concurrency == 0 || args.fanout == 0 {
        bail!("--messages, --concurrency and --fanout must be positive");
    }
    let data_dir = tempfile::tempdir()?;
    let token = "bench-admin-token-0123456789";
    let mut settings = Settings::for_data_dir(data_dir.path());
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.admin_token = Some(crate::config::Redacted(token.into()));
    settings.policy = AddressPolicy {
        allow_http: true,
        allow_private_networks: true,
    };
    let application = Application::build(settings).await?;
    let base = format!("http://{}/api/v1", application.address());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run(shutdown.clone()));

    let receiver = Arc::new(Receiver {
        epoch: Instant::now(),
        received: AtomicU64::new(0),
        expected: (args.messages * args.fanout) as u64,
        latencies_us: Mutex::new(Vec::with_capacity(args.messages * args.fanout)),
        done: Notify::new(),
    });
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_address = sink.local_addr()?;
    let sink_app = Router::new()
        .route("/hook/{n}", post(receive))
        .with_state(receiver.clone());
    let sink_task = tokio::spawn(async move { axum::serve(sink, sink_app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let app: serde_json::Value = client
        .post(format!("{base}/app/"))
        .bearer_auth(token)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let app_id = app["id"].as_str().context("app id")?.to_owned();
    for n in 0..args.fanout {
        client
            .post(format!("{base}/app/{app_id}/endpoint/"))
            .bearer_auth(token)
            .json(&json!({"url": format!("http://{sink_address}/hook/{n}")}))
            .send()
            .await?
            .error_for_status()?;
    }

    let padding = "x".repeat(args.payload_bytes.saturating_sub(64));
    let next = Arc::new(AtomicUsize::new(0));
    let rss_before = peak_rss_kib();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, next, receiver, padding) = (
            client.clone(),
            next.clone(),
            receiver.clone(),
            padding.clone(),
        );
        let url = format!("{base}/app/{app_id}/msg/");
        let total = args.messages;
        senders.spawn(async move {
            let mut failures = 0usize;
            while next.fetch_add(1, Ordering::AcqRel) < total {
                let sent_us = receiver.epoch.elapsed().as_micros() as u64;
                let body = json!({
                    "eventType": "call.completed",
                    "payload": {"sentUs": sent_us, "callId": "call_bench", "padding": padding}
                });
                let ok = client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202);
                if !ok {
                    failures += 1;
                }
            }
            failures
        });
    }
    let mut failures = 0;
    while let Some(result) = senders.join_next().await {
        failures += result?;
    }
    let accepted_after = started.elapsed();
    let deadline = Duration::from_secs(60 + args.messages as u64 / 100);
    let all_received = tokio::time::timeout(deadline, async {
        while receiver.received.load(Ordering::Acquire) < receiver.expected {
            receiver.done.notified().await;
        }
    })
    .await
    .is_ok();
    let delivered_after = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;

    let received = receiver.received.load(Ordering::Acquire);
    let mut latencies = std::mem::take(&mut *receiver.latencies_us.lock().expect("latency lock"));
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index] as f64 / 1000.0
    };
    let accepted = (args.messages - failures) as f64;
    let report = json!({
        "messages": args.messages,
        "fanout": args.fanout,
        "concurrency": args.concurrency,
        "payloadBytes": args.payload_bytes,
        "rejected": failures,
        "received": received,
        "complete": all_received,
        "acceptedPerSecond": accepted / accepted_after.as_secs_f64(),
        "deliveredPerSecond": received as f64 / delivered_after.as_secs_f64(),
        "latencyP50Ms": percentile(0.50),
        "latencyP99Ms": percentile(0.99),
        "peakRssMiB": peak_rss_kib() as f64 / 1024.0,
        "rssBeforeLoadMiB": rss_before as f64 / 1024.0,
        "cpuSeconds": cpu,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("scenario                        msgs/s accepted  deliveries/s  p50 ms  p99 ms  peak RSS MiB  CPU s");
        println!(
            "fan-out {:<3} c={:<4} {:>6} msgs  {:>15.0}  {:>12.0}  {:>6.1}  {:>6.1}  {:>12.1}  {:>5.1}",
            args.fanout,
            args.concurrency,
            args.messages,
            report["acceptedPerSecond"].as_f64().unwrap_or_default(),
            report["deliveredPerSecond"].as_f64().unwrap_or_default(),
            percentile(0.50),
            percentile(0.99),
            peak_rss_kib() as f64 / 1024.0,
            cpu
        );
        println!(
            "(one process: load generator, Herald and receiver share the RSS and CPU figures)"
        );
    }
    shutdown.cancel();
    server.await??;
    sink_task.abort();
    if !all_received {
        bail!(
            "only {received} of {} deliveries arrived",
            receiver.expected
        );
    }
    Ok(())
}

/// Peak resident set size of this process (VmHWM), in KiB; 0 where unknown.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in seconds (Linux, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}
