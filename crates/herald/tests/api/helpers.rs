//! Test harness: `spawn_app()` runs Herald in-process on port 0 with its own
//! temporary database; `Receiver` is a scripted webhook receiver on port 0
//! that records every request it gets.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use herald::child::ChildServer;
use herald::config::Redacted;
use herald::{Application, Settings};
use herald_domain::{AddressPolicy, RetrySchedule};

pub const TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data_dir: tempfile::TempDir,
}

/// Options that differ between tests.
pub struct Options {
    pub retry_schedule: &'static str,
    pub request_timeout: Duration,
    pub auto_disable: Option<herald_store::AutoDisable>,
    pub failing_after: u64,
    pub success_rate: Option<herald_store::RateRule>,
    pub operator_webhook_url: Option<String>,
    pub email: Option<herald_dispatch::EmailConfig>,
    pub allow_private_networks: bool,
    pub allowed_cidrs: Vec<herald_domain::Cidr>,
    pub network: herald_dispatch::Network,
    pub token_rate_limit: Option<u32>,
    pub max_endpoints_per_app: usize,
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: usize,
    pub max_concurrent_requests: usize,
    pub metrics_per_endpoint: bool,
    pub connections: herald_api::ConnectionLimits,
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry_schedule: "100ms,100ms,100ms",
            request_timeout: Duration::from_secs(5),
            auto_disable: Settings::for_data_dir(std::path::Path::new(".")).auto_disable,
            failing_after: 5,
            success_rate: None,
            operator_webhook_url: None,
            email: None,
            allow_private_networks: true,
            allowed_cidrs: Vec::new(),
            network: herald_dispatch::Network::default(),
            token_rate_limit: Some(100),
            max_endpoints_per_app: 100,
            max_in_flight: 4096,
            max_in_flight_per_endpoint: 64,
            max_concurrent_requests: 1024,
            metrics_per_endpoint: false,
            connections: herald_api::ConnectionLimits::default(),
            poll_interval: Duration::from_secs(5),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = Settings::for_data_dir(data_dir.path());
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.admin_token = Some(Redacted(TOKEN.into()));
    settings.policy = AddressPolicy {
        allow_http: true,
        allow_private_networks: options.allow_private_networks,
        allowed: options.allowed_cidrs.clone().into(),
    };
    settings.network = options.network.clone();
    settings.token_rate_limit = options.token_rate_limit;
    settings.max_endpoints_per_app = options.max_endpoints_per_app;
    settings.retry_schedule = RetrySchedule::parse(options.retry_schedule).unwrap();
    settings.request_timeout = options.request_timeout;
    settings.auto_disable = options.auto_disable;
    settings.failing_after = options.failing_after;
    settings.success_rate = options.success_rate;
    settings.operator_webhook_url = options.operator_webhook_url;
    settings.email = options.email;
    settings.max_in_flight = options.max_in_flight;
    settings.max_in_flight_per_endpoint = options.max_in_flight_per_endpoint;
    settings.max_concurrent_requests = options.max_concurrent_requests;
    settings.metrics_per_endpoint = options.metrics_per_endpoint;
    settings.connections = options.connections;
    settings.poll_interval = options.poll_interval;
    let application = Application::build(settings).await.expect("Herald starts");
    let address = application.address();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        shutdown,
        server: Some(server),
        _data_dir: data_dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.address)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.request_as(Some(TOKEN), method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request with `token` (or none); the body as text.
    pub async fn request_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn create_app(&self, name: &str) -> String {
        let (status, app) = self.post("/app/", json!({ "name": name })).await;
        assert_eq!(status, 201, "creating an app: {app}");
        app["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_endpoint(&self, app: &str, url: &str, filter: Option<&[&str]>) -> String {
        let mut body = json!({ "url": url });
        if let Some(filter) = filter {
            body["filterTypes"] = json!(filter);
        }
        let (status, endpoint) = self.post(&format!("/app/{app}/endpoint/"), body).await;
        assert_eq!(status, 201, "creating an endpoint: {endpoint}");
        endpoint["id"].as_str().unwrap().to_owned()
    }

    pub async fn secret(&self, app: &str, endpoint: &str) -> String {
        let (status, body) = self
            .get(&format!("/app/{app}/endpoint/{endpoint}/secret/"))
            .await;
        assert_eq!(status, 200);
        body["key"].as_str().unwrap().to_owned()
    }

    pub async fn send(&self, app: &str, event_type: &str, payload: Value) -> String {
        let (status, message) = self
            .post(
                &format!("/app/{app}/msg/"),
                json!({ "eventType": event_type, "payload": payload }),
            )
            .await;
        assert_eq!(status, 202, "sending a message: {message}");
        message["id"].as_str().unwrap().to_owned()
    }

    /// The attempts of one message, oldest first.
    pub async fn attempts_of(&self, app: &str, message: &str) -> Vec<Value> {
        let (status, page) = self
            .get(&format!("/app/{app}/attempt/msg/{message}/"))
            .await;
        assert_eq!(status, 200, "{page}");
        let mut attempts = page["data"].as_array().cloned().unwrap_or_default();
        attempts.reverse();
        attempts
    }
}

/// Waits until `message` has `count` attempts.
pub async fn attempted(app: &TestApp, tenant: &str, message: &str, count: usize) {
    eventually(
        Duration::from_secs(10),
        "the retries to run out",
        || async { (app.attempts_of(tenant, message).await.len() >= count).then_some(()) },
    )
    .await;
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `request` carries a valid Standard Webhooks signature by `secret`.
pub fn verifies(request: &Recorded, secret: &herald_domain::Secret) -> bool {
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    secret.verify(
        &request.header("webhook-id"),
        timestamp,
        &request.body,
        &request.header("webhook-signature"),
    )
}

/// What the receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Waits this long, then answers 200.
    Delay(Duration),
    /// This status with this body.
    Body(u16, &'static str),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Recorded>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
    arrived: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<ReceiverState>,
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = format!("/{path}");
    let scripted = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    let reply = scripted
        .or_else(|| state.defaults.lock().unwrap().get(&path).copied())
        .unwrap_or(Reply::Status(200));
    state.requests.lock().unwrap().push(Recorded {
        path,
        headers,
        body,
        at: Instant::now(),
    });
    state.arrived.notify_waiters();
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Delay(duration) => {
            tokio::time::sleep(duration).await;
            StatusCode::OK.into_response()
        }
        Reply::Body(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/{*path}", post(record))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The next answers on `path`, in order; afterwards the default applies.
    pub fn script(&self, path: &str, replies: &[Reply]) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(path.into(), replies.iter().copied().collect());
    }

    pub fn always(&self, path: &str, reply: Reply) {
        self.state
            .defaults
            .lock()
            .unwrap()
            .insert(path.into(), reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits until `count` requests have arrived in all.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Recorded> {
        let wait = async {
            loop {
                let arrived = self.state.arrived.notified();
                let requests = self.requests();
                if requests.len() >= count {
                    return requests;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(requests) => requests,
            Err(_) => panic!(
                "expected {count} requests within {limit:?}, got {}",
                self.requests().len()
            ),
        }
    }
}

/// A `herald serve` child process (the real binary), for crash tests.
pub struct Server(ChildServer);

impl std::ops::Deref for Server {
    type Target = ChildServer;
    fn deref(&self) -> &ChildServer {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut ChildServer {
        &mut self.0
    }
}

/// Environment for a server on its own SQLite data directory.
pub fn sqlite_env(data_dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![("HERALD_DATA_DIR", data_dir.display().to_string())]
}

impl Server {
    /// Starts `herald serve` with `env` over test defaults (port 0, the
    /// test token, loopback allowed, fast retries).
    pub fn start(env: &[(&str, String)]) -> Self {
        Self::start_wrapped(&[], env)
    }

    /// Like [`Server::start`], through `wrapper` (e.g. `prlimit --nofile=1024`).
    pub fn start_wrapped(wrapper: &[&str], env: &[(&str, String)]) -> Self {
        let mut all = vec![
            ("HERALD_LISTEN", "127.0.0.1:0".to_owned()),
            ("HERALD_ADMIN_TOKEN", TOKEN.to_owned()),
            ("HERALD_ALLOW_HTTP", "true".to_owned()),
            ("HERALD_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
            (
                "HERALD_RETRY_SCHEDULE",
                "500ms,500ms,500ms,500ms,500ms,500ms".to_owned(),
            ),
            ("HERALD_LOG", "warn,herald=info".to_owned()),
        ];
        all.extend(env.iter().cloned());
        let program = std::path::Path::new(env!("CARGO_BIN_EXE_herald"));
        Self(ChildServer::start_wrapped(wrapper, program, &all).expect("herald serve starts"))
    }

    pub fn kill(self) {
        self.0.kill();
    }

    /// Stops it gracefully (SIGTERM) and waits for it to exit.
    pub fn terminate(self) {
        self.0.terminate();
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        client
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, client: &reqwest::Client, path: &str, body: Value) -> Value {
        let response = client
            .post(format!("http://{}/api/v1{path}", self.address))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub async fn get(&self, client: &reqwest::Client, path: &str) -> Value {
        let response = client
            .get(format!("http://{}/api/v1{path}", self.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }
}

/// Says that `test` cannot run here and why — or, when CI demands every
/// suite (`HERALD_TEST_REQUIRE_ALL` set), fails it.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os("HERALD_TEST_REQUIRE_ALL").is_some() {
        panic!("{test} cannot run: {why} (HERALD_TEST_REQUIRE_ALL is set)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// A PostgreSQL database of its own for one test, when
/// `HERALD_TEST_DATABASE_URL` names a server; `None` (and a SKIPPED line)
/// otherwise. Databases left by interrupted runs are dropped after an hour.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// Tests that restart PostgreSQL take this exclusively; the others share it.
pub static POSTGRES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

impl TestDatabase {
    pub async fn create(test: &str) -> Option<Self> {
        use sqlx::Connection;
        let Ok(admin_url) = std::env::var("HERALD_TEST_DATABASE_URL") else {
            skip_or_fail(
                test,
                "set HERALD_TEST_DATABASE_URL to run it against PostgreSQL",
            );
            return None;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "herald_test_{now}_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL reachable");
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'herald_test_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for database in stale {
            let created: u64 = database
                .split('_')
                .nth(2)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if created + 3600 < now {
                let _ = sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                ))
                .execute(&mut conn)
                .await;
            }
        }
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url)
            .await
            .expect("PostgreSQL reachable")
    }

    /// A session on the server's administrative database (not this one),
    /// and this database's name: for changing the database itself.
    pub async fn connect_admin(&self) -> (sqlx::PgConnection, &str) {
        use sqlx::Connection;
        let conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .expect("PostgreSQL reachable");
        (conn, &self.name)
    }

    pub async fn drop_database(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("HERALD_DATABASE_URL", self.url.clone())]
    }
}

/// A minimal SMTP server on loopback that accepts every message and keeps
/// its data (headers and body) — enough for Herald's e-mail notifications.
#[derive(Clone, Default)]
pub struct SmtpSink {
    pub address: Option<SocketAddr>,
    mails: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Self {
            address: Some(listener.local_addr().unwrap()),
            mails: Arc::default(),
        };
        let mails = sink.mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mails = mails.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink ESMTP\r\n").await.ok();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(body) = data.as_mut() {
                            if line == "." {
                                mails.lock().unwrap().push(data.take().unwrap());
                                write.write_all(b"250 queued\r\n").await.ok();
                            } else {
                                body.push_str(&line);
                                body.push('\n');
                            }
                            continue;
                        }
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 sink\r\n",
                            "DATA" => {
                                data = Some(String::new());
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.ok();
                                break;
                            }
                            _ => b"250 ok\r\n",
                        };
                        write.write_all(reply).await.ok();
                    }
                });
            }
        });
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.address.unwrap())
    }

    pub fn mails(&self) -> Vec<String> {
        self.mails.lock().unwrap().clone()
    }
}

/// An error answer's `detail` as text (a 422's list as `field: msg`), as
/// the CLI shows it.
pub fn detail_text(error: &Value) -> String {
    herald::client::detail_of(error)
}
