//! The activity-log scenario: `--attempts` attempts on one endpoint, written
//! straight into the run's database (through the store, as the engine writes
//! them), then the API's "latest 50" listings timed with and without each
//! filter: what someone opening the log of a busy endpoint waits for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use herald_domain::{AttemptId, DeliveryStatus, ErrorClass, EventTypeName, Trigger};
use herald_store::{Attempt, AttemptOutcome, Claim, MessageInput, NextStep, Store};

use super::herald::HeraldUnderTest;
use super::sink::Sink;
use super::{BenchArgs, Row};

/// Each message gets this many attempts.
const ATTEMPTS_PER_MESSAGE: usize = 2;
/// Requests timed per listing (after a few unmeasured ones).
const REPETITIONS: usize = 100;
/// The seeded attempts are spread evenly over this span, ending now.
const SPAN_MS: i64 = 7 * 24 * 3600 * 1000;

/// Event types in rotation; `contact.deleted` is the rare one (1 in 100).
const COMMON_TYPES: [&str; 4] = [
    "call.started",
    "call.completed",
    "contact.updated",
    "campaign.started",
];
const RARE_TYPE: &str = "contact.deleted";

fn event_type(message: usize) -> &'static str {
    if message % 100 == 99 {
        RARE_TYPE
    } else {
        COMMON_TYPES[message % COMMON_TYPES.len()]
    }
}

