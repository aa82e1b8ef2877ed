//! `herald app|endpoint|send`: a thin client over a running Herald's API,
//! for scripts. Each command makes one API call and prints the answer's JSON
//! (pretty, on stdout); an error answer is printed on stderr as
//! `404 not_found: …` with exit status 1.

use std::io::Read;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Where the API is and the token to use.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The Herald server's address.
    #[arg(
        long = "server",
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// An admin or app-scoped API token (`HERALD_TOKEN`, else `HERALD_ADMIN_TOKEN`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AppArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: AppCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AppCommand {
    /// List apps.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Create an app.
    Create {
        #[arg(long)]
        name: String,
        /// Your own id for it (usable wherever an app id is).
        #[arg(long)]
        uid: Option<String>,
    },
    /// Show an app (id or uid).
    Get { app: String },
    /// Delete an app with its endpoints, messages and attempts.
    Delete { app: String },
}

#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EndpointCommand {
    /// List an app's endpoints.
    List {
        #[arg(long)]
        app: String,
    },
    /// Create an endpoint.
    Create {
        #[arg(long)]
        app: String,
        #[arg(long)]
        url: String,
        /// Event types it receives (`call.completed`, `call.*`); repeat the
        /// flag for more; none: all.
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show an endpoint.
    Get {
        #[arg(long)]
        app: String,
        endpoint: String,
    },
    /// Print the endpoint's signing secret.
    Secret {
        #[arg(long)]
        app: String,
        endpoint: String,
    },
    /// Delete an endpoint.
    Delete {
        #[arg(long)]
        app: String,
        endpoint: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The app (id or uid).
    #[arg(long)]
    pub app: String,
    /// The event type, e.g. `call.completed`.
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_type: String,
    /// The payload: a JSON object, `@file.json`, or `-` for stdin.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Your id for the event: sending it again is refused (409).
    #[arg(long)]
    pub event_id: Option<String>,
    /// Makes a retried command safe: the same key gets the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = args
            .token
            .clone()
            .or_else(|| std::env::var("HERALD_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .context("no token: pass --token or set HERALD_TOKEN")?;
        Ok(Self {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", args.server.trim_end_matches('/')),
            token,
        })
    }

    /// One call; the parsed answer, or an error that says what came back.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            anyhow::bail!(
                "{} {}: {}",
                status.as_u16(),
                value["code"].as_str().unwrap_or("error"),
                detail_of(&value)
            );
        }
        Ok(value)
    }
}

/// An error answer's `detail`: text, or a 422's list of `{loc, msg}` as
/// `field: msg` (joined); the whole answer if it has neither.
pub fn detail_of(value: &Value) -> String {
    match &value["detail"] {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let field = item["loc"]
                    .as_array()
                    .and_then(|loc| loc.last())
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                format!("{field}: {}", item["msg"].as_str().unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => value.to_string(),
    }
}

fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn print(value: &Value) {
    if !value.is_null() {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }
}

pub async fn app(args: AppArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::new(&args.client)?;
    let answer = match args.command {
        AppCommand::List { limit } => {
            client
                .call(Method::GET, &format!("/app/?limit={limit}"), None, None)
                .await?
        }
        AppCommand::Create { name, uid } => {
            client
                .call(
                    Method::POST,
                    "/app/",
                    Some(json!({"name": name, "uid": uid})),
                    None,
                )
                .await?
        }
        AppCommand::Get { app } => {
            client
                .call(Method::GET, &format!("/app/{}/", segment(&app)), None, None)
                .await?
        }
        AppCommand::Delete { app } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/app/{}/", segment(&app)),
                    None,
                    None,
                )
                .await?
        }
    };
    print(&answer);
    Ok(())
}

