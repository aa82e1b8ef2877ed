//! Configuration, read in this one module: defaults, then an optional TOML
//! file, then `HERALD_*` environment variables, then flags (clap reads the
//! last two together). Nothing else in Herald reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::BoolishValueParser;
use clap::Args;
use serde::{Deserialize, Serialize};

use herald_dispatch::{EmailConfig, Network};
use herald_domain::sealing::{MasterKey, Sealing};
use herald_domain::{AddressPolicy, RetrySchedule};
use herald_store::{AutoDisable, RateRule};

/// Options shared by the commands that open the database.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseArgs {
    /// Directory for the embedded database and the admin token hash.
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `postgres://USER:PASSWORD@HOST/DB` for PostgreSQL, or `sqlite://PATH`
    /// (default: the embedded database DATA_DIR/herald.db).
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// PostgreSQL connections per process.
    #[arg(long, env = "HERALD_DATABASE_MAX_CONNECTIONS", value_name = "N")]
    pub database_max_connections: Option<u32>,
    /// Seconds a request waits for a PostgreSQL connection before answering 503.
    #[arg(long, env = "HERALD_DATABASE_ACQUIRE_TIMEOUT", value_name = "SECONDS")]
    pub database_acquire_timeout: Option<u64>,
    /// Optional TOML file with the same settings (snake_case keys).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// 32 bytes, base64: signing secrets are stored encrypted with it
    /// (`openssl rand -base64 32`).
    #[arg(
        long,
        env = "HERALD_MASTER_KEY",
        value_name = "BASE64",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// The key being rotated away from: secrets it opens are encrypted
    /// again with `HERALD_MASTER_KEY` at start.
    #[arg(
        long,
        env = "HERALD_PREVIOUS_MASTER_KEY",
        value_name = "BASE64",
        hide_env_values = true
    )]
    pub previous_master_key: Option<String>,
}