pub(super) async fn activity_log(args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let attempts = args.attempts.max(ATTEMPTS_PER_MESSAGE);
    let messages = attempts / ATTEMPTS_PER_MESSAGE;
    let sink = Sink::start(0).await?;
    let mut herald = HeraldUnderTest::start(args).await?;
    // Herald migrates and seeds the catalog; the app and endpoint are made
    // through the API like any other.
    let target = herald.prepare(&sink, 1).await?;
    let (base, token) = herald.api();
    let client = reqwest::Client::new();
    let app = target.urls[0]
        .trim_end_matches("/msg/")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let endpoints: serde_json::Value = client
        .get(format!("{base}/app/{app}/endpoint/"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let endpoint = endpoints["data"][0]["id"]
        .as_str()
        .context("the bench endpoint")?
        .to_owned();

    let processes = herald.pause();
    let started = Instant::now();
    let store = herald.open_store().await?;
    seed(store.clone(), &app, messages).await?;
    drop(store);
    herald.analyze().await?;
    eprintln!(
        "seeded {} attempts in {:.1} s",
        messages * ATTEMPTS_PER_MESSAGE,
        started.elapsed().as_secs_f64()
    );
    herald.resume(processes)?;
    let (base, token) = herald.api();

    let middle = chrono::DateTime::from_timestamp_millis(now_ms() - SPAN_MS / 2)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let log = format!("{base}/app/{app}/attempt/endpoint/{endpoint}/?limit=50");
    let first: serde_json::Value = get(&client, &log, token).await?;
    let iterator = first["iterator"].as_str().unwrap_or_default().to_owned();
    let message = first["data"][0]["msgId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let queries = [
        ("latest 50", log.clone()),
        ("next page", format!("{log}&iterator={iterator}")),
        ("status=failed", format!("{log}&status=2")),
        ("5xx", format!("{log}&status_code_class=500")),
        ("rare event type", format!("{log}&event_types={RARE_TYPE}")),
        ("before mid-week", format!("{log}&before={middle}")),
        ("with request", format!("{log}&with_request=true")),
        (
            "by message",
            format!("{base}/app/{app}/attempt/msg/{message}/"),
        ),
        (
            "messages, latest 50",
            format!("{base}/app/{app}/msg/?limit=50"),
        ),
    ];
    let mut rows = Vec::new();
    for (name, url) in queries {
        let page = get(&client, &url, token).await?;
        if page["data"].as_array().is_none_or(Vec::is_empty) {
            anyhow::bail!("`{name}` listed nothing: {page}");
        }
        let mut latencies = time(&client, &url, token).await?;
        let mut row = Row::for_run(
            format!("log: {name}"),
            args,
            1,
            messages * ATTEMPTS_PER_MESSAGE,
        );
        row.latency_p50_ms = percentile(&mut latencies, 0.50);
        row.latency_p99_ms = percentile(&mut latencies, 0.99);
        row.herald_peak_rss_mib = herald.peak_rss_mib();
        rows.push(row);
    }
    // The whole log exported, in each format: rows per second, the time
    // it took (as p50) and Herald's peak RSS once it is done, beside the
    // peak before (the listings' row above).
    for format in ["jsonl", "csv"] {
        let started = Instant::now();
        let mut response = client
            .get(format!("{base}/app/{app}/attempt/export/?format={format}"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
        let (mut bytes, mut lines) = (0usize, 0usize);
        let mut saved = match &args.save_exports {
            Some(dir) => Some(std::io::BufWriter::new(std::fs::File::create(
                dir.join(format!("attempts.{format}")),
            )?)),
            None => None,
        };
        while let Some(chunk) = response.chunk().await? {
            bytes += chunk.len();
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            if let Some(file) = &mut saved {
                std::io::Write::write_all(file, &chunk)?;
            }
        }
        if let Some(file) = &mut saved {
            std::io::Write::flush(file)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let exported = if format == "csv" { lines - 1 } else { lines };
        if exported != messages * ATTEMPTS_PER_MESSAGE {
            anyhow::bail!("the {format} export has {exported} rows");
        }
        eprintln!(
            "export {format}: {exported} rows, {:.1} MiB in {seconds:.1} s",
            bytes as f64 / (1024.0 * 1024.0)
        );
        let mut row = Row::for_run(format!("log: export {format}"), args, 1, exported);
        row.delivered_per_second = exported as f64 / seconds;
        row.latency_p50_ms = seconds * 1000.0;
        row.latency_p99_ms = seconds * 1000.0;
        row.herald_peak_rss_mib = herald.peak_rss_mib();
        rows.push(row);
    }
    herald.stop().await;
    Ok(rows)
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Milliseconds per request, one at a time.
async fn time(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Vec<f64>> {
    for _ in 0..5 {
        get(client, url, token).await?;
    }
    let mut latencies = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let started = Instant::now();
        client
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latencies)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `messages` messages to the app's endpoint, each with its attempts: one
/// in five first fails (500, or a timeout one time in four), the rest
/// succeed; a manual resend follows each.
async fn seed(store: Arc<dyn Store>, app: &str, messages: usize) -> anyhow::Result<()> {
    let app = herald_domain::AppId::parse(app)?;
    let end = now_ms();
    let step = SPAN_MS / (messages * ATTEMPTS_PER_MESSAGE) as i64;
    let start = end - SPAN_MS;
    let permits = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for n in 0..messages {
        let permit = permits.clone().acquire_owned().await?;
        let store = store.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let now = now_ms();
            let created = store
                .create_message(
                    app,
                    MessageInput {
                        event_type: EventTypeName::parse(event_type(n))?,
                        event_id: None,
                        payload: json!({"n": n, "callId": format!("call_{n}")}).to_string(),
                        channels: None,
                        to_endpoint: None,
                        filters: Default::default(),
                        deliver_at: None,
                    },
                    Some(Claim::new(now, now + 600_000)),
                    None,
                )
                .await?;
            for job in created.jobs {
                for k in 0..ATTEMPTS_PER_MESSAGE {
                    let failed = k == 0 && n % 5 == 0;
                    let timed_out = failed && n % 20 == 0;
                    let at = start + ((n * ATTEMPTS_PER_MESSAGE + k) as i64) * step;
                    store
                        .record_attempt(AttemptOutcome {
                            lease_until: job.lease_until,
                            attempt: Attempt {
                                id: AttemptId::generate_at(at),
                                app_id: app,
                                message_id: job.message.id,
                                endpoint_id: job.endpoint.id,
                                url: job.endpoint.url.to_string(),
                                status: if failed {
                                    DeliveryStatus::Failed
                                } else {
                                    DeliveryStatus::Succeeded
                                },
                                response_status_code: match (failed, timed_out) {
                                    (_, true) => 0,
                                    (true, false) => 500,
                                    (false, _) => 200,
                                },
                                response: if failed {
                                    "upstream error".into()
                                } else {
                                    "ok".into()
                                },
                                response_duration_ms: 20 + (n % 180) as u64,
                                error_class: match (failed, timed_out) {
                                    (_, true) => Some(ErrorClass::Timeout),
                                    (true, false) => Some(ErrorClass::HttpStatus),
                                    (false, _) => None,
                                },
                                trigger: if k == 0 {
                                    Trigger::Scheduled
                                } else {
                                    Trigger::Manual
                                },
                                created_at: at,
                            },
                            next: if failed {
                                NextStep::RetryAt(end + SPAN_MS)
                            } else {
                                NextStep::Succeeded
                            },
                            disable_endpoint: false,
                        })
                        .await?;
                }
            }
            anyhow::Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
        if n > 0 && n % 100_000 == 0 {
            eprintln!("seeded {} attempts", n * ATTEMPTS_PER_MESSAGE);
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    // Let the store finish its queued writes before it is dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
