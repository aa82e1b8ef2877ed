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
#[derive(Debug)]
pub struct Sent {
    pub accepted: usize,
    pub rejected: usize,
    pub elapsed: Duration,
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
    client
        .post(&target.urls[n % target.urls.len()])
        .bearer_auth(target.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 202)
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
        })
    }
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
            .build()?;
        let padding = Arc::new("x".repeat(self.payload_bytes.saturating_sub(64)));
        let period = Duration::from_secs_f64(1.0 / f64::from(self.rate.max(1)));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        sink.mark_start();
        let mut requests = tokio::task::JoinSet::new();
        for n in 0..self.messages {
            ticks.tick().await;
            let (client, target, payload) = (client.clone(), target.clone(), body(sink, &padding));
            requests.spawn(async move { send(&client, &target, n, payload).await });
        }
        let mut accepted = 0;
        while let Some(result) = requests.join_next().await {
            accepted += usize::from(result?);
        }
        Ok(Sent {
            accepted,
            rejected: self.messages - accepted,
            elapsed: started.elapsed(),
        })
    }
}