/// `herald serve` options, declared once: every flag can also be set as
/// `HERALD_<NAME>` or as `<name>` in the TOML file (`--config`).
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub database: DatabaseArgs,
    /// Address the API listens on.
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// `all` (API and delivery workers), `api` or `worker` (PostgreSQL only).
    #[arg(long, env = "HERALD_ROLE", value_name = "ROLE")]
    pub role: Option<String>,
    /// Seconds a claimed delivery stays reserved for its worker; must exceed
    /// the request timeout. A dead worker's deliveries move on after it.
    #[arg(long, env = "HERALD_LEASE_SECONDS", value_name = "SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Longest a worker waits between looks at the database when nothing
    /// wakes it (expired leases are found on these looks).
    #[arg(long, env = "HERALD_POLL_INTERVAL", value_name = "SECONDS")]
    pub poll_interval: Option<u64>,
    /// Deliveries in flight at once in this process.
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<usize>,
    /// API requests handled at once; more get 503 `overloaded` at once.
    #[arg(long, env = "HERALD_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    pub max_concurrent_requests: Option<usize>,
    /// Of those, the most one app's requests (whatever its tokens) may
    /// hold; more get 429 (default: an eighth). A tenth is kept for the
    /// admin token.
    #[arg(long, env = "HERALD_MAX_CONCURRENT_REQUESTS_PER_APP", value_name = "N")]
    pub max_concurrent_requests_per_app: Option<usize>,
    /// API connections open at once (default: the file-descriptor limit
    /// less a quarter, at least 256, kept for deliveries and the database).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections the kernel queues before Herald accepts them.
    #[arg(long, env = "HERALD_LISTEN_BACKLOG", value_name = "N")]
    pub listen_backlog: Option<u32>,
    /// Longest wait for a complete request head (`10s`).
    #[arg(long, env = "HERALD_CLIENT_HEADER_TIMEOUT", value_name = "DURATION")]
    pub client_header_timeout: Option<String>,
    /// Longest pause in a request body, and the grace before its minimum
    /// rate applies (`10s`).
    #[arg(long, env = "HERALD_CLIENT_BODY_TIMEOUT", value_name = "DURATION")]
    pub client_body_timeout: Option<String>,
    /// Bytes per second a request body must average after that grace (`4096`; `0`: none).
    #[arg(long, env = "HERALD_CLIENT_BODY_MIN_RATE", value_name = "BYTES")]
    pub client_body_min_rate: Option<u64>,
    /// How long an idle kept-alive connection stays open (`60s`).
    #[arg(long, env = "HERALD_KEEPALIVE_TIMEOUT", value_name = "DURATION")]
    pub keepalive_timeout: Option<String>,
    /// Longest wait for a client to read more of its answer (`30s`).
    #[arg(long, env = "HERALD_SEND_TIMEOUT", value_name = "DURATION")]
    pub send_timeout: Option<String>,
    /// Deliveries in flight to one endpoint at once: what a slow endpoint
    /// can take from the others.
    #[arg(long, env = "HERALD_MAX_IN_FLIGHT_PER_ENDPOINT", value_name = "N")]
    pub max_in_flight_per_endpoint: Option<usize>,
    /// Admin bearer token. When unset, one is generated on first start and printed once.
    #[arg(
        long,
        env = "HERALD_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Allow deliveries to loopback, private and link-local addresses.
    #[arg(long, env = "HERALD_ALLOW_PRIVATE_NETWORKS", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_private_networks: Option<bool>,
    /// Allow `http://` endpoint URLs.
    #[arg(long, env = "HERALD_ALLOW_HTTP", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_http: Option<bool>,
    /// Delays between attempts, e.g. `5s,5m,30m,2h,5h,10h,10h`.
    #[arg(long, env = "HERALD_RETRY_SCHEDULE", value_name = "LIST")]
    pub retry_schedule: Option<String>,
    /// Per-attempt timeout in seconds.
    #[arg(long, env = "HERALD_REQUEST_TIMEOUT", value_name = "SECONDS")]
    pub request_timeout: Option<u64>,
    /// Disable an endpoint whose every attempt has failed this long (`5d`,
    /// `12h`; `off` never does).
    #[arg(long, env = "HERALD_AUTO_DISABLE_AFTER", value_name = "DURATION")]
    pub auto_disable_after: Option<String>,
    /// …and that has failed at least this many attempts in a row.
    #[arg(long, env = "HERALD_AUTO_DISABLE_MIN_ATTEMPTS", value_name = "N")]
    pub auto_disable_min_attempts: Option<u64>,
    /// Consecutive failed attempts after which `endpoint.failing` is raised.
    #[arg(long, env = "HERALD_FAILING_AFTER", value_name = "N")]
    pub failing_after: Option<u64>,
    /// Success rate over the last hour under which
    /// `endpoint.success_rate_dropped` is raised (0 to 1; `off`).
    #[arg(long, env = "HERALD_SUCCESS_RATE_THRESHOLD", value_name = "RATE")]
    pub success_rate_threshold: Option<String>,
    /// …with at least this many attempts in that hour.
    #[arg(long, env = "HERALD_SUCCESS_RATE_MIN_ATTEMPTS", value_name = "N")]
    pub success_rate_min_attempts: Option<u64>,
    /// SMTP server for e-mail copies of operational events:
    /// `smtp://host:25`, `smtp://user:pass@host:587?tls=required`,
    /// `smtps://host:465`.
    #[arg(
        long,
        env = "HERALD_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// Sender of those e-mails.
    #[arg(long, env = "HERALD_ALERT_EMAIL_FROM", value_name = "ADDRESS")]
    pub alert_email_from: Option<String>,
    /// Recipients, comma-separated.
    #[arg(long, env = "HERALD_ALERT_EMAIL_TO", value_name = "ADDRESSES")]
    pub alert_email_to: Option<String>,
    /// How long messages and their attempts are kept once nothing is left
    /// to deliver (`90d`; `off` keeps them forever).
    #[arg(long, env = "HERALD_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// An operator endpoint for Herald's operational events (added to the
    /// `herald-operations` app at start).
    #[arg(long, env = "HERALD_OPERATOR_WEBHOOK_URL", value_name = "URL")]
    pub operator_webhook_url: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Address ranges deliveries may reach although they are private,
    /// comma-separated (`10.20.0.0/16,fd00:1::/64`).
    #[arg(long, env = "HERALD_ALLOWED_CIDRS", value_name = "CIDRS")]
    pub allowed_cidrs: Option<String>,
    /// DNS servers for deliveries instead of the system resolver,
    /// comma-separated `ip:port`.
    #[arg(long, env = "HERALD_DNS_SERVERS", value_name = "ADDRS")]
    pub dns_servers: Option<String>,
    /// An HTTP(S) proxy every delivery goes through (`http://host:port`).
    #[arg(
        long,
        env = "HERALD_EGRESS_PROXY",
        value_name = "URL",
        hide_env_values = true
    )]
    pub egress_proxy: Option<String>,
    /// The local address deliveries connect from.
    #[arg(long, env = "HERALD_EGRESS_SOURCE_ADDRESS", value_name = "IP")]
    pub egress_source_address: Option<std::net::IpAddr>,
    /// A PEM file of extra root certificates to trust for deliveries
    /// (receivers on a private PKI); the public roots stay trusted.
    #[arg(long, env = "HERALD_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// The addresses receivers should allowlist, comma-separated; published
    /// at `GET /api/v1/egress/`.
    #[arg(long, env = "HERALD_EGRESS_ADDRESSES", value_name = "ADDRS")]
    pub egress_addresses: Option<String>,
    /// Requests per second each app-scoped token may make (`off`: no
    /// limit; the admin token is never limited).
    #[arg(long, env = "HERALD_TOKEN_RATE_LIMIT", value_name = "N")]
    pub token_rate_limit: Option<String>,
    /// Endpoints one app may have.
    #[arg(long, env = "HERALD_MAX_ENDPOINTS_PER_APP", value_name = "N")]
    pub max_endpoints_per_app: Option<usize>,
    /// How Herald is reached from outside, for portal links
    /// (default: `http://` and the listen address).
    #[arg(long, env = "HERALD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Who may show the portal in a frame: a CSP `frame-ancestors` source
    /// list (`'self' https://app.example.com`; default `'self'`).
    #[arg(long, env = "HERALD_PORTAL_FRAME_ANCESTORS", value_name = "SOURCES")]
    pub portal_frame_ancestors: Option<String>,
    /// Also export each endpoint's run of failures and state on /metrics,
    /// labelled with app and endpoint ids (one series per endpoint).
    #[arg(long, env = "HERALD_METRICS_PER_ENDPOINT", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub metrics_per_endpoint: Option<bool>,
    /// How long a portal-access link works (`1h`; at most `24h`).
    #[arg(long, env = "HERALD_PORTAL_SESSION", value_name = "DURATION")]
    pub portal_session: Option<String>,
    /// How long a rotated-out signing secret keeps signing (`24h`; `0s` to `7d`).
    #[arg(long, env = "HERALD_SECRET_ROTATION_GRACE", value_name = "DURATION")]
    pub secret_rotation_grace: Option<String>,
    /// Log filter (`info`, `herald=debug`, …).
    #[arg(long, env = "HERALD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// The TOML file (`--config`): the keys are the flags' names in snake_case
