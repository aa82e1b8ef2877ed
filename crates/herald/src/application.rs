//! Builds a running Herald from [`Settings`]: opens and migrates the store,
//! seeds the catalog, binds the listener (port 0 works: the real port is
//! reported), and runs API, dispatcher and housekeeping until shut down.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use herald_api::{hash_token, ApiConfig, AppState};
use herald_dispatch::{AlertConfig, DispatchConfig, Dispatcher};
use herald_domain::ids::{IdOrUid, Uid};
use herald_domain::{catalog, AppId, EndpointUrl, FilterTypes, Secret};
use herald_store::{
    AppInput, Cursor, EndpointInput, EventTypeInput, PageRequest, PgOptions, PgStore,
    SqliteOptions, SqliteStore, Store, StoreError,
};

use crate::config::{Database, Role, Settings};

const TOKEN_HASH_FILE: &str = "admin-token.sha256";
const LOCK_FILE: &str = "herald.lock";
/// How long idempotency keys are remembered.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    connections: herald_api::ConnectionLimits,
    address: SocketAddr,
    state: AppState,
    role: Role,
    dispatcher: Arc<Dispatcher>,
    retention: Option<Duration>,
    /// Held for the life of the process when SQLite is used: it serves one process only.
    _lock: Option<File>,
    /// A token generated on this start, to be shown once.
    pub generated_admin_token: Option<String>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let data_dir = &settings.database.data_dir;
        let (store, lock): (Arc<dyn Store>, Option<File>) = match &settings.database.database {
            Database::Sqlite { path } => {
                std::fs::create_dir_all(data_dir).with_context(|| {
                    format!("creating the data directory {}", data_dir.display())
                })?;
                let lock = lock_data_dir(data_dir)?;
                let mut options = SqliteOptions::new(path);
                options.sealing = settings.database.sealing.clone();
                let store = SqliteStore::open(&options).context("opening the database")?;
                (Arc::new(store), Some(lock))
            }
            Database::Postgres {
                url,
                max_connections,
                acquire_timeout,
            } => {
                anyhow::ensure!(
                    settings.admin_token.is_some(),
                    "HERALD_ADMIN_TOKEN is required with PostgreSQL, so that every process accepts the same token"
                );
                let mut options = PgOptions::new(url.0.clone());
                options.sealing = settings.database.sealing.clone();
                options.max_connections = *max_connections;
                options.acquire_timeout = *acquire_timeout;
                let store = PgStore::open(&options).await.with_context(|| {
                    format!("connecting to {}", herald_store::redact_password(&url.0))
                })?;
                (Arc::new(store), None)
            }
        };
        let (admin_token_hash, generated_admin_token) = admin_token(&settings, data_dir)?;
        seed_catalog(store.as_ref()).await?;
        let operations_app = operations_app(store.as_ref(), &settings).await?;
        // On SQLite only this process can hold leases (see the lock), so
        // leases left by a crashed run are free right away; on PostgreSQL
        // they run out by themselves.
        let released = store.release_orphaned_leases().await?;
        if released > 0 {
            tracing::info!(
                released,
                "resuming deliveries left in flight by the previous run"
            );
        }

        let alerts = AlertConfig {
            operations_app,
            failing_after: settings.failing_after,
            success_rate: settings.success_rate,
        };
        let metrics = Arc::new(herald_dispatch::Metrics::new(crate::VERSION));
        let dispatcher = Dispatcher::new(
            store.clone(),
            DispatchConfig {
                metrics: metrics.clone(),
                retry_schedule: settings.retry_schedule.clone(),
                timeout: settings.request_timeout,
                lease: settings.lease,
                idle_poll: settings.poll_interval,
                max_in_flight: settings.max_in_flight,
                max_in_flight_per_endpoint: settings.max_in_flight_per_endpoint,
                policy: settings.policy.clone(),
                network: settings.network.clone(),
                auto_disable: settings.auto_disable,
                email: settings.email.clone(),
                alerts: Some(alerts),
                ..DispatchConfig::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("e-mail notifications: {e}"))?;
        let listener = bind(settings.listen, settings.listen_backlog)
            .with_context(|| format!("listening on {}", settings.listen))?;
        let address = listener.local_addr()?;
        let mut connections = settings.connections;
        connections.max_body_bytes = settings.max_body_bytes;
        connections.max_connections = connection_cap(settings.max_connections);
        let state = AppState {
            store,
            metrics,
            schemas: Arc::new(herald_api::schemas::Schemas::new(settings.enforce_schemas)),
            // An API-only process leaves deliveries unleased for the workers.
            dispatcher: (settings.role == Role::All).then(|| dispatcher.clone()),
            rate_limiter: settings
                .token_rate_limit
                .map(|rate| Arc::new(herald_api::RateLimiter::new(rate))),
            request_slots: Arc::new(herald_api::RequestSlots::new(
                settings.max_concurrent_requests,
                settings
                    .max_concurrent_requests_per_app
                    .unwrap_or(settings.max_concurrent_requests / 8),
                settings.max_concurrent_requests / 10,
            )),
            listing_pages: Arc::new(herald_api::listing_pages()),
            filters: Arc::default(),
            config: Arc::new(ApiConfig {
                max_endpoints_per_app: settings.max_endpoints_per_app,
                admin_token_hash,
                policy: settings.policy.clone(),
                egress: herald_api::Egress {
                    addresses: settings.egress_addresses.clone(),
                    proxied: settings.network.proxy.is_some(),
                },
                body_limit: settings.max_body_bytes,
                rotation_grace: settings.rotation_grace,
                max_concurrent_requests: settings.max_concurrent_requests,
                max_concurrent_requests_per_app: settings
                    .max_concurrent_requests_per_app
                    .unwrap_or(settings.max_concurrent_requests / 8),
                test_event_wait: settings.request_timeout + Duration::from_secs(5),
                request_timeout: settings.request_timeout,
                alerts,
                public_url: settings
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{address}")),
                portal_session: settings.portal_session,
                portal_frame_ancestors: settings.portal_frame_ancestors.clone(),
                metrics_per_endpoint: settings.metrics_per_endpoint,
                retention: settings.retention,
            }),
        };
        Ok(Self {
            listener,
            connections,
            address,
            state,
            role: settings.role,
            retention: settings.retention,
            dispatcher,
            _lock: lock,
            generated_admin_token,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` is cancelled, then stops accepting requests,
    /// stops claiming work and lets in-flight attempts finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(address = %self.address, role = ?self.role, "Herald is listening");
        let dispatcher = match self.role {
            Role::Api => None,
            Role::All | Role::Worker => {
                Some(tokio::spawn(self.dispatcher.clone().run(shutdown.clone())))
            }
        };
        let housekeeping = tokio::spawn(housekeeping(
            self.state.store.clone(),
            self.retention,
            shutdown.clone(),
        ));
        self.resume_tasks().await;
        let router = match self.role {
            Role::Worker => herald_api::health_router(self.state),
            Role::All | Role::Api => herald_api::router(self.state),
        };
        let stop = shutdown.clone();
        herald_api::serve(self.listener, router, self.connections, async move {
            stop.cancelled().await
        })
        .await
        .context("serving the API")?;
        shutdown.cancel();
        if let Some(dispatcher) = dispatcher {
            dispatcher.await.ok();
        }
        housekeeping.await.ok();
        tracing::info!("Herald stopped");
        Ok(())
    }
}

impl Application {
    /// Carries on with background tasks a previous run left unfinished
    /// (each resumes from its saved cursor; steps of one task never overlap,
    /// even if several processes resume it).
    async fn resume_tasks(&self) {
        let tasks = match self.state.store.running_tasks().await {
            Ok(tasks) => tasks,
            Err(error) => {
                tracing::warn!(%error, "could not read unfinished background tasks");
                return;
            }
        };
        for task in tasks {
            tracing::info!(task = %task, "resuming a recovery");
            let dispatcher = self.dispatcher.clone();
            tokio::spawn(herald_dispatch::run_recovery(
                self.state.store.clone(),
                task,
                move || dispatcher.nudge(),
            ));
        }
    }
}

/// Binds the API's socket with a listen backlog of `backlog` (the kernel
/// caps it at `net.core.somaxconn`).
fn bind(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Raises the soft file-descriptor limit to the hard one, and returns how
/// many API connections to allow: `configured`, or the limit less what
/// deliveries and the database need (a quarter of it, at least 256). The
/// limits are logged, since running out of descriptors is what this cap
/// prevents.
fn connection_cap(configured: Option<usize>) -> usize {
    let (soft, hard) = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(_) => rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024)),
        Err(error) => {
            tracing::warn!(%error, "could not raise the file-descriptor limit");
            rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024))
        }
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(10_000_000);
    let reserve = (soft / 4).max(256);
    let automatic = soft.saturating_sub(reserve).max(16);
    let cap = configured.unwrap_or(automatic);
    if cap > automatic {
        tracing::warn!(
            max_connections = cap,
            file_limit = soft,
            "HERALD_MAX_CONNECTIONS leaves fewer than {reserve} descriptors for deliveries and the database"
        );
    }
    tracing::info!(
        file_limit = soft,
        hard_file_limit = hard,
        max_connections = cap,
        "file descriptors: API connections capped, the rest kept for deliveries and the database"
    );
    cap
}

fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another Herald process is using {}; the embedded database serves one process",
            data_dir.display()
        )
    })?;
    Ok(file)
}

/// The configured token's hash; otherwise the stored hash; otherwise a new
/// token whose hash is stored and which is returned to be printed once.
fn admin_token(settings: &Settings, data_dir: &Path) -> anyhow::Result<([u8; 32], Option<String>)> {
    if let Some(token) = &settings.admin_token {
        return Ok((hash_token(&token.0), None));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(TOKEN_HASH_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = decode_hex(text.trim())
            .with_context(|| format!("{} is not a SHA-256 hex digest", path.display()))?;
        return Ok((bytes, None));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("hrld_admin_{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = hash_token(&token);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex).with_context(|| format!("writing {}", path.display()))?;
    Ok((hash, Some(token)))
}

fn decode_hex(text: &str) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(text.len() == 64, "expected 64 hex digits");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// The application whose messages are Herald's operational events (its
/// endpoints are the operators'), created on first start; with
/// `HERALD_OPERATOR_WEBHOOK_URL`, that URL is one of its endpoints.
async fn operations_app(store: &dyn Store, settings: &Settings) -> anyhow::Result<AppId> {
    let uid = Uid::parse("uid", catalog::OPERATIONS_APP_UID).expect("a valid uid");
    let reference = IdOrUid::Uid(uid.clone());
    let app = match store.get_app(&reference).await {
        Ok(app) => app,
        Err(StoreError::NotFound) => {
            let created = store
                .create_app(
                    AppInput {
                        uid: Some(uid),
                        name: "Herald operations".into(),
                        rate_limit: None,
                        metadata: Default::default(),
                    },
                    // Made by Herald itself, from its configuration: not a
                    // change anyone made through the API.
                    None,
                )
                .await;
            match created {
                Ok(app) => app,
                // Another process created it at the same moment.
                Err(StoreError::Conflict { .. }) => store.get_app(&reference).await?,
                Err(error) => return Err(error.into()),
            }
        }
        Err(error) => return Err(error.into()),
    };
    if let Some(url) = &settings.operator_webhook_url {
        let url = EndpointUrl::parse(url, &settings.policy)
            .map_err(|e| anyhow::anyhow!("HERALD_OPERATOR_WEBHOOK_URL: {}", e.reason))?;
        let existing = store
            .list_endpoints(
                app.id,
                PageRequest {
                    limit: 250,
                    cursor: Cursor::Start,
                },
            )
            .await?;
        if !existing.data.iter().any(|e| e.url.as_str() == url.as_str()) {
            let endpoint = store
                .create_endpoint(
                    app.id,
                    EndpointInput {
                        uid: None,
                        url,
                        description: "Operator notifications (HERALD_OPERATOR_WEBHOOK_URL)".into(),
                        disabled: false,
                        filter_types: FilterTypes::all(),
                        channels: None,
                        rate_limit: None,
                        version: 1,
                        metadata: Default::default(),
                        retry_policy: None,
                        strict_ordering: false,
                        options: Default::default(),
                    },
                    Default::default(),
                    Secret::generate(),
                    None,
                )
                .await?;
            tracing::info!(endpoint = %endpoint.id, "added the operator webhook; read its signing secret with GET /api/v1/app/herald-operations/endpoint/{}/secret/", endpoint.id);
        }
    }
    Ok(app.id)
}

async fn seed_catalog(store: &dyn Store) -> anyhow::Result<()> {
    let entries = catalog::builtin()
        .into_iter()
        .chain(catalog::operational())
        .map(|entry| EventTypeInput {
            name: herald_domain::EventTypeName::parse(entry.name).expect("catalog names are valid"),
            description: entry.description.to_owned(),
            schemas: Some(serde_json::json!({ "1": entry.schema })),
            archived: false,
            deprecated: false,
            feature_flag: None,
            group_name: None,
            enforce_schema: false,
        })
        .collect();
    let added = store.seed_event_types(entries).await?;
    if added > 0 {
        tracing::info!(added, "seeded the built-in event catalog");
    }
    Ok(())
}

/// Periodic clean-up that keeps tables from growing without bound.
async fn housekeeping(
    store: Arc<dyn Store>,
    retention: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ago = |window: Duration| {
            std::time::SystemTime::now()
                .checked_sub(window)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default()
        };
        match store.purge_idempotency_keys(ago(IDEMPOTENCY_WINDOW)).await {
            Ok(removed) if removed > 0 => tracing::debug!(removed, "purged idempotency keys"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "purging idempotency keys failed"),
        }
        match store.purge_health(ago(HEALTH_KEPT)).await {
            Ok(removed) if removed > 0 => tracing::debug!(removed, "purged health buckets"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "purging health buckets failed"),
        }
        if let Some(retention) = retention {
            purge_old_messages(store.as_ref(), ago(retention), &shutdown).await;
            match store.drop_attempts_before(ago(retention)).await {
                Ok(dropped) if dropped > 0 => {
                    tracing::info!(
                        dropped,
                        "dropped days of attempts past the retention period"
                    )
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "dropping old attempt partitions failed"),
            }
        }
    }
}

/// Retention in small batches (each its own short transaction, with a pause
/// between), so purging never holds up deliveries.
async fn purge_old_messages(store: &dyn Store, before: i64, shutdown: &CancellationToken) {
    const BATCH: usize = 500;
    let mut purged = 0;
    while !shutdown.is_cancelled() {
        match store.purge_messages(before, BATCH).await {
            Ok(removed) => {
                purged += removed;
                if (removed as usize) < BATCH {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "purging old messages failed");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if purged > 0 {
        tracing::info!(purged, "purged messages past the retention period");
    }
}

/// Health buckets are read for at most a week; a day more is kept.
const HEALTH_KEPT: Duration = Duration::from_secs(8 * 24 * 3600);
