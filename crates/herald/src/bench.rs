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

use crate::child::ChildServer;
use crate::config::{Database, Redacted};
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
    /// Run on PostgreSQL: a fresh database is created on this server for the
    /// run and dropped afterwards. Without it, the embedded SQLite is used.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Herald processes sharing the database (PostgreSQL only); the load is
    /// spread over all of them and each delivers what it accepts.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A PostgreSQL database that lives for one bench run.
struct BenchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let name = format!(
            "herald_bench_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(server_url).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        let mut url = url::Url::parse(server_url)?;
        url.set_path(&name);
        Ok(Self {
            server_url: server_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    async fn drop_database(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.server_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
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
    if args.messages == 0 || args.concurrency == 0 || args.fanout == 0 || args.processes == 0 {
        bail!("--messages, --concurrency, --fanout and --processes must be positive");
    }
    if args.processes > 1 && args.database_url.is_none() {
        bail!("--processes above 1 needs --database-url: the embedded database serves one process");
    }
    let data_dir = tempfile::tempdir()?;
    let token = "bench-admin-token-0123456789";
    let database = match &args.database_url {
        Some(url) => Some(BenchDatabase::create(url).await?),
        None => None,
    };
    let mut settings = Settings::for_data_dir(data_dir.path());
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.admin_token = Some(Redacted(token.into()));
    settings.policy = AddressPolicy {
        allow_http: true,
        allow_private_networks: true,
    };
    if let Some(database) = &database {
        settings.database.database = Database::Postgres {
            url: Redacted(database.url.clone()),
            max_connections: 32,
            acquire_timeout: Duration::from_secs(5),
        };
    }
    let application = Application::build(settings).await?;
    let mut bases = vec![format!("http://{}/api/v1", application.address())];
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run(shutdown.clone()));
    let mut children = Vec::new();
    if let Some(database) = &database {
        let env = [
            ("HERALD_DATABASE_URL", database.url.clone()),
            ("HERALD_DATABASE_MAX_CONNECTIONS", "32".to_owned()),
            ("HERALD_LISTEN", "127.0.0.1:0".to_owned()),
            ("HERALD_ADMIN_TOKEN", token.to_owned()),
            ("HERALD_ALLOW_HTTP", "true".to_owned()),
            ("HERALD_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
            ("HERALD_LOG", "warn,herald=info".to_owned()),
        ];
        let program = std::env::current_exe()?;
        for _ in 1..args.processes {
            let child = ChildServer::start(&program, &env)?;
            bases.push(format!("http://{}/api/v1", child.address));
            children.push(child);
        }
    }
    let base = bases[0].clone();

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
        let urls: Vec<String> = bases
            .iter()
            .map(|b| format!("{b}/app/{app_id}/msg/"))
            .collect();
        let total = args.messages;
        senders.spawn(async move {
            let mut failures = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::AcqRel);
                if n >= total {
                    break;
                }
                let url = &urls[n % urls.len()];
                let sent_us = receiver.epoch.elapsed().as_micros() as u64;
                let body = json!({
                    "eventType": "call.completed",
                    "payload": {"sentUs": sent_us, "callId": "call_bench", "padding": padding}
                });
                let ok = client
                    .post(url)
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
        "database": if database.is_some() { "postgres" } else { "sqlite" },
        "processes": args.processes,
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
        println!("scenario                                 msgs/s accepted  deliveries/s  p50 ms  p99 ms  peak RSS MiB  CPU s");
        println!(
            "{:<8} x{} fan-out {:<3} c={:<4} {:>6} msgs  {:>15.0}  {:>12.0}  {:>6.1}  {:>6.1}  {:>12.1}  {:>5.1}",
            if database.is_some() { "postgres" } else { "sqlite" },
            args.processes,
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
            "(RSS and CPU are this process's: load generator, receiver and the first Herald; extra --processes are not counted)"
        );
    }
    shutdown.cancel();
    server.await??;
    drop(children);
    sink_task.abort();
    if let Some(database) = database {
        database.drop_database().await;
    }
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