/// (`max_in_flight = 64`), read into the same structs as flags and
/// `HERALD_*` variables, which win over it. An unknown key is an error, so
/// a misspelt setting is never silently ignored.
fn file_table(path: &Path, known: &[String]) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("in the configuration file {}", path.display()))?;
    if let Some(unknown) = table.keys().find(|key| !known.contains(key)) {
        bail!(
            "in the configuration file {}: unknown key `{unknown}`",
            path.display()
        );
    }
    Ok(table)
}

/// The argument ids (= file keys) of a clap `Args` struct.
fn ids_of<A: Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("herald"))
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .collect()
}

/// `given` (flags and environment) over `file`: every setting `given` left
/// out is taken from the file.
fn over<T: Serialize + serde::de::DeserializeOwned>(given: &T, file: &T) -> anyhow::Result<T> {
    let mut merged = serde_json::to_value(file)?;
    let given = serde_json::to_value(given)?;
    if let (Some(merged), Some(given)) = (merged.as_object_mut(), given.as_object()) {
        for (key, value) in given {
            if !value.is_null() {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(serde_json::from_value(merged)?)
}

impl DatabaseArgs {
    /// These settings completed from the `--config` file, if any.
    pub fn with_file(self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        // The file may hold `herald serve`'s settings too: only ours are read.
        let mine = ids_of::<DatabaseArgs>();
        let table: toml::Table = file_table(&path, &ids_of::<ServeArgs>())?
            .into_iter()
            .filter(|(key, _)| mine.contains(key))
            .collect();
        let file: DatabaseArgs = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("in the configuration file {}", path.display()))?;
        over(&self, &file)
    }
}

impl ServeArgs {
    /// These settings completed from the `--config` file, if any.
    pub fn with_file(self) -> anyhow::Result<Self> {
        let Some(path) = self.database.config.clone() else {
            return Ok(self);
        };
        let table = file_table(&path, &ids_of::<ServeArgs>())?;
        let file: ServeArgs = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("in the configuration file {}", path.display()))?;
        over(&self, &file)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret setting that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which database, and how to reach it.
#[derive(Debug, Clone)]
pub enum Database {
    /// The embedded database: one process.
    Sqlite { path: PathBuf },
    /// Shared by any number of processes.
    Postgres {
        url: Redacted,
        max_connections: u32,
        acquire_timeout: Duration,
    },
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub data_dir: PathBuf,
    pub database: Database,
    /// How signing secrets are stored (`HERALD_MASTER_KEY`).
    pub sealing: Sealing,
}

impl DatabaseSettings {
    fn resolve(
        data_dir: Option<PathBuf>,
        database_url: Option<String>,
        max_connections: Option<u32>,
        acquire_timeout: Option<u64>,
    ) -> anyhow::Result<Self> {
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("herald-data"));
        let database = match database_url.as_deref() {
            None | Some("") => Database::Sqlite {
                path: data_dir.join("herald.db"),
            },
            Some(url) if url.starts_with("sqlite://") => Database::Sqlite {
                path: PathBuf::from(&url["sqlite://".len()..]),
            },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::Postgres {
                    url: Redacted(url.to_owned()),
                    max_connections: max_connections.unwrap_or(16).clamp(2, 1000),
                    acquire_timeout: Duration::from_secs(
                        acquire_timeout.unwrap_or(5).clamp(1, 300),
                    ),
                }
            }
            Some(_) => {
                bail!("HERALD_DATABASE_URL must start with postgres://, postgresql:// or sqlite://")
            }
        };
        Ok(Self {
            data_dir,
            database,
            sealing: Sealing::default(),
        })
    }

    fn with_keys(
        mut self,
        current: Option<String>,
        previous: Option<String>,
    ) -> anyhow::Result<Self> {
        let key = |text: Option<String>| -> anyhow::Result<Option<MasterKey>> {
            text.filter(|t| !t.trim().is_empty())
                .map(|t| {
                    MasterKey::parse(&t).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))
                })
                .transpose()
        };
        let current = key(current)?;
        let previous =
            key(previous).map_err(|e| anyhow::anyhow!("HERALD_PREVIOUS_MASTER_KEY: {e}"))?;
        if previous.is_some() && current.is_none() {
            bail!("HERALD_PREVIOUS_MASTER_KEY needs HERALD_MASTER_KEY (the key to move to)");
        }
        self.sealing = Sealing { current, previous };
        Ok(self)
    }

    pub fn from_args(args: &DatabaseArgs) -> anyhow::Result<Self> {
        let args = args.clone().with_file()?;
        Self::resolve(
            args.data_dir.clone(),
            args.database_url.clone(),
            args.database_max_connections,
            args.database_acquire_timeout,
        )?
        .with_keys(args.master_key.clone(), args.previous_master_key.clone())
    }
}

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and delivery workers.
    All,
    /// Only the API (messages are delivered by worker processes).
    Api,
    /// Only delivery workers (and the health route).
    Worker,
}

