//! The API's listener: accepts TCP connections and serves HTTP/1.1 on them
//! under rules that keep slow, idle or greedy clients from holding the
//! server (the spirit of nginx's `client_header_timeout`,
//! `client_body_timeout`, `keepalive_timeout` and `send_timeout`):
//!
//! - a new connection must send a complete request head within the header
//!   timeout, and so must a kept-alive one from the first byte of its next
//!   request; a kept-alive connection with nothing to say is closed after
//!   the keep-alive timeout;
//! - a request body must keep coming: no pause longer than the body
//!   timeout, and after that long at least the minimum rate on average
//!   (else 408 and the connection is closed);
//! - a client that does not read its answer is dropped after the send
//!   timeout without progress;
//! - a body declared larger than the limit is refused (413) before any of
//!   it is read;
//! - at most `max_connections` are open at once, which leaves the rest of
//!   the process's descriptors to deliveries and the database; at the cap,
//!   the connection idle the longest gives its place to the new one (so
//!   idle connections cannot lock anyone out), and with none idle the new
//!   one is closed at once.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::ApiError;

mod watched;
use watched::{Busy, Counted, Timed, Watched};

/// The connection rules; [`ConnectionLimits::default`] holds the defaults
/// documented in the README.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head, from the connection's
    /// start or from the first byte of a request on a kept-alive one.
    pub header_timeout: Duration,
    /// Longest pause while a request body arrives, and the grace before
    /// `body_min_rate` applies.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average once `body_timeout`
    /// has passed since its start (0: no minimum).
    pub body_min_rate: u64,
    /// How long a kept-alive connection may sit between requests.
    pub keepalive_timeout: Duration,
    /// Longest wait for a client to take more of its answer.
    pub send_timeout: Duration,
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// Requests declaring a larger `Content-Length` are refused at once.
    pub max_body_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 4096,
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first connection, plus one (0 means "not set").
fn clock() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The instant of a [`clock`] reading.
fn instant_at(ms: u64) -> Instant {
    *START.get_or_init(Instant::now) + Duration::from_millis(ms.saturating_sub(1))
}

/// What the connection's watchdog needs to know of it.
#[derive(Debug)]
struct Connection {
    accepted: u64,
    /// Requests being handled (their answers not yet fully written).
    active: AtomicUsize,
    /// Whether a request has been handled on it yet.
    served: AtomicBool,
    /// When the last request's answer was done.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (0: none yet).
    head_started: AtomicU64,
    /// A body read by the handler stalled past the body timeout.
    body_timed_out: AtomicBool,
    /// Closed to make room for a new connection.
    evicted: AtomicBool,
    /// Wakes the watchdog at once (eviction). Other changes need no wake:
    /// the watchdog looks at least once per header timeout, and no change
    /// brings a deadline closer than one header timeout from now.
    changed: tokio::sync::Notify,
}

impl Connection {
    fn new(now: u64) -> Self {
        Self {
            accepted: now,
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0
    }

    /// When the watchdog closes the connection unless something happens
    /// first; `None` while a request is being handled (its body and its
    /// answer have timeouts of their own).
    fn deadline(&self, limits: &ConnectionLimits) -> Option<u64> {
        if self.evicted.load(Ordering::Acquire) {
            return Some(0);
        }
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let header = limits.header_timeout.as_millis() as u64;
        let head_started = self.head_started.load(Ordering::Acquire);
        if head_started != 0 {
            return Some(head_started + header);
        }
        if !self.served.load(Ordering::Acquire) {
            return Some(self.accepted + header);
        }
        Some(self.idle_since.load(Ordering::Acquire) + limits.keepalive_timeout.as_millis() as u64)
    }

    fn request_started(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.served.store(true, Ordering::Release);
    }

    fn request_ended(&self) {
        self.idle_since.store(clock(), Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    fn bytes_arrived(&self) {
        if self.active.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started.store(clock(), Ordering::Release);
        }
    }
}

/// The open connections, for the cap and for eviction.
#[derive(Debug, Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
}

impl Registry {
    /// Registers a new connection, making room if the cap is reached by
    /// evicting the one idle the longest; `None` when every open
    /// connection is busy.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Connection>)> {
        let mut open = self.open.lock().expect("connection registry");
        if open.len() >= max && !Self::evict_locked(&mut open) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::new(clock()));
        open.insert(id, connection.clone());
        Some((id, connection))
    }

    /// Closes the connection idle the longest; false when none is idle.
    fn evict_idle(&self) -> bool {
        Self::evict_locked(&mut self.open.lock().expect("connection registry"))
    }

    fn evict_locked(open: &mut HashMap<u64, Arc<Connection>>) -> bool {
        let oldest = open
            .iter()
            .filter(|(_, c)| c.is_idle())
            .min_by_key(|(_, c)| c.idle_since.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        let Some(id) = oldest else {
            return false;
        };
        if let Some(connection) = open.remove(&id) {
            connection.evicted.store(true, Ordering::Release);
            connection.changed.notify_one();
        }
        true
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("connection registry").remove(&id);
    }

    fn len(&self) -> usize {
        self.open.lock().expect("connection registry").len()
    }
}

