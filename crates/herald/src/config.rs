//! Configuration, read in this one module: defaults, then an optional TOML
//! file, then `HERALD_*` environment variables, then flags (clap reads the
//! last two together). Nothing else in Herald reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::builder::BoolishValueParser;
use clap::Args;
use serde::Deserialize;

use herald_domain::{AddressPolicy, RetrySchedule};

/// Options shared by the commands that open the database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the embedded database and the admin token hash.
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` (default: DATA_DIR/herald.db). PostgreSQL arrives in a later release.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Optional TOML file with the same settings (snake_case keys).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `herald serve` options. Every flag can also be set as `HERALD_<NAME>`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the API listens on.
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
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
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Log filter (`info`, `herald=debug`, …).
    #[arg(long, env = "HERALD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// The TOML file: the same settings, all optional. Unknown keys are errors,
/// so a misspelt setting is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    admin_token: Option<String>,
    allow_private_networks: Option<bool>,
    allow_http: Option<bool>,
    retry_schedule: Option<String>,
    request_timeout: Option<u64>,
    max_body_bytes: Option<usize>,
    log: Option<String>,
    log_format: Option<String>,
}

fn read_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the configuration file {}", path.display()))
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

/// Where the data lives.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub data_dir: PathBuf,
    pub sqlite_path: PathBuf,
}

impl DatabaseSettings {
    fn resolve(data_dir: Option<PathBuf>, database_url: Option<String>) -> anyhow::Result<Self> {
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("herald-data"));
        let sqlite_path = match database_url.as_deref() {
            None | Some("") => data_dir.join("herald.db"),
            Some(url) if url.starts_with("sqlite://") => PathBuf::from(&url["sqlite://".len()..]),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                bail!("PostgreSQL is not supported by this build yet; use the embedded SQLite database")
            }
            Some(_) => bail!("HERALD_DATABASE_URL must start with sqlite:// (or be unset)"),
        };
        Ok(Self {
            data_dir,
            sqlite_path,
        })
    }

    pub fn from_args(args: &DatabaseArgs) -> anyhow::Result<Self> {
        let file = read_file(args.config.as_deref())?;
        Self::resolve(
            args.data_dir.clone().or(file.data_dir),
            args.database_url.clone().or(file.database_url),
        )
    }
}

/// Everything `herald serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: DatabaseSettings,
    pub admin_token: Option<Redacted>,
    pub policy: AddressPolicy,
    pub retry_schedule: RetrySchedule,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub rotation_grace: Duration,
    pub log: String,
    pub log_format: LogFormat,
}

impl Settings {
    /// Defaults for a server in `data_dir`; used by tests and `herald bench`.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseSettings {
                data_dir: data_dir.to_owned(),
                sqlite_path: data_dir.join("herald.db"),
            },
            admin_token: None,
            policy: AddressPolicy::default(),
            retry_schedule: RetrySchedule::default(),
            request_timeout: Duration::from_secs(15),
            max_body_bytes: 1024 * 1024,
            rotation_grace: Duration::from_secs(24 * 3600),
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }

    pub fn from_args(args: ServeArgs) -> anyhow::Result<Self> {
        let file = read_file(args.database.config.as_deref())?;
        let database = DatabaseSettings::resolve(
            args.database.data_dir.or(file.data_dir),
            args.database.database_url.or(file.database_url),
        )?;
        let mut settings = Self::for_data_dir(&database.data_dir);
        settings.database = database;
        if let Some(listen) = args.listen.or(file.listen) {
            settings.listen = listen;
        }
        settings.admin_token = args
            .admin_token
            .or(file.admin_token)
            .filter(|t| !t.is_empty())
            .map(Redacted);
        if let Some(token) = &settings.admin_token {
            if token.0.len() < 16 {
                bail!("HERALD_ADMIN_TOKEN must be at least 16 characters long");
            }
        }
        settings.policy = AddressPolicy {
            allow_http: args.allow_http.or(file.allow_http).unwrap_or(false),
            allow_private_networks: args
                .allow_private_networks
                .or(file.allow_private_networks)
                .unwrap_or(false),
        };
        if let Some(schedule) = args.retry_schedule.or(file.retry_schedule) {
            settings.retry_schedule = RetrySchedule::parse(&schedule)
                .map_err(|e| anyhow::anyhow!("HERALD_RETRY_SCHEDULE: {}", e.reason))?;
        }
        if let Some(seconds) = args.request_timeout.or(file.request_timeout) {
            if !(1..=300).contains(&seconds) {
                bail!("HERALD_REQUEST_TIMEOUT must be between 1 and 300 seconds");
            }
            settings.request_timeout = Duration::from_secs(seconds);
        }
        if let Some(bytes) = args.max_body_bytes.or(file.max_body_bytes) {
            settings.max_body_bytes = bytes;
        }
        if let Some(log) = args.log.or(file.log) {
            settings.log = log;
        }
        settings.log_format = match args.log_format.or(file.log_format).as_deref() {
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
        assert!(toml::from_str::<FileConfig>("listn = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<FileConfig>("allow_http = true").is_ok());
    }

    #[test]
    fn only_sqlite_urls_are_accepted_for_now() {
        assert!(DatabaseSettings::resolve(None, Some("postgres://x".into())).is_err());
        let sqlite = DatabaseSettings::resolve(None, Some("sqlite:///tmp/h.db".into())).unwrap();
        assert_eq!(sqlite.sqlite_path, PathBuf::from("/tmp/h.db"));
        let default = DatabaseSettings::resolve(None, None).unwrap();
        assert_eq!(default.sqlite_path, PathBuf::from("herald-data/herald.db"));
    }
}
