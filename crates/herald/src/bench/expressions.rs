//! The expressions scenario: what an endpoint's filter and transformation
//! cost per message, in process (no HTTP, no database), beside what every
//! message costs anyway (building the envelope). The payload is the
//! catalog's `call.completed` example, padded to `--payload-bytes`.
//!
//! The last two rows time the worst case, an expression stopped by its
//! budget (`--messages` / 100 evaluations, at least 100).
//!
//! One row per step, each timed over `--messages` evaluations in batches
//! of 1,000: `acceptedPerSecond` is evaluations per second, `latencyP50Ms`
//! and `latencyP99Ms` the per-evaluation time of the median and 99th
//! percentile batch.

use std::time::Instant;

use anyhow::Context;

use herald_domain::expr;
use herald_domain::{AppId, DeliveryOptions, EventTypeName, MessageId};
use herald_store::Message;

use super::{BenchArgs, Row};

/// The filter measured: the issue's "inbound calls only", and a long one.
pub const FILTER: &str = r#"data.direction == "inbound" && data.durationSeconds > 60"#;
/// The transformation measured: the Slack body of the README.
pub const TRANSFORMATION: &str =
    r#"{"text": "Call " + data.callId + " completed in " + string(data.durationSeconds) + " s"}"#;

const BATCH: usize = 1_000;

fn message(payload_bytes: usize) -> anyhow::Result<Message> {
    let example = herald_domain::catalog::builtin()
        .into_iter()
        .find(|e| e.name == "call.completed")
        .context("the catalog has call.completed")?
        .example;
    let mut payload = example;
    let size = payload.to_string().len();
    if payload_bytes > size + 16 {
        payload["notes"] = "x".repeat(payload_bytes - size - 12).into();
    }
    Ok(Message {
        id: MessageId::generate(),
        app_id: AppId::generate(),
        event_id: None,
        event_type: EventTypeName::parse("call.completed")?,
        payload: payload.to_string(),
        channels: None,
        created_at: chrono::Utc::now().timestamp_millis(),
    })
}

fn timed(name: &str, count: usize, mut step: impl FnMut() -> usize) -> Row {
    let mut per_batch: Vec<f64> = Vec::new();
    let mut checksum = 0usize;
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let batch = BATCH.min(count - done);
        let at = Instant::now();
        for _ in 0..batch {
            checksum = checksum.wrapping_add(step());
        }
        per_batch.push(at.elapsed().as_secs_f64() * 1000.0 / batch as f64);
        done += batch;
    }
    let elapsed = started.elapsed().as_secs_f64();
    per_batch.sort_by(f64::total_cmp);
    let at = |q: f64| per_batch[((per_batch.len() - 1) as f64 * q).round() as usize];
    let mut row = Row::new(format!("expressions:{name}"), "none", 1, 1, count);
    row.accepted_per_second = count as f64 / elapsed;
    row.delivered_per_second = row.accepted_per_second;
    row.latency_p50_ms = at(0.5);
    row.latency_p99_ms = at(0.99);
    // Keeps the work from being optimised away.
    row.duplicates = (checksum % 2) as u64;
    row
}

pub fn expressions(args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let message = message(args.payload_bytes)?;
    let filter = expr::compile(FILTER)?;
    let transformation = expr::compile(TRANSFORMATION)?;
    let options = DeliveryOptions {
        transformation: Some(TRANSFORMATION.into()),
        ..DeliveryOptions::default()
    };
    let subject = || message.subject().expect("the example is JSON");
    let parsed = subject();
    let count = args.messages;
    // The worst an expression can do: a nested comprehension over a
    // thousand items (a million steps), stopped by the budget.
    let items: Vec<u32> = (0..1000).collect();
    let big = serde_json::json!({ "items": items });
    let greedy = expr::compile("data.items.map(x, data.items.map(y, x * y)).size() > 0")?;
    let greedy_input = expr::Input {
        event_type: "call.completed",
        data: &big,
        channels: &[],
        event_id: None,
        timestamp: "2026-12-02T00:00:00.000Z",
    };
    let stopped = (count / 100).max(100);
    Ok(vec![
        timed("envelope", count, || {
            herald_dispatch::build_body(&message).len()
        }),
        timed("parse-payload", count, || subject().input().timestamp.len()),
        timed("filter", count, || {
            usize::from(filter.matches(&parsed.input()).unwrap_or(false))
        }),
        timed("transformation", count, || {
            transformation
                .render(&parsed.input())
                .map_or(0, |b| b.len())
        }),
        // What a transformed endpoint's attempt does in all: the program
        // from the cache, the payload parsed, the body rendered.
        timed("transformed-body", count, || {
            herald_dispatch::endpoint_body(&message, &options, Default::default)
                .map_or(0, |b| b.len())
        }),
        // How long until the budget stops it: a filter (10,000 units) and a
        // transformation (100,000).
        timed("greedy-filter-stopped", stopped, || {
            usize::from(greedy.matches(&greedy_input) == Err(expr::EvalError::Budget))
        }),
        timed("greedy-transformation-stopped", stopped, || {
            usize::from(greedy.render(&greedy_input) == Err(expr::EvalError::Budget))
        }),
    ])
}