/// Everything `herald serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub role: Role,
    pub database: DatabaseSettings,
    /// How long a claimed delivery stays reserved for its worker.
    pub lease: Duration,
    /// Longest idle wait between a worker's looks at the database.
    pub poll_interval: Duration,
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: usize,
    pub max_concurrent_requests: usize,
    /// `None`: an eighth of `max_concurrent_requests`.
    pub max_concurrent_requests_per_app: Option<usize>,
    /// Timeouts and caps of API connections; `max_connections` is filled
    /// in from the file-descriptor limit at start unless set.
    pub connections: herald_api::ConnectionLimits,
    /// `None`: from the file-descriptor limit.
    pub max_connections: Option<usize>,
    pub listen_backlog: u32,
    pub admin_token: Option<Redacted>,
    pub policy: AddressPolicy,
    /// Resolver, proxy and source address of deliveries.
    pub network: Network,
    /// Published egress addresses (`GET /api/v1/egress/`).
    pub egress_addresses: Vec<String>,
    pub retry_schedule: RetrySchedule,
    pub request_timeout: Duration,
    /// When endpoints that keep failing are disabled; `None`: never.
    pub auto_disable: Option<AutoDisable>,
    /// Consecutive failures that raise `endpoint.failing`.
    pub failing_after: u64,
    /// When `endpoint.success_rate_dropped` is raised; `None`: never.
    pub success_rate: Option<RateRule>,
    /// Messages older than this with nothing left to deliver are purged;
    /// `None`: kept forever.
    pub retention: Option<Duration>,
    pub operator_webhook_url: Option<String>,
    /// E-mail copies of operational events.
    pub email: Option<EmailConfig>,
    pub max_body_bytes: usize,
    pub rotation_grace: Duration,
    /// Requests per second per app-scoped token; `None`: unlimited.
    pub token_rate_limit: Option<u32>,
    pub max_endpoints_per_app: usize,
    /// Where portal links point; `None`: `http://` + the bound address.
    pub public_url: Option<String>,
    pub portal_session: Duration,
    pub portal_frame_ancestors: String,
    /// Per-endpoint series on /metrics (off by default: they name tenants
    /// and grow with the number of endpoints).
    pub metrics_per_endpoint: bool,
    pub log: String,
    pub log_format: LogFormat,
}

