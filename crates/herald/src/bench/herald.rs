//! The Herald under test: one or more `herald serve` child processes on a
//! throw-away database, observed through /proc.

use serde_json::json;

use crate::child::ChildServer;

use super::load::Target;
use super::sink::Sink;
use super::BenchArgs;

const TOKEN: &str = "bench-admin-token-0123456789";

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

    /// What autovacuum does after a bulk load (it is off on some servers,
    /// this machine's among them): fresh statistics for the planner.
    async fn analyze(&self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        sqlx::query("ANALYZE").execute(&mut conn).await?;
        Ok(())
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

pub struct HeraldUnderTest {
    processes: Vec<ChildServer>,
    database: Option<BenchDatabase>,
    env: Vec<(&'static str, String)>,
    data_dir: tempfile::TempDir,
    client: reqwest::Client,
    /// The binary run as `herald serve`.
    program: std::path::PathBuf,
}

impl HeraldUnderTest {
    pub async fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        Self::start_with(args, &[]).await
    }

    /// Starts with `extra` environment over the bench defaults.
    pub async fn start_with(
        args: &BenchArgs,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let database = match &args.database_url {
            Some(url) => Some(BenchDatabase::create(url).await?),
            None => None,
        };
        let mut env = vec![
            ("HERALD_LISTEN", "127.0.0.1:0".to_owned()),
            ("HERALD_ADMIN_TOKEN", TOKEN.to_owned()),
            ("HERALD_ALLOW_HTTP", "true".to_owned()),
            ("HERALD_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
            ("HERALD_LOG", "warn,herald=info".to_owned()),
            ("HERALD_DATA_DIR", data_dir.path().display().to_string()),
        ];
        if let Some(database) = &database {
            env.push(("HERALD_DATABASE_URL", database.url.clone()));
            env.push(("HERALD_DATABASE_MAX_CONNECTIONS", "32".to_owned()));
        }
        env.extend(extra.iter().cloned());
        let mut herald = Self {
            processes: Vec::new(),
            database,
            env,
            data_dir,
            client: reqwest::Client::new(),
            program: match &args.server {
                Some(path) => path.clone(),
                None => std::env::current_exe()?,
            },
        };
        herald.spawn(args.processes, &[])?;
        Ok(herald)
    }

    fn spawn(&mut self, processes: usize, extra: &[(&'static str, String)]) -> anyhow::Result<()> {
        let mut env = self.env.clone();
        env.extend(extra.iter().cloned());
        for _ in 0..processes {
            self.processes
                .push(ChildServer::start(&self.program, &env)?);
        }
        Ok(())
    }

    /// Stops every process gracefully and starts as many again on the same
    /// database with `extra` environment (e.g. another role).
    pub fn restart_with(&mut self, extra: &[(&'static str, String)]) -> anyhow::Result<()> {
        let count = self.processes.len();
        for process in self.processes.drain(..) {
            process.terminate();
        }
        self.spawn(count, extra)
    }

    /// Creates an app with `fanout` endpoints on the sink; returns where to send.
    pub async fn prepare(&self, sink: &Sink, fanout: usize) -> anyhow::Result<Target> {
        self.prepare_on(sink, "/hook", fanout).await
    }

    /// Like `prepare`, with the endpoints under `route` of the sink
    /// (`/hook` answers 204, `/fail` answers 500).
    pub async fn prepare_on(
        &self,
        sink: &Sink,
        route: &str,
        fanout: usize,
    ) -> anyhow::Result<Target> {
        let base = format!("http://{}/api/v1", self.processes[0].address);
        let app: serde_json::Value = self
            .client
            .post(format!("{base}/app/"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let app = app["id"].as_str().unwrap_or_default().to_owned();
        for n in 0..fanout {
            self.client
                .post(format!("{base}/app/{app}/endpoint/"))
                .bearer_auth(TOKEN)
                .json(&json!({"url": sink.url(&format!("{route}/{n}"))}))
                .send()
                .await?
                .error_for_status()?;
        }
        Ok(Target {
            urls: self
                .processes
                .iter()
                .map(|p| format!("http://{}/api/v1/app/{app}/msg/", p.address))
                .collect(),
            token: TOKEN,
        })
    }

    /// One app per entry of `routes` (a sink route such as `/hook`), each
    /// with a single endpoint there; messages go to the apps in turn.
    pub async fn prepare_apps(&self, sink: &Sink, routes: &[&str]) -> anyhow::Result<Target> {
        let base = format!("http://{}/api/v1", self.processes[0].address);
        let mut urls = Vec::with_capacity(routes.len());
        for (n, route) in routes.iter().enumerate() {
            let app: serde_json::Value = self
                .client
                .post(format!("{base}/app/"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": format!("bench {n}")}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let app = app["id"].as_str().unwrap_or_default().to_owned();
            self.client
                .post(format!("{base}/app/{app}/endpoint/"))
                .bearer_auth(TOKEN)
                .json(&json!({"url": sink.url(&format!("{route}/{n}"))}))
                .send()
                .await?
                .error_for_status()?;
            let process = &self.processes[n % self.processes.len()];
            urls.push(format!("http://{}/api/v1/app/{app}/msg/", process.address));
        }
        Ok(Target { urls, token: TOKEN })
    }

    /// A counter of `/metrics`, summed over the processes (0 where a
    /// process does not have it: an older `--server`).
    pub async fn counter(&self, name: &str) -> u64 {
        let mut total = 0.0;
        for process in &self.processes {
            let url = format!("http://{}/metrics", process.address);
            let Ok(response) = self.client.get(url).send().await else {
                continue;
            };
            let text = response.text().await.unwrap_or_default();
            total += text
                .lines()
                .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .filter_map(|value| value.trim().parse::<f64>().ok())
                .sum::<f64>();
        }
        total as u64
    }

    /// The API base (`http://…/api/v1`) of the first process, and the token.
    pub fn api(&self) -> (String, &'static str) {
        (
            format!("http://{}/api/v1", self.processes[0].address),
            TOKEN,
        )
    }

    /// Stops every process gracefully, leaving the database to the caller
    /// (see [`HeraldUnderTest::open_store`]) until [`HeraldUnderTest::resume`].
    pub fn pause(&mut self) -> usize {
        let count = self.processes.len();
        for process in self.processes.drain(..) {
            process.terminate();
        }
        count
    }

    pub fn resume(&mut self, processes: usize) -> anyhow::Result<()> {
        self.spawn(processes, &[])
    }

    /// Refreshes PostgreSQL's planner statistics (nothing for SQLite,
    /// whose planner needs none for these queries).
    pub async fn analyze(&self) -> anyhow::Result<()> {
        match &self.database {
            Some(database) => database.analyze().await,
            None => Ok(()),
        }
    }

    /// The run's database, opened directly (while paused, for SQLite).
    pub async fn open_store(&self) -> anyhow::Result<std::sync::Arc<dyn herald_store::Store>> {
        Ok(match &self.database {
            Some(database) => std::sync::Arc::new(
                herald_store::PgStore::open(&herald_store::PgOptions::new(database.url.clone()))
                    .await?,
            ),
            None => std::sync::Arc::new(herald_store::SqliteStore::open(
                &herald_store::SqliteOptions::new(self.data_dir.path().join("herald.db")),
            )?),
        })
    }

    /// The largest peak RSS (VmHWM) among Herald's processes, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.processes
            .iter()
            .map(|p| proc_status_kib(p.child.id(), "VmHWM:"))
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }

    /// The largest current RSS among Herald's processes, in MiB.
    pub fn current_rss_mib(&self) -> f64 {
        self.processes
            .iter()
            .map(|p| proc_status_kib(p.child.id(), "VmRSS:"))
            .max()
            .unwrap_or(0) as f64
            / 1024.0
    }

    /// CPU seconds used so far by all of Herald's processes.
    pub fn cpu_seconds(&self) -> f64 {
        self.processes
            .iter()
            .map(|p| cpu_seconds_of(&p.child.id().to_string()))
            .sum()
    }

    pub async fn stop(self) {
        drop(self.processes);
        if let Some(database) = self.database {
            database.drop_database().await;
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The CPU time of every process named `postgres` on this machine: a
/// local PostgreSQL server's, whichever database its backends serve
/// (with the children they reaped: backends that ended count too).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .map(|pid| cpu_seconds_with_children(&pid))
        .sum()
}

/// CPU time the hypervisor gave to other machines while this one had work
/// (`steal` in /proc/stat, all CPUs), in seconds: on a shared virtual
/// machine, runs are comparable only when it is similar.
pub fn stolen_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            // "cpu  user nice system idle iowait irq softirq steal …"
            let total = stat
                .lines()
                .next()?
                .split_whitespace()
                .nth(8)?
                .parse::<f64>()
                .ok()?;
            Some(total / 100.0)
        })
        .unwrap_or(0.0)
}

/// User plus system CPU time of a process (`self` or a pid), in seconds
/// (Linux, 100 ticks per second).
pub fn cpu_seconds_of(process: &str) -> f64 {
    cpu_ticks(process, 2) / 100.0
}

/// Like [`cpu_seconds_of`], plus the time of the children it waited for.
fn cpu_seconds_with_children(process: &str) -> f64 {
    cpu_ticks(process, 4) / 100.0
}

/// The sum of the first `fields` of utime, stime, cutime, cstime.
fn cpu_ticks(process: &str, fields: usize) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            let values: Vec<&str> = after_name.split_whitespace().collect();
            (11..11 + fields)
                .map(|i| values.get(i)?.parse::<f64>().ok())
                .sum::<Option<f64>>()
        })
        .unwrap_or(0.0)
}