/// Serves `service` on `listener` under `limits` until `shutdown`
/// completes; then stops accepting, lets each connection finish the
/// request it is handling, and returns once they have (or after 30 s).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let limits = Arc::new(limits);
    let registry = Arc::new(Registry::default());
    let stop = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors: free one by closing the connection
                // idle the longest, and wait a moment before trying again
                // (the failed accept left the client in the backlog).
                tracing::warn!(%error, open = registry.len(), "accepting a connection failed");
                registry.evict_idle();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, connection)) = registry.admit(limits.max_connections) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "connection cap reached with every connection busy: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let limits = limits.clone();
        let registry = registry.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            run_connection(stream, service, connection, &limits, stop).await;
            registry.remove(id);
        });
    }
    drop(listener);
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(30), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = registry.len(),
            "connections still open 30 s after shutdown began"
        );
    }
    Ok(())
}

async fn run_connection<S>(
    stream: TcpStream,
    service: S,
    connection: Arc<Connection>,
    limits: &ConnectionLimits,
    stop: CancellationToken,
) where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(Watched::new(
        stream,
        connection.clone(),
        limits.send_timeout,
    ));
    let handler = {
        let connection = connection.clone();
        let limits = *limits;
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            handle(request, service.clone(), connection.clone(), limits)
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, handler);
    tokio::pin!(served);
    // One timer for the connection's life, moved rather than made anew: it
    // wakes at the deadline, or after one header timeout at most (no
    // deadline can come sooner than that from now without a wake-up).
    let longest = limits.header_timeout.as_millis() as u64;
    let next_look = |deadline: Option<u64>| {
        let latest = clock() + longest;
        instant_at(deadline.map_or(latest, |at| at.min(latest)))
    };
    let watchdog = tokio::time::sleep_until(next_look(connection.deadline(limits)));
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        let evicted = connection.changed.notified();
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = evicted => {
                tracing::debug!("closing the connection idle the longest to admit a new one");
                return;
            }
            () = &mut watchdog => {
                let deadline = connection.deadline(limits);
                if deadline.is_some_and(|at| at <= clock()) {
                    tracing::debug!("closing a connection past its timeout");
                    return;
                }
                watchdog.as_mut().reset(next_look(deadline));
            }
            () = stop.cancelled(), if !draining => {
                served.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// One request: refused at once if its declared body is too large;
/// otherwise handed to the router with a watched body, and the
/// connection counted busy until its answer has been written.
async fn handle<S>(
    request: hyper::Request<Incoming>,
    service: S,
    connection: Arc<Connection>,
    limits: ConnectionLimits,
) -> Result<Response, std::convert::Infallible>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    connection.request_started();
    let busy = Busy(connection.clone());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        let mut response = ApiError::PayloadTooLarge.into_response();
        // The body is not read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response.map(|body| Counted::body(body, busy)));
    }
    let request = request.map(|body| {
        Timed::body(
            body,
            connection.clone(),
            limits.body_timeout,
            limits.body_min_rate,
        )
    });
    let response = match service.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = if connection.body_timed_out.load(Ordering::Acquire) {
        let mut response = ApiError::RequestTimeout.into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    } else {
        response
    };
    Ok(response.map(|body| Counted::body(body, busy)))
}
