//! What `herald serve` (and the commands that open the database) can be
//! told, declared once: the clap structs that flags and `HERALD_*`
//! variables fill, and that the TOML file (`--config`) is read into.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::builder::BoolishValueParser;
use clap::Args;
use serde::{Deserialize, Serialize};

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
    /// PostgreSQL connections per process in the pool (the three batch
    /// writers hold one more each).
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
    /// Refuse (422) every message whose payload does not validate against
    /// its event type's JSON Schema (without it, only types with
    /// `enforceSchema`).
    #[arg(long, env = "HERALD_ENFORCE_SCHEMAS", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub enforce_schemas: Option<bool>,
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
pub(super) fn file_table(path: &Path, known: &[String]) -> anyhow::Result<toml::Table> {
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
pub(super) fn ids_of<A: Args>() -> Vec<String> {
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
