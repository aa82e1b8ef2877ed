//! `herald bench`: measures Herald as a separate process (or several) on a
//! throw-away database, driven by a load generator and received by a sink
//! that both live in this process. Each scenario prints one row: throughput,
//! latency from the POST to the sink's receipt, Herald's own peak RSS and
//! CPU, and the generator's CPU so that it can be seen not to be the limit.

mod expressions;
mod herald;
mod load;
mod log;
mod sink;

use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde::Serialize;

use herald::HeraldUnderTest;
use load::{ClosedLoop, OpenLoop, Sent};
use sink::{Delivered, Sink};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// As fast as `--concurrency` senders go: messages/s and deliveries/s.
    Throughput,
    /// An even `--rate` for `--duration`: latency at a given load.
    Steady,
    /// The load generator against a no-op server: its own ceiling.
    Ceiling,
    /// Herald's RSS after start-up with nothing to do.
    Idle,
    /// `--messages` accepted by an API-only Herald, then drained by a full
    /// one: the drain rate of a backlog held in the database.
    Backlog,
    /// `--messages` x `--fanout` deliveries failed once and scheduled an
    /// hour later: Herald's memory with a large backlog of future work.
    Scheduled,
    /// `--endpoints` endpoints (one app each) at `--rate` for `--duration`,
    /// first all healthy, then with `--timeouts` of them hanging past the
    /// timeout and `--failing` answering 500: the healthy ones' latency.
    Isolation,
    /// `--attempts` attempts on one endpoint, then the activity log's
    /// latest-50 listings timed, with and without each filter (one row each).
    ActivityLog,
    /// In process: an endpoint filter's and transformation's cost per
    /// message (`--messages` evaluations), beside building the envelope.
    Expressions,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure; repeat the flag for several rows in one run.
    #[arg(long, value_enum, default_values_t = [Scenario::Throughput])]
    pub scenario: Vec<Scenario>,
    /// Messages to send (throughput, ceiling).
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Concurrent API requests (throughput, ceiling).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Messages per second (steady).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Seconds of load (steady).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Endpoints per app; each message is delivered to all of them.
    #[arg(long, default_value_t = 1)]
    pub fanout: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Endpoints (isolation).
    #[arg(long, default_value_t = 1_000)]
    pub endpoints: usize,
    /// Endpoints that answer only after the timeout (isolation).
    #[arg(long, default_value_t = 100)]
    pub timeouts: usize,
    /// Endpoints that answer 500 (isolation).
    #[arg(long, default_value_t = 100)]
    pub failing: usize,
    /// Run on PostgreSQL: a fresh database is created on this server for the
    /// run and dropped afterwards. Without it, the embedded SQLite is used.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Herald processes sharing the database (PostgreSQL only); the load is
    /// spread over all of them and each delivers what it accepts.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Attempts seeded (activity-log).
    #[arg(long, default_value_t = 1_000_000)]
    pub attempts: usize,
    /// Also write the activity-log scenario's exports here
    /// (`attempts.jsonl`, `attempts.csv`), to check them with other tools.
    #[arg(long, value_name = "DIR")]
    pub save_exports: Option<std::path::PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run this binary as the server (`PATH serve`) instead of this one:
    /// two builds measured with the same load generator and sink.
    #[arg(long, value_name = "PATH")]
    pub server: Option<std::path::PathBuf>,
    /// steady: also print, per second of sending, the deliveries and their
    /// p50, p99 and worst latency, the refusals, the API's answer times and
    /// the CPU the hypervisor stole (to stderr), to see when a tail happens
    /// and whether the machine caused it.
    #[arg(long)]
    pub timeline: bool,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub scenario: String,
    pub database: &'static str,
    pub processes: usize,
    pub fanout: usize,
    pub messages: usize,
    pub accepted_per_second: f64,
    pub delivered_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Herald's peak resident set (the largest of its processes).
    pub herald_peak_rss_mib: f64,
    /// Herald's CPU time, all processes, during the measurement.
    pub herald_cpu_seconds: f64,
    /// The load generator's and sink's CPU time (this process).
    pub generator_cpu_seconds: f64,
    /// The CPU time of the PostgreSQL server's processes on this machine
    /// (all of them, whichever database they serve) during the
    /// measurement; 0 on SQLite, whose work is counted in Herald's.
    pub database_cpu_seconds: f64,
    /// CPU time the hypervisor took from this machine during the
    /// measurement (all CPUs): runs are comparable when it is similar.
    pub steal_seconds: f64,
    /// From the end of the load (the last message accepted) to the last
    /// delivery: how long the backlog took to drain.
    pub drain_seconds: f64,
    /// Deliveries that arrived more than once.
    pub duplicates: u64,
    /// Messages the API refused (429 or 503: overload), never delivered.
    pub refused: usize,
    /// Deliveries Herald claimed from the database (retries, overflow),
    /// and those it gave back unsent (an endpoint's share was full): how
    /// much of the work took the slow path (`/metrics`, all processes).
    pub claimed: u64,
    pub given_back: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.concurrency == 0 || args.fanout == 0 || args.processes == 0 {
        bail!("--messages, --concurrency, --fanout and --processes must be positive");
    }
    if args.processes > 1 && args.database_url.is_none() {
        bail!("--processes above 1 needs --database-url: the embedded database serves one process");
    }
    let mut rows = Vec::new();
    for scenario in &args.scenario {
        let row = match scenario {
            Scenario::Throughput => throughput(&args).await?,
            Scenario::Steady => steady(&args).await?,
            Scenario::Ceiling => ceiling(&args).await?,
            Scenario::Idle => idle(&args).await?,
            Scenario::Backlog => backlog(&args).await?,
            Scenario::Scheduled => scheduled(&args).await?,
            Scenario::ActivityLog => {
                let listed = log::activity_log(&args).await?;
                all_but_last(&args, &mut rows, listed)
            }
            Scenario::Expressions => {
                let measured = expressions::expressions(&args)?;
                all_but_last(&args, &mut rows, measured)
            }
            Scenario::Isolation => {
                let baseline = isolation(&args, 0, 0).await?;
                if !args.json {
                    if rows.is_empty() {
                        print_header();
                    }
                    print_row(&baseline);
                }
                rows.push(baseline);
                isolation(&args, args.timeouts, args.failing).await?
            }
        };
        if !args.json {
            if rows.is_empty() {
                print_header();
            }
            print_row(&row);
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// A scenario's rows but its last reported (and kept), the last returned
/// (to be reported like any scenario's one row).
fn all_but_last(args: &BenchArgs, rows: &mut Vec<Row>, mut measured: Vec<Row>) -> Row {
    let last = measured
        .pop()
        .expect("a scenario measures at least one row");
    for row in measured {
        if !args.json {
            if rows.is_empty() {
                print_header();
            }
            print_row(&row);
        }
        rows.push(row);
    }
    last
}

fn database_name(args: &BenchArgs) -> &'static str {
    if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

impl Row {
    /// A row with nothing measured yet.
    fn new(
        scenario: String,
        database: &'static str,
        processes: usize,
        fanout: usize,
        messages: usize,
    ) -> Self {
        Self {
            scenario,
            database,
            processes,
            fanout,
            messages,
            accepted_per_second: 0.0,
            delivered_per_second: 0.0,
            latency_p50_ms: f64::NAN,
            latency_p99_ms: f64::NAN,
            herald_peak_rss_mib: 0.0,
            herald_cpu_seconds: 0.0,
            generator_cpu_seconds: 0.0,
            database_cpu_seconds: 0.0,
            steal_seconds: 0.0,
            drain_seconds: 0.0,
            duplicates: 0,
            claimed: 0,
            given_back: 0,
            refused: 0,
        }
    }

    fn for_run(scenario: String, args: &BenchArgs, fanout: usize, messages: usize) -> Self {
        Self::new(
            scenario,
            database_name(args),
            args.processes,
            fanout,
            messages,
        )
    }

    fn sent(mut self, sent: &Sent) -> Self {
        self.accepted_per_second = sent.accepted as f64 / sent.elapsed.as_secs_f64();
        self.refused = sent.rejected;
        // Until `delivered` says when the last delivery came.
        self.drain_seconds = -sent.elapsed.as_secs_f64();
        self
    }

    fn delivered(mut self, delivered: &Delivered, with_latency: bool) -> Self {
        self.delivered_per_second = delivered.count as f64 / delivered.elapsed.as_secs_f64();
        self.drain_seconds = (self.drain_seconds + delivered.elapsed.as_secs_f64()).max(0.0);
        if with_latency {
            self.latency_p50_ms = delivered.percentile(0.50);
            self.latency_p99_ms = delivered.percentile(0.99);
        }
        self.duplicates = delivered.duplicates;
        self
    }

    /// Reads what Herald claimed and gave back from its `/metrics`.
    async fn count_claims(&mut self, herald: &HeraldUnderTest) {
        self.claimed = herald.counter("herald_deliveries_claimed_total").await;
        self.given_back = herald.counter("herald_deliveries_given_back_total").await;
    }

    fn cpu(mut self, meter: &Meter, herald: &HeraldUnderTest) -> Self {
        self.herald_cpu_seconds = herald.cpu_seconds() - meter.herald;
        self.generator_cpu_seconds = load::own_cpu_seconds() - meter.generator;
        if self.database == "postgres" {
            self.database_cpu_seconds = herald::postgres_cpu_seconds() - meter.database;
        }
        self.steal_seconds = herald::stolen_cpu_seconds() - meter.steal;
        self
    }
}

/// Reads the machine's stolen CPU time every second while a load runs.
struct StealSampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StealSampler {
    fn start() -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let written = samples.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let now = herald::stolen_cpu_seconds();
                written.lock().expect("steal samples").push(now);
            }
        });
        Self { samples, task }
    }

    /// The CPU seconds stolen in each second since the start.
    fn per_second(self) -> Vec<f64> {
        self.task.abort();
        let samples = self.samples.lock().expect("steal samples");
        samples.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// CPU counters at the start of a measurement.
struct Meter {
    herald: f64,
    generator: f64,
    database: f64,
    steal: f64,
}

impl Meter {
    fn start(herald: &HeraldUnderTest) -> Self {
        Self {
            herald: herald.cpu_seconds(),
            generator: load::own_cpu_seconds(),
            database: herald::postgres_cpu_seconds(),
            steal: herald::stolen_cpu_seconds(),
        }
    }
}

fn closed_loop(args: &BenchArgs) -> ClosedLoop {
    ClosedLoop {
        messages: args.messages,
        concurrency: args.concurrency,
        payload_bytes: args.payload_bytes,
    }
}

/// Fails the run unless every delivery arrived; the row measured so far
/// is printed first (to stderr), so that an overloaded run still shows
/// how far it got.
fn require_all(row: &Row, delivered: &Delivered, expected: usize) -> anyhow::Result<()> {
    if !delivered.complete {
        eprintln!("{}", header_line());
        eprintln!("{}", row_line(row));
        bail!("only {} of {expected} deliveries arrived", delivered.count);
    }
    Ok(())
}

async fn throughput(args: &BenchArgs) -> anyhow::Result<Row> {
    let expected = args.messages * args.fanout;
    let sink = Sink::start(expected).await?;
    let herald = HeraldUnderTest::start(args).await?;
    let target = herald.prepare(&sink, args.fanout).await?;
    let meter = Meter::start(&herald);
    let sent = closed_loop(args).run(&target, &sink).await?;
    let delivered = sink
        .wait_for_all(Duration::from_secs(120 + args.messages as u64 / 100))
        .await;
    let mut row = Row::for_run(
        format!("throughput c={}", args.concurrency),
        args,
        args.fanout,
        args.messages,
    )
    .sent(&sent)
    .delivered(&delivered, true)
    .cpu(&meter, &herald);
    row.herald_peak_rss_mib = herald.peak_rss_mib();
    row.count_claims(&herald).await;
    herald.stop().await;
    require_all(&row, &delivered, expected)?;
    if sent.rejected > 0 {
        bail!("{} messages were not accepted", sent.rejected);
    }
    Ok(row)
}

async fn steady(args: &BenchArgs) -> anyhow::Result<Row> {
    let messages = args.rate as usize * args.duration as usize;
    let sink = Sink::start(messages * args.fanout).await?;
    let herald = HeraldUnderTest::start(args).await?;
    let target = herald.prepare(&sink, args.fanout).await?;
    let meter = Meter::start(&herald);
    let load = OpenLoop {
        rate: args.rate,
        messages,
        payload_bytes: args.payload_bytes,
    };
    let steal = args.timeline.then(StealSampler::start);
    let sent = load.run(&target, &sink).await?;
    let steal = steal.map(StealSampler::per_second).unwrap_or_default();
    // Messages the API refused (429/503 under overload) are never
    // delivered: the wait is for the accepted ones, and the row says how
    // many were refused.
    let expected = sent.accepted * args.fanout;
    sink.expect(expected);
    let delivered = sink.wait_for_all(Duration::from_secs(120)).await;
    if args.timeline {
        eprintln!("refused by status (0: no answer): {:?}", sent.refusals);
        eprintln!(
            "second deliveries p50_ms p99_ms max_ms refused answer_p50_ms answer_p99_ms steal_s"
        );
        for (second, count, p50, p99, max) in delivered.timeline() {
            let at = second as usize;
            let refused = sent.refused_per_second.get(at).unwrap_or(&0);
            let answers = sent
                .answers_per_second
                .get(at)
                .map_or(&[][..], Vec::as_slice);
            let answer = |p| sink::percentile_ms(answers, p);
            eprintln!(
                "{second} {count} {p50:.1} {p99:.1} {max:.1} {refused} {:.1} {:.1} {:.2}",
                answer(0.5),
                answer(0.99),
                steal.get(at).copied().unwrap_or(f64::NAN)
            );
        }
    }
    let scenario = format!("steady {}/s for {} s", args.rate, args.duration);
    let mut row = Row::for_run(scenario, args, args.fanout, messages)
        .sent(&sent)
        .delivered(&delivered, true)
        .cpu(&meter, &herald);
    row.herald_peak_rss_mib = herald.peak_rss_mib();
    row.count_claims(&herald).await;
    herald.stop().await;
    require_all(&row, &delivered, expected)?;
    Ok(row)
}

/// The same closed-loop load aimed at the sink's no-op route: what the
/// generator can send when the server costs nothing.
async fn ceiling(args: &BenchArgs) -> anyhow::Result<Row> {
    let sink = Sink::start(0).await?;
    let generator = load::own_cpu_seconds();
    let sent = closed_loop(args).run(&sink.noop_target(), &sink).await?;
    let mut row = Row::new(
        format!("generator ceiling c={}", args.concurrency),
        "none",
        0,
        0,
        args.messages,
    )
    .sent(&sent);
    row.generator_cpu_seconds = load::own_cpu_seconds() - generator;
    Ok(row)
}

async fn idle(args: &BenchArgs) -> anyhow::Result<Row> {
    let herald = HeraldUnderTest::start(args).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut row = Row::for_run("idle for 3 s".into(), args, 0, 0);
    row.herald_peak_rss_mib = herald.current_rss_mib();
    row.herald_cpu_seconds = herald.cpu_seconds();
    herald.stop().await;
    Ok(row)
}

async fn backlog(args: &BenchArgs) -> anyhow::Result<Row> {
    let expected = args.messages * args.fanout;
    let sink = Sink::start(expected).await?;
    let mut herald = HeraldUnderTest::start_with(args, &[("HERALD_ROLE", "api".into())]).await?;
    let target = herald.prepare(&sink, args.fanout).await?;
    let sent = closed_loop(args).run(&target, &sink).await?;
    herald.restart_with(&[("HERALD_ROLE", "all".into())])?;
    sink.restart_clock();
    let meter = Meter::start(&herald);
    let delivered = sink.wait_for_all(Duration::from_secs(600)).await;
    let mut row = Row::for_run(
        format!("backlog of {expected} drained"),
        args,
        args.fanout,
        args.messages,
    )
    .sent(&sent)
    .delivered(&delivered, false)
    .cpu(&meter, &herald);
    row.herald_peak_rss_mib = herald.peak_rss_mib();
    row.count_claims(&herald).await;
    herald.stop().await;
    require_all(&row, &delivered, expected)?;
    Ok(row)
}

async fn scheduled(args: &BenchArgs) -> anyhow::Result<Row> {
    let expected = args.messages * args.fanout;
    let sink = Sink::start_counting(expected, true).await?;
    let herald =
        HeraldUnderTest::start_with(args, &[("HERALD_RETRY_SCHEDULE", "1h".into())]).await?;
    let target = herald.prepare_on(&sink, "/fail", args.fanout).await?;
    let meter = Meter::start(&herald);
    let sent = closed_loop(args).run(&target, &sink).await?;
    let attempted = sink.wait_for_all(Duration::from_secs(600)).await;
    // Let the last attempt records land before reading the memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut row = Row::for_run(
        format!("{expected} scheduled for later"),
        args,
        args.fanout,
        args.messages,
    )
    .sent(&sent)
    .delivered(&attempted, false)
    .cpu(&meter, &herald);
    row.herald_peak_rss_mib = herald.current_rss_mib();
    herald.stop().await;
    require_all(&row, &attempted, expected)?;
    Ok(row)
}

