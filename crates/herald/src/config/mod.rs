//! Configuration, read in this one module: defaults, then an optional TOML
//! file, then `HERALD_*` environment variables, then flags (clap reads the
//! last two together). `args.rs` declares the settings once; this file
//! resolves them into typed [`Settings`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use herald_dispatch::{EmailConfig, Network};
use herald_domain::sealing::{MasterKey, Sealing};
use herald_domain::{AddressPolicy, RetrySchedule};
use herald_store::{AutoDisable, RateRule};

mod args;
#[cfg(test)]
mod tests;

#[cfg(test)]
use args::{file_table, ids_of};
pub use args::{DatabaseArgs, ServeArgs};

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
    /// Every event type's schema is enforced (else only `enforceSchema` ones).
    pub enforce_schemas: bool,
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
            enforce_schemas: false,
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
        settings.enforce_schemas = args.enforce_schemas.unwrap_or(false);
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
