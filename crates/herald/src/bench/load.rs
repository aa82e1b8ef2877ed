//! Load generators: closed-loop (N senders, each waiting for its answer)
//! and open-loop (an even rate, whatever the answers take).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::herald::cpu_seconds_of;
use super::sink::Sink;

/// Where messages go: one URL per Herald process, used in turn.
#[derive(Debug, Clone)]
pub struct Target {
    pub urls: Vec<String>,
    pub token: &'static str,
}

/// What the sending side saw.
#[derive(Debug, Default)]
pub struct Sent {
    pub accepted: usize,
    pub rejected: usize,
    pub elapsed: Duration,
    /// Open loop: the refused messages per status (0: no answer) and per
    /// second of sending.
    pub refusals: std::collections::BTreeMap<u16, usize>,
    pub refused_per_second: Vec<usize>,
    /// Open loop: per second of sending, the API's answer times (µs), sorted.
    pub answers_per_second: Vec<Vec<u64>>,
}

pub fn own_cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

fn body(sink: &Sink, padding: &str) -> String {
    json!({
        "eventType": "call.completed",
        "payload": {"sentUs": sink.now_us(), "callId": "call_bench", "padding": padding}
    })
    .to_string()
}

async fn send(client: &reqwest::Client, target: &Target, n: usize, body: String) -> bool {
    status_of(client, target, n, body).await == 202
}

/// The API's answer to one message (0: none).
async fn status_of(client: &reqwest::Client, target: &Target, n: usize, body: String) -> u16 {
    client
        .post(&target.urls[n % target.urls.len()])
        .bearer_auth(target.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[derive(Debug, Clone)]
pub struct ClosedLoop {
    pub messages: usize,
    pub concurrency: usize,
    pub payload_bytes: usize,
}

impl ClosedLoop {
    pub async fn run(&self, target: &Target, sink: &Sink) -> anyhow::Result<Sent> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.concurrency)
            .timeout(REQUEST_LIMIT)
            .build()?;
        let padding = Arc::new("x".repeat(self.payload_bytes.saturating_sub(64)));
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        sink.mark_start();
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..self.concurrency {
            let (client, next, padding, target, sink) = (
                client.clone(),
                next.clone(),
                padding.clone(),
                target.clone(),
                sink.clone(),
            );
            let total = self.messages;
            senders.spawn(async move {
                let mut accepted = 0;
                loop {
                    let n = next.fetch_add(1, Ordering::AcqRel);
                    if n >= total {
                        return accepted;
                    }
                    if send(&client, &target, n, body(&sink, &padding)).await {
                        accepted += 1;
                    }
                }
            });
        }
        let mut accepted = 0;
        while let Some(result) = senders.join_next().await {
            accepted += result?;
        }
        Ok(Sent {
            accepted,
            rejected: self.messages - accepted,
            elapsed: started.elapsed(),
            ..Sent::default()
        })
    }
}

/// How long one message request may take before it counts as unanswered
/// (status 0): a server that stops answering mid-run must not hold the
/// bench.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// Requests the open loop has open at once, at most (each on a connection
/// of its own); the rest wait their turn. Unbounded, a server that slowed
/// down made it open a connection per waiting request until it ran out
/// of descriptors, and the refusals measured the generator.
const MAX_OPEN_REQUESTS: usize = 512;

/// Connections the open loop opens to each Herald before its clock starts.
const WARM_CONNECTIONS: usize = 128;
/// The warm-up's bound: a server that accepts and never answers must not
/// hold the run before it starts (the run itself then shows the trouble).
const WARM_UP_LIMIT: Duration = Duration::from_secs(10);

/// Opens `connections` keep-alive connections to each target (concurrent
/// reads of the app the messages go to) and leaves them idle in `client`'s
/// pool, as `wrk` opens its connections before it starts: otherwise the
/// first second of an open-loop run measures hundreds of TCP handshakes
/// opened at once. (Not the health route: before any message is written
/// it checks the database with a probe write.)
async fn warm_up(client: &reqwest::Client, target: &Target, connections: usize) {
    let mut checks = tokio::task::JoinSet::new();
    for url in &target.urls {
        let Some(app) = url.strip_suffix("msg/") else {
            continue;
        };
        for _ in 0..connections {
            let (client, app) = (client.clone(), app.to_owned());
            let token = target.token;
            checks.spawn(async move {
                if let Ok(answer) = client.get(app).bearer_auth(token).send().await {
                    // Read to the end, so the connection goes back to the pool.
                    let _ = answer.bytes().await;
                }
            });
        }
    }
    while checks.join_next().await.is_some() {}
}

#[derive(Debug, Clone)]
pub struct OpenLoop {
    pub rate: u32,
    pub messages: usize,
    pub payload_bytes: usize,
}

impl OpenLoop {
    /// Starts one request every 1/rate seconds, each on its own task, so a
    /// slow answer never delays the next send (no coordinated omission).
    pub async fn run(&self, target: &Target, sink: &Sink) -> anyhow::Result<Sent> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(REQUEST_LIMIT)
            .build()?;
        let _ =
            tokio::time::timeout(WARM_UP_LIMIT, warm_up(&client, target, WARM_CONNECTIONS)).await;
        let padding = Arc::new("x".repeat(self.payload_bytes.saturating_sub(64)));
        let period = Duration::from_secs_f64(1.0 / f64::from(self.rate.max(1)));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        sink.mark_start();
        let mut requests = tokio::task::JoinSet::new();
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_REQUESTS));
        for n in 0..self.messages {
            ticks.tick().await;
            let (client, target, payload) = (client.clone(), target.clone(), body(sink, &padding));
            let open = open.clone();
            requests.spawn(async move {
                // Timed from its turn, not from when a connection was free:
                // the wait for one is part of the answer time (and of the
                // end-to-end latency, whose clock is in the payload).
                let asked = Instant::now();
                let _open = open.acquire_owned().await;
                let status = status_of(&client, &target, n, payload).await;
                (n, status, asked.elapsed().as_micros() as u64)
            });
        }
        let mut accepted = 0;
        let mut refusals = std::collections::BTreeMap::new();
        let seconds = self.messages / self.rate.max(1) as usize + 1;
        let mut refused_per_second = vec![0; seconds];
        let mut answers_per_second = vec![Vec::new(); seconds];
        while let Some(result) = requests.join_next().await {
            let (n, status, answered_us) = result?;
            let second = n / self.rate.max(1) as usize;
            answers_per_second[second].push(answered_us);
            if status == 202 {
                accepted += 1;
            } else {
                *refusals.entry(status).or_default() += 1;
                refused_per_second[second] += 1;
            }
        }
        Ok(Sent {
            accepted,
            rejected: self.messages - accepted,
            elapsed: started.elapsed(),
            refusals,
            refused_per_second,
            answers_per_second: answers_per_second
                .into_iter()
                .map(|mut answers| {
                    answers.sort_unstable();
                    answers
                })
                .collect(),
        })
    }
}