pub async fn endpoint(args: EndpointArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::new(&args.client)?;
    let answer = match args.command {
        EndpointCommand::List { app } => {
            client
                .call(
                    Method::GET,
                    &format!("/app/{}/endpoint/", segment(&app)),
                    None,
                    None,
                )
                .await?
        }
        EndpointCommand::Create {
            app,
            url,
            event_types,
            description,
        } => {
            let mut body = json!({"url": url, "description": description});
            if !event_types.is_empty() {
                body["filterTypes"] = json!(event_types);
            }
            client
                .call(
                    Method::POST,
                    &format!("/app/{}/endpoint/", segment(&app)),
                    Some(body),
                    None,
                )
                .await?
        }
        EndpointCommand::Get { app, endpoint } => {
            client
                .call(
                    Method::GET,
                    &format!("/app/{}/endpoint/{}/", segment(&app), segment(&endpoint)),
                    None,
                    None,
                )
                .await?
        }
        EndpointCommand::Secret { app, endpoint } => {
            let secret = client
                .call(
                    Method::GET,
                    &format!(
                        "/app/{}/endpoint/{}/secret/",
                        segment(&app),
                        segment(&endpoint)
                    ),
                    None,
                    None,
                )
                .await?;
            // Just the key: `SECRET=$(herald endpoint secret …)`.
            println!("{}", secret["key"].as_str().unwrap_or_default());
            return Ok(());
        }
        EndpointCommand::Delete { app, endpoint } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/app/{}/endpoint/{}/", segment(&app), segment(&endpoint)),
                    None,
                    None,
                )
                .await?
        }
    };
    print(&answer);
    Ok(())
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let text = match args.payload.as_str() {
        "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        path if path.starts_with('@') => std::fs::read_to_string(&path[1..])
            .with_context(|| format!("reading {}", &path[1..]))?,
        inline => inline.to_owned(),
    };
    let payload: Value = serde_json::from_str(&text).context("the payload is not JSON")?;
    anyhow::ensure!(payload.is_object(), "the payload must be a JSON object");
    let mut body = json!({"eventType": args.event_type, "payload": payload});
    if let Some(event_id) = args.event_id {
        body["eventId"] = json!(event_id);
    }
    let answer = client
        .call(
            reqwest::Method::POST,
            &format!("/app/{}/msg/", segment(&args.app)),
            Some(body),
            args.idempotency_key.as_deref(),
        )
        .await?;
    print(&answer);
    Ok(())
}

/// `herald export`: an app's (or an endpoint's) attempts as JSON Lines or
/// CSV, written to stdout or `--output` as they arrive (constant memory).
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The app (id or uid).
    #[arg(long)]
    pub app: String,
    /// Only this endpoint's attempts (id or uid).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// `jsonl` or `csv`.
    #[arg(long, default_value = "jsonl")]
    pub format: String,
    /// Only attempts with this status: succeeded, failed (or 0 … 3).
    #[arg(long)]
    pub status: Option<String>,
    /// Only attempts of messages of these event types (comma-separated).
    #[arg(long)]
    pub event_types: Option<String>,
    /// Only attempts made at or after this RFC 3339 time.
    #[arg(long)]
    pub after: Option<String>,
    /// Only attempts made before this RFC 3339 time.
    #[arg(long)]
    pub before: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = Client::new(&args.client)?;
    let status = match args.status.as_deref() {
        Some("succeeded" | "success") => Some("0".to_owned()),
        Some("pending") => Some("1".to_owned()),
        Some("failed" | "fail") => Some("2".to_owned()),
        other => other.map(str::to_owned),
    };
    let mut query: Vec<(&str, String)> = vec![("format", args.format.clone())];
    for (name, value) in [
        ("endpoint", args.endpoint.clone()),
        ("status", status),
        ("event_types", args.event_types.clone()),
        ("after", args.after.clone()),
        ("before", args.before.clone()),
    ] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let url = format!("{}/app/{}/attempt/export/", client.base, segment(&args.app));
    let mut response = client
        .http
        .get(&url)
        .query(&query)
        .bearer_auth(&client.token)
        .send()
        .await
        .with_context(|| format!("reaching {}", client.base))?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::bail!(
            "{status} {}: {}",
            value["code"].as_str().unwrap_or("error"),
            detail_of(&value)
        );
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(chunk) = response.chunk().await.context("the export was cut off")? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(())
}

/// `herald health`: exit status 0 when the server answers its health route
/// (the database reachable), 1 otherwise; for container health checks.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The Herald server's address.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/health", args.server.trim_end_matches('/'));
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(args.timeout))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reaching {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url}: {} {body}", status.as_u16());
    println!("{body}");
    Ok(())
}
