//! The receiving side: an HTTP server in the bench process that records when
//! each webhook arrives, plus a no-op route for measuring the generator.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tokio::sync::Notify;

use super::load::Target;

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    /// Whether refused (500) deliveries count towards `expected`.
    count_refused: bool,
    expected: AtomicU64,
    received: AtomicU64,
    /// (sent at, latency), µs since `epoch`, per delivery with a probe.
    latencies_us: Mutex<Vec<(u64, u64)>>,
    seen: Mutex<HashSet<(String, String)>>,
    duplicates: AtomicU64,
    first: Mutex<Option<Instant>>,
    done: Notify,
}

#[derive(Debug, Clone)]
pub struct Sink {
    address: SocketAddr,
    shared: Arc<Shared>,
    _server: Arc<ServerTask>,
}

#[derive(Debug)]
struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// What arrived.
#[derive(Debug)]
pub struct Delivered {
    pub count: u64,
    pub duplicates: u64,
    pub complete: bool,
    /// From the first message sent to the last delivery received.
    pub elapsed: Duration,
    latencies_us: Vec<u64>,
    /// (sent at, latency) in µs, in the order they arrived.
    samples_us: Vec<(u64, u64)>,
}

/// The `p` quantile (nearest rank) of sorted µs values, in ms; NaN when
/// there are none.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[index] as f64 / 1000.0
}

impl Delivered {
    pub fn percentile(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    /// Per second of sending: deliveries, p50, p99 and the worst latency
    /// (ms) of the messages sent in it, from the first message's second.
    pub fn timeline(&self) -> Vec<(u64, usize, f64, f64, f64)> {
        let Some(first) = self.samples_us.iter().map(|(sent, _)| *sent).min() else {
            return Vec::new();
        };
        let mut seconds: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for (sent, latency) in &self.samples_us {
            seconds
                .entry((sent - first) / 1_000_000)
                .or_default()
                .push(*latency);
        }
        seconds
            .into_iter()
            .map(|(second, mut latencies)| {
                latencies.sort_unstable();
                let at = |p| percentile_ms(&latencies, p);
                (second, latencies.len(), at(0.5), at(0.99), at(1.0))
            })
            .collect()
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(endpoint): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = shared.epoch.elapsed().as_micros() as u64;
    if let Ok(probe) = serde_json::from_slice::<Probe>(&body) {
        shared
            .latencies_us
            .lock()
            .expect("latencies")
            .push((probe.data.sent_us, now.saturating_sub(probe.data.sent_us)));
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !shared.seen.lock().expect("seen").insert((id, endpoint)) {
        shared.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    if shared.received.fetch_add(1, Ordering::AcqRel) + 1 >= shared.expected.load(Ordering::Acquire)
    {
        shared.done.notify_one();
    }
    StatusCode::NO_CONTENT
}

/// Refuses with 500, driving deliveries into retry; counted like `receive`
/// when the sink was started to count refusals.
async fn refuse(
    state: State<Arc<Shared>>,
    endpoint: axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if state.count_refused {
        receive(state, endpoint, headers, body).await;
    }
    StatusCode::INTERNAL_SERVER_ERROR
}

/// Answers only after Herald's timeout has passed.
async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(20)).await;
    StatusCode::NO_CONTENT
}

async fn noop() -> (StatusCode, &'static str) {
    (StatusCode::ACCEPTED, "{\"id\":\"msg_noop\"}")
}

impl Sink {
    /// A sink expecting `expected` deliveries to `/hook`.
    pub async fn start(expected: usize) -> anyhow::Result<Self> {
        Self::start_counting(expected, false).await
    }

    /// A sink expecting `expected` deliveries, counting those refused on
    /// `/fail` too when `count_refused`.
    pub async fn start_counting(expected: usize, count_refused: bool) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            count_refused,
            expected: AtomicU64::new(expected as u64),
            received: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::with_capacity(expected)),
            seen: Mutex::new(HashSet::with_capacity(expected)),
            duplicates: AtomicU64::new(0),
            first: Mutex::new(None),
            done: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = Router::new()
            .route("/hook/{endpoint}", post(receive))
            .route("/fail/{endpoint}", post(refuse))
            .route("/slow/{endpoint}", post(hang))
            .route("/noop", post(noop))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            shared,
            _server: Arc::new(ServerTask(server)),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Microseconds since the sink started: the clock payloads carry.
    pub fn now_us(&self) -> u64 {
        self.shared.epoch.elapsed().as_micros() as u64
    }

    /// Notes when the first message was sent.
    pub fn mark_start(&self) {
        self.shared
            .first
            .lock()
            .expect("first")
            .get_or_insert_with(Instant::now);
    }
    /// Measures from now on: for draining work queued before.
    pub fn restart_clock(&self) {
        *self.shared.first.lock().expect("first") = Some(Instant::now());
    }

    pub fn noop_target(&self) -> Target {
        Target {
            urls: vec![self.url("/noop")],
            token: "none",
        }
    }

    /// Expects `expected` deliveries in all after all (an open-loop load
    /// learns how many of its messages were accepted only at its end).
    pub fn expect(&self, expected: usize) {
        self.shared
            .expected
            .store(expected as u64, Ordering::Release);
        self.shared.done.notify_one();
    }

    pub async fn wait_for_all(&self, limit: Duration) -> Delivered {
        let complete = tokio::time::timeout(limit, async {
            while self.shared.received.load(Ordering::Acquire)
                < self.shared.expected.load(Ordering::Acquire)
            {
                self.shared.done.notified().await;
            }
        })
        .await
        .is_ok();
        let started = (*self.shared.first.lock().expect("first")).unwrap_or_else(Instant::now);
        let samples_us = std::mem::take(&mut *self.shared.latencies_us.lock().expect("latencies"));
        let mut latencies_us: Vec<u64> = samples_us.iter().map(|(_, latency)| *latency).collect();
        latencies_us.sort_unstable();
        Delivered {
            count: self.shared.received.load(Ordering::Acquire),
            duplicates: self.shared.duplicates.load(Ordering::Acquire),
            complete,
            elapsed: started.elapsed(),
            latencies_us,
            samples_us,
        }
    }
}