impl Settings {
    /// Defaults for a server in `data_dir`; used by tests and `herald bench`.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            role: Role::All,
            database: DatabaseSettings {
                data_dir: data_dir.to_owned(),
                database: Database::Sqlite {
                    path: data_dir.join("herald.db"),
                },
                sealing: Sealing::default(),
            },
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
            max_in_flight: 4096,
            max_in_flight_per_endpoint: 64,
            max_concurrent_requests: 1024,
            max_concurrent_requests_per_app: None,
            connections: herald_api::ConnectionLimits::default(),
            max_connections: None,
            listen_backlog: 1024,
            admin_token: None,
            policy: AddressPolicy::default(),
            network: Network::default(),
            egress_addresses: Vec::new(),
            retry_schedule: RetrySchedule::default(),
            request_timeout: Duration::from_secs(15),
            auto_disable: Some(AutoDisable {
                after: 5 * 24 * 3_600_000,
                min_attempts: 10,
            }),
            failing_after: 5,
            success_rate: Some(RateRule {
                threshold: 0.9,
                min_attempts: 20,
            }),
            operator_webhook_url: None,
            email: None,
            retention: Some(Duration::from_secs(90 * 24 * 3600)),
            max_body_bytes: 1024 * 1024,
            rotation_grace: Duration::from_secs(24 * 3600),
            token_rate_limit: Some(100),
            max_endpoints_per_app: 100,
            public_url: None,
            portal_session: Duration::from_secs(3600),
            portal_frame_ancestors: "'self'".into(),
            metrics_per_endpoint: false,
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }

    pub fn from_args(args: ServeArgs) -> anyhow::Result<Self> {
        let args = args.with_file()?;
        let database = DatabaseSettings::resolve(
            args.database.data_dir,
            args.database.database_url,
            args.database.database_max_connections,
            args.database.database_acquire_timeout,
        )?
        .with_keys(args.database.master_key, args.database.previous_master_key)?;
        let mut settings = Self::for_data_dir(&database.data_dir);
        settings.database = database;
        if let Some(listen) = args.listen {
            settings.listen = listen;
        }
        settings.admin_token = args.admin_token.filter(|t| !t.is_empty()).map(Redacted);
        if let Some(token) = &settings.admin_token {
            if token.0.len() < 16 {
                bail!("HERALD_ADMIN_TOKEN must be at least 16 characters long");
            }
        }
        let list = |text: Option<String>| -> Vec<String> {
            text.unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let allowed = list(args.allowed_cidrs)
            .iter()
            .map(|text| herald_domain::Cidr::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("HERALD_ALLOWED_CIDRS: {}", e.reason))?;
        settings.metrics_per_endpoint = args.metrics_per_endpoint.unwrap_or(false);
        settings.policy = AddressPolicy {
            allow_http: args.allow_http.unwrap_or(false),
            allow_private_networks: args.allow_private_networks.unwrap_or(false),
            allowed: allowed.into(),
        };
        settings.network = Network {
            dns_servers: list(args.dns_servers)
                .iter()
                .map(|text| {
                    text.parse::<SocketAddr>()
                        .or_else(|_| {
                            text.parse::<std::net::IpAddr>()
                                .map(|ip| SocketAddr::new(ip, 53))
                        })
                        .map_err(|_| {
                            anyhow::anyhow!("HERALD_DNS_SERVERS: `{text}` is not ip[:port]")
                        })
                })
                .collect::<anyhow::Result<_>>()?,
            proxy: args.egress_proxy.filter(|p| !p.is_empty()),
            source_address: args.egress_source_address,
            ca_bundle: args
                .ca_bundle
                .map(|path| {
                    std::fs::read(&path)
                        .with_context(|| format!("HERALD_CA_BUNDLE: reading {}", path.display()))
                })
                .transpose()?,
        };
        if let Some(proxy) = &settings.network.proxy {
            let url =
                url::Url::parse(proxy).map_err(|e| anyhow::anyhow!("HERALD_EGRESS_PROXY: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                bail!("HERALD_EGRESS_PROXY must be http://host:port or https://host:port");
            }
        }
        settings.egress_addresses = list(args.egress_addresses);
        if let Some(schedule) = args.retry_schedule {
            settings.retry_schedule = RetrySchedule::parse(&schedule)
                .map_err(|e| anyhow::anyhow!("HERALD_RETRY_SCHEDULE: {}", e.reason))?;
        }
        if let Some(seconds) = args.request_timeout {
            if !(1..=300).contains(&seconds) {
                bail!("HERALD_REQUEST_TIMEOUT must be between 1 and 300 seconds");
            }
            settings.request_timeout = Duration::from_secs(seconds);
        }
        let min_attempts = args.auto_disable_min_attempts;
        if min_attempts == Some(0) {
            bail!("HERALD_AUTO_DISABLE_MIN_ATTEMPTS must be at least 1");
        }
        settings.auto_disable = match args.auto_disable_after {
            Some(text) if text.trim() == "off" => None,
            Some(text) => {
                let after = herald_domain::parse_duration(text.trim())
                    .map_err(|reason| anyhow::anyhow!("HERALD_AUTO_DISABLE_AFTER: {reason}"))?;
                Some(AutoDisable {
                    after: after.as_millis() as i64,
                    min_attempts: min_attempts.unwrap_or(10),
                })
            }
            None => settings.auto_disable.map(|rule| AutoDisable {
                min_attempts: min_attempts.unwrap_or(rule.min_attempts),
                ..rule
            }),
        };
        if let Some(n) = args.failing_after {
            if n == 0 {
                bail!("HERALD_FAILING_AFTER must be at least 1");
            }
            settings.failing_after = n;
        }
        match args.token_rate_limit.as_deref().map(str::trim) {
            None => {}
            Some("off") => settings.token_rate_limit = None,
            Some(text) => {
                let rate: u32 = text
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .context("HERALD_TOKEN_RATE_LIMIT must be a positive number or `off`")?;
                settings.token_rate_limit = Some(rate);
            }
        }
        if let Some(max) = args.max_endpoints_per_app {
            if !(1..=10_000).contains(&max) {
                bail!("HERALD_MAX_ENDPOINTS_PER_APP must be 1..=10000");
            }
            settings.max_endpoints_per_app = max;
        }
        if let Some(url) = args.public_url.filter(|u| !u.is_empty()) {
            let parsed = url::Url::parse(&url)
                .map_err(|e| anyhow::anyhow!("HERALD_PUBLIC_URL `{url}`: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("HERALD_PUBLIC_URL must be an http:// or https:// URL");
            }
            settings.public_url = Some(url.trim_end_matches('/').to_owned());
        }
        if let Some(sources) = args.portal_frame_ancestors.filter(|s| !s.trim().is_empty()) {
            if sources
                .chars()
                .any(|c| c == ';' || c == ',' || c.is_control())
            {
                bail!("HERALD_PORTAL_FRAME_ANCESTORS is a space-separated CSP source list");
            }
            settings.portal_frame_ancestors = sources.trim().to_owned();
        }
        if let Some(text) = args.portal_session {
            let period = herald_domain::parse_duration(text.trim())
                .map_err(|reason| anyhow::anyhow!("HERALD_PORTAL_SESSION: {reason}"))?;
            if period < Duration::from_secs(60) || period > Duration::from_secs(24 * 3600) {
                bail!("HERALD_PORTAL_SESSION must be between 1m and 24h");
            }
            settings.portal_session = period;
        }
        if let Some(text) = args.secret_rotation_grace {
            let text = text.trim();
            let period = if text == "0" {
                Duration::ZERO
            } else {
                herald_domain::parse_duration(text)
                    .map_err(|reason| anyhow::anyhow!("HERALD_SECRET_ROTATION_GRACE: {reason}"))?
            };
            if period > Duration::from_secs(7 * 24 * 3600) {
                bail!("HERALD_SECRET_ROTATION_GRACE must be at most 7d");
            }
            settings.rotation_grace = period;
        }
        match args.retention.as_deref().map(str::trim) {
            None => {}
            Some("off") => settings.retention = None,
            Some(text) => {
                let period = herald_domain::parse_duration(text)
                    .map_err(|reason| anyhow::anyhow!("HERALD_RETENTION: {reason}"))?;
                if period < Duration::from_secs(3600) {
                    bail!("HERALD_RETENTION must be at least 1h");
                }
                settings.retention = Some(period);
            }
        }
        let min_attempts = args.success_rate_min_attempts.unwrap_or(20).max(1);
        settings.success_rate = match args.success_rate_threshold.as_deref().map(str::trim) {
            Some("off") => None,
            Some(text) => {
                let threshold: f64 = text
                    .parse()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "HERALD_SUCCESS_RATE_THRESHOLD must be between 0 and 1, or `off`"
                        )
                    })?;
                Some(RateRule {
                    threshold,
                    min_attempts,
                })
            }
            None => settings.success_rate.map(|rule| RateRule {
                min_attempts,
                ..rule
            }),
        };
        let smtp_url = args.smtp_url.filter(|u| !u.is_empty());
        let to: Vec<String> = args
            .alert_email_to
            .unwrap_or_default()
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        settings.email = match (smtp_url, to.is_empty()) {
            (None, true) => None,
            (Some(smtp_url), false) => Some(EmailConfig {
                smtp_url,
                from: args
                    .alert_email_from
                    .unwrap_or_else(|| "herald@localhost".into()),
                to,
            }),
            _ => bail!("HERALD_SMTP_URL and HERALD_ALERT_EMAIL_TO go together"),
        };
        settings.operator_webhook_url = args.operator_webhook_url.filter(|url| !url.is_empty());
        if let Some(bytes) = args.max_body_bytes {
            settings.max_body_bytes = bytes;
        }
        settings.role = match args.role.as_deref() {
            None | Some("all") => Role::All,
            Some("api") => Role::Api,
            Some("worker") => Role::Worker,
            Some(other) => bail!("HERALD_ROLE must be `all`, `api` or `worker`, not `{other}`"),
        };
        if let Some(seconds) = args.lease_seconds {
            settings.lease = Duration::from_secs(seconds);
        }
        if let Some(seconds) = args.poll_interval {
            if !(1..=3600).contains(&seconds) {
                bail!("HERALD_POLL_INTERVAL must be between 1 and 3600 seconds");
            }
            settings.poll_interval = Duration::from_secs(seconds);
        }
        if let Some(n) = args.max_in_flight {
            settings.max_in_flight = n.clamp(1, 1_000_000);
        }
        if let Some(n) = args.max_concurrent_requests {
            settings.max_concurrent_requests = n.clamp(1, 1_000_000);
        }
        if let Some(n) = args.max_concurrent_requests_per_app {
            settings.max_concurrent_requests_per_app = Some(n.clamp(1, 1_000_000));
        }
        if let Some(n) = args.max_connections {
            settings.max_connections = Some(n.clamp(1, 10_000_000));
        }
        if let Some(n) = args.listen_backlog {
            settings.listen_backlog = n.clamp(1, 65_535);
        }
        let timeout =
            |name: &str, text: Option<String>, target: &mut Duration| -> anyhow::Result<()> {
                if let Some(text) = text {
                    let period = herald_domain::parse_duration(text.trim())
                        .map_err(|reason| anyhow::anyhow!("{name}: {reason}"))?;
                    if period < Duration::from_secs(1) || period > Duration::from_secs(3600) {
                        bail!("{name} must be between 1s and 1h");
                    }
                    *target = period;
                }
                Ok(())
            };
        let connections = &mut settings.connections;
        timeout(
            "HERALD_CLIENT_HEADER_TIMEOUT",
            args.client_header_timeout,
            &mut connections.header_timeout,
        )?;
        timeout(
            "HERALD_CLIENT_BODY_TIMEOUT",
            args.client_body_timeout,
            &mut connections.body_timeout,
        )?;
        timeout(
            "HERALD_KEEPALIVE_TIMEOUT",
            args.keepalive_timeout,
            &mut connections.keepalive_timeout,
        )?;
        timeout(
            "HERALD_SEND_TIMEOUT",
            args.send_timeout,
            &mut connections.send_timeout,
        )?;
        if let Some(rate) = args.client_body_min_rate {
            connections.body_min_rate = rate;
        }
        if let Some(n) = args.max_in_flight_per_endpoint {
            settings.max_in_flight_per_endpoint = n.clamp(1, 1_000_000);
        }
        if settings.lease < settings.request_timeout + Duration::from_secs(2) {
            bail!("HERALD_LEASE_SECONDS must exceed the request timeout by at least 2 seconds, or an attempt still in flight could be claimed again");
        }
        if let Some(log) = args.log {
            settings.log = log;
        }
        settings.log_format = match args.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("HERALD_LOG_FORMAT must be `text` or `json`, not `{other}`"),
        };
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_never_shows_in_debug_output() {
        let mut settings = Settings::for_data_dir(Path::new("/tmp/x"));
        settings.admin_token = Some(Redacted("super-secret-token-value".into()));
        assert!(!format!("{settings:?}").contains("super-secret"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        let known = ids_of::<ServeArgs>();
        std::fs::write(&path, "listn = \"127.0.0.1:1\"").unwrap();
        let error = format!("{:#}", file_table(&path, &known).unwrap_err());
        assert!(error.contains("unknown key `listn`"), "{error}");
        std::fs::write(&path, "allow_http = true\ndata_dir = \"/tmp\"").unwrap();
        assert!(file_table(&path, &known).is_ok());
    }

    #[test]
    fn database_urls_choose_the_backend() {
        let sqlite =
            DatabaseSettings::resolve(None, Some("sqlite:///tmp/h.db".into()), None, None).unwrap();
        assert!(
            matches!(sqlite.database, Database::Sqlite { path } if path == Path::new("/tmp/h.db"))
        );
        let default = DatabaseSettings::resolve(None, None, None, None).unwrap();
        assert!(
            matches!(default.database, Database::Sqlite { path } if path == Path::new("herald-data/herald.db"))
        );
        let postgres = DatabaseSettings::resolve(
            None,
            Some("postgres://u:hunter2@db/h".into()),
            Some(8),
            None,
        )
        .unwrap();
        assert!(matches!(
            postgres.database,
            Database::Postgres {
                max_connections: 8,
                ..
            }
        ));
        assert!(
            !format!("{postgres:?}").contains("hunter2"),
            "the password never shows"
        );
        assert!(DatabaseSettings::resolve(None, Some("mysql://x".into()), None, None).is_err());
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn from_file(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, text)?;
        let args = Wrapper::try_parse_from(["herald", "--config", path.to_str().unwrap()])?;
        Settings::from_args(args.serve)
    }

    #[test]
    fn security_and_egress_settings_are_read_from_the_file() {
        let settings = from_file(
            r#"
            token_rate_limit = "off"
            max_endpoints_per_app = 5
            allowed_cidrs = "10.20.0.0/16, fd00::/8"
            dns_servers = "127.0.0.1:5353,10.0.0.2"
            egress_proxy = "http://proxy.internal:3128"
            egress_addresses = "203.0.113.7,203.0.113.8"
            secret_rotation_grace = "0"
            master_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
            "#,
        )
        .unwrap();
        assert_eq!(settings.token_rate_limit, None);
        assert_eq!(settings.max_endpoints_per_app, 5);
        assert!(settings.policy.permits("10.20.1.1".parse().unwrap()));
        assert!(!settings.policy.permits("10.21.1.1".parse().unwrap()));
        assert_eq!(
            settings.network.dns_servers,
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
        assert_eq!(
            settings.network.proxy.as_deref(),
            Some("http://proxy.internal:3128")
        );
        assert_eq!(settings.egress_addresses, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(settings.rotation_grace, Duration::ZERO);
        assert!(settings.database.sealing.current.is_some());
        assert!(
            !format!("{settings:?}").contains("AQEBAQEB"),
            "the key stays hidden"
        );
    }

    #[test]
    fn flags_and_the_environment_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "max_in_flight = 7\nmax_concurrent_requests = 9\nallow_http = true\nlisten = \"127.0.0.1:9999\"",
        )
        .unwrap();
        let args = Wrapper::try_parse_from([
            "herald",
            "--config",
            path.to_str().unwrap(),
            "--max-in-flight",
            "3",
        ])
        .unwrap();

        let settings = Settings::from_args(args.serve).unwrap();

        assert_eq!(settings.max_in_flight, 3, "the flag wins");
        assert_eq!(
            settings.max_concurrent_requests, 9,
            "the file fills the rest"
        );
        assert!(settings.policy.allow_http);
        assert_eq!(settings.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(settings.max_in_flight_per_endpoint, 64, "the default stays");
    }

    /// The README's configuration table lists exactly the settings
    /// `herald serve` reads (each `HERALD_*` variable of its flags).
    #[test]
    fn the_readme_table_lists_every_setting_and_no_other() {
        let readme = include_str!("../../../README.md");
        let table: std::collections::BTreeSet<String> = readme
            .lines()
            .filter(|line| line.starts_with("| `HERALD_"))
            .flat_map(|line| {
                let first = line.split('|').nth(1).unwrap_or_default().to_owned();
                first
                    .split('`')
                    .filter(|part| part.starts_with("HERALD_"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let declared: std::collections::BTreeSet<String> =
            ServeArgs::augment_args(clap::Command::new("herald"))
                .get_arguments()
                .filter_map(|arg| arg.get_env())
                .map(|env| env.to_string_lossy().into_owned())
                .collect();
        let missing: Vec<_> = declared.difference(&table).collect();
        let extra: Vec<_> = table.difference(&declared).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README lacks {missing:?}; README lists unknown {extra:?}"
        );
    }

    #[test]
    fn bad_security_settings_are_refused_with_their_name() {
        for (text, name) in [
            ("token_rate_limit = \"0\"", "HERALD_TOKEN_RATE_LIMIT"),
            ("max_endpoints_per_app = 0", "HERALD_MAX_ENDPOINTS_PER_APP"),
            ("allowed_cidrs = \"10.0.0.0/40\"", "HERALD_ALLOWED_CIDRS"),
            ("dns_servers = \"not-an-address\"", "HERALD_DNS_SERVERS"),
            ("egress_proxy = \"socks5://x:1\"", "HERALD_EGRESS_PROXY"),
            (
                "secret_rotation_grace = \"8d\"",
                "HERALD_SECRET_ROTATION_GRACE",
            ),
            ("master_key = \"c2hvcnQ=\"", "HERALD_MASTER_KEY"),
            (
                "previous_master_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"",
                "HERALD_PREVIOUS_MASTER_KEY",
            ),
        ] {
            let error = format!("{:#}", from_file(text).unwrap_err());
            assert!(error.contains(name), "{text}: {error}");
        }
    }
}