/// Steady load over many endpoints, `timeouts` of which hang and `failing`
/// of which answer 500; latency is measured on the healthy ones only.
async fn isolation(args: &BenchArgs, timeouts: usize, failing: usize) -> anyhow::Result<Row> {
    let endpoints = args.endpoints.max(timeouts + failing + 1);
    let messages = args.rate as usize * args.duration as usize;
    let healthy_from = timeouts + failing;
    let healthy = (0..messages)
        .filter(|n| n % endpoints >= healthy_from)
        .count();
    let routes: Vec<&str> = (0..endpoints)
        .map(|n| match n {
            n if n < timeouts => "/slow",
            n if n < healthy_from => "/fail",
            _ => "/hook",
        })
        .collect();
    let sink = Sink::start(healthy).await?;
    let herald = HeraldUnderTest::start(args).await?;
    let target = herald.prepare_apps(&sink, &routes).await?;
    let meter = Meter::start(&herald);
    let load = OpenLoop {
        rate: args.rate,
        messages,
        payload_bytes: args.payload_bytes,
    };
    let sent = load.run(&target, &sink).await?;
    let delivered = sink.wait_for_all(Duration::from_secs(120)).await;
    let scenario = format!("isolation {timeouts} hang {failing} fail of {endpoints}");
    let mut row = Row::for_run(scenario, args, 1, messages)
        .sent(&sent)
        .delivered(&delivered, true)
        .cpu(&meter, &herald);
    row.herald_peak_rss_mib = herald.peak_rss_mib();
    herald.stop().await;
    require_all(&row, &delivered, healthy)?;
    Ok(row)
}

fn print_header() {
    println!("{}", header_line());
}

fn header_line() -> String {
    format!(
        "{:<28} {:<8} {:>2} {:>4} {:>7} {:>10} {:>11} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "scenario",
        "database",
        "p",
        "fan",
        "msgs",
        "accepted/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "CPU s",
        "gen CPU",
        "DB CPU",
        "drain s",
        "refused",
        "steal s"
    )
}

fn print_row(row: &Row) {
    println!("{}", row_line(row));
}

fn row_line(row: &Row) -> String {
    format!(
        "{:<28} {:<8} {:>2} {:>4} {:>7} {:>10.0} {:>11.0} {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.2} {:>8} {:>7.1}",
        row.scenario,
        row.database,
        row.processes,
        row.fanout,
        row.messages,
        row.accepted_per_second,
        row.delivered_per_second,
        row.latency_p50_ms,
        row.latency_p99_ms,
        row.herald_peak_rss_mib,
        row.herald_cpu_seconds,
        row.generator_cpu_seconds,
        row.database_cpu_seconds,
        row.drain_seconds,
        row.refused,
        row.steal_seconds
    )
}
