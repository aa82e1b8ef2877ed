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
//! - a body declared larger than the limit is refused (413) before it is
//!   handled; the refusal is written at once, and what the client goes on
//!   sending is read and thrown away for a while (nginx's lingering
//!   close), so that a client that writes its whole body before reading
//!   gets the 413 rather than a reset;
//! - at most `max_connections` are open at once, which leaves the rest of
//!   the process's descriptors to deliveries and the database; at the cap,
//!   the least productive connection gives its place to the new one (see
//!   [`Registry::victim`]): one that has not yet sent a whole request
//!   first, then one idle between requests, taken from an address that
//!   holds more than its share (an eighth of the cap) before any other;
//!   with every connection handling a request, the new one is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
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
    /// The client's address, for its share of the cap.
    peer: IpAddr,
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
    fn new(now: u64, peer: IpAddr) -> Self {
        Self {
            accepted: now,
            peer,
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// How little the connection has done, for eviction: `None` while it
    /// handles a request (it is never evicted then); otherwise its rank
    /// and a time, the lowest pair going first. A connection that has not
    /// yet sent a whole request ranks 0, by when it began (a client
    /// trickling its first head byte by byte has done nothing more than
    /// one that sent nothing); one idle between requests ranks 1, by when
    /// it went idle; one that served requests and is now slow with the
    /// next head ranks 2, by when that head began.
    fn progress(&self) -> Option<(u8, u64)> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head_started = self.head_started.load(Ordering::Acquire);
        if !self.served.load(Ordering::Acquire) {
            return Some((0, self.accepted));
        }
        if head_started == 0 {
            Some((1, self.idle_since.load(Ordering::Acquire)))
        } else {
            Some((2, head_started))
        }
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
    /// Registers a new connection from `peer`, making room if the cap is
    /// reached by evicting the least productive one; `None` when every
    /// open connection is handling a request.
    fn admit(&self, max: usize, peer: IpAddr) -> Option<(u64, Arc<Connection>)> {
        let mut open = self.open.lock().expect("connection registry");
        if open.len() >= max && !Self::evict_locked(&mut open, share_of(max)) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::new(clock(), peer));
        open.insert(id, connection.clone());
        Some((id, connection))
    }

    /// Closes the least productive connection; false when every one is
    /// handling a request.
    fn evict_one(&self, max: usize) -> bool {
        Self::evict_locked(
            &mut self.open.lock().expect("connection registry"),
            share_of(max),
        )
    }

    /// The connection to close to make room: of those not handling a
    /// request, the one with the least [`Connection::progress`], taken
    /// from the addresses holding more than `share` connections when any
    /// such connection can go. One address can so fill the cap only while
    /// nobody else wants in, and a client trickling one byte per
    /// connection loses its connections before anyone with a request to
    /// make is refused.
    fn victim(open: &HashMap<u64, Arc<Connection>>, share: usize) -> Option<u64> {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for connection in open.values() {
            *held.entry(connection.peer).or_default() += 1;
        }
        open.iter()
            .filter_map(|(id, connection)| {
                let within_share = held[&connection.peer] <= share;
                connection
                    .progress()
                    .map(|(rank, since)| ((within_share, rank, since), *id))
            })
            .min()
            .map(|(_, id)| id)
    }

    fn evict_locked(open: &mut HashMap<u64, Arc<Connection>>, share: usize) -> bool {
        let Some(id) = Self::victim(open, share) else {
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

/// The connections one address may hold before its own are evicted first
/// at the cap: an eighth of the cap.
fn share_of(max: usize) -> usize {
    (max / 8).max(1)
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
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, peer.ip()),
            Err(error) => {
                // Out of descriptors: free one by closing the connection
                // idle the longest, and wait a moment before trying again
                // (the failed accept left the client in the backlog).
                tracing::warn!(%error, open = registry.len(), "accepting a connection failed");
                registry.evict_one(limits.max_connections);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, connection)) = registry.admit(limits.max_connections, peer) else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "connection cap reached with every connection handling a request: closing new connections"
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
                tracing::debug!("closing the least productive connection to admit a new one");
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

/// How long a refused body is read and dropped at most (nginx's
/// `lingering_time` is 30 s; a client sending at 1 MiB/s has sent 5 MiB).
const LINGER_TIME: Duration = Duration::from_secs(5);
/// The longest pause in a refused body before reading it stops (nginx's
/// `lingering_timeout`).
const LINGER_PAUSE: Duration = Duration::from_secs(1);

/// Reads and drops a refused request's body for at most [`LINGER_TIME`]
/// and four times the body limit, stopping at a pause over
/// [`LINGER_PAUSE`]: the client that writes its whole body before it
/// reads then finds the answer, instead of a connection reset (closing a
/// socket with unread data resets it, and the reset discards the answer
/// the client has not read yet).
async fn linger(mut body: Incoming, limit: usize) {
    use http_body_util::BodyExt;
    let bound = 4 * limit as u64;
    let deadline = Instant::now() + LINGER_TIME;
    let mut read = 0u64;
    while read <= bound {
        let pause = (Instant::now() + LINGER_PAUSE).min(deadline);
        match tokio::time::timeout_at(pause, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
            }
            Ok(None | Some(Err(_))) | Err(_) => return,
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
        // The body is not handled: the connection cannot carry another
        // request. What the client sends meanwhile is read and dropped.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        tokio::spawn(linger(request.into_body(), limits.max_body_bytes));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection from `peer` accepted at `accepted`, in one of the
    /// states eviction tells apart.
    fn connection(peer: [u8; 4], accepted: u64, state: &str) -> Arc<Connection> {
        let connection = Connection::new(accepted, IpAddr::from(peer));
        match state {
            "fresh" => {}
            "trickling" => connection
                .head_started
                .store(accepted + 1, Ordering::Release),
            "handling" => connection.request_started(),
            "kept-alive" => {
                connection.request_started();
                connection.active.fetch_sub(1, Ordering::AcqRel);
                connection.idle_since.store(accepted + 5, Ordering::Release);
            }
            other => unreachable!("{other}"),
        }
        Arc::new(connection)
    }

    /// Why, the connections (address, accepted at, state), the one that
    /// goes (by position), and the share.
    type Case = (
        &'static str,
        Vec<([u8; 4], u64, &'static str)>,
        Option<u64>,
        usize,
    );

    #[test]
    fn the_least_productive_connection_goes_first_and_a_greedy_address_before_the_others() {
        let cases: [Case; 5] = [
            (
                "a trickling first head goes before a kept-alive connection",
                vec![
                    ([10, 0, 0, 1], 1, "kept-alive"),
                    ([10, 0, 0, 2], 9, "trickling"),
                ],
                Some(1),
                8,
            ),
            (
                "of two that sent no whole request, the older goes",
                vec![([10, 0, 0, 1], 7, "fresh"), ([10, 0, 0, 2], 3, "trickling")],
                Some(1),
                8,
            ),
            (
                "a connection handling a request never goes",
                vec![
                    ([10, 0, 0, 1], 1, "handling"),
                    ([10, 0, 0, 2], 9, "kept-alive"),
                ],
                Some(1),
                8,
            ),
            (
                "an address over its share loses its own first, even a kept-alive one",
                vec![
                    ([10, 0, 0, 1], 1, "trickling"),
                    ([10, 0, 0, 2], 5, "kept-alive"),
                    ([10, 0, 0, 2], 6, "handling"),
                ],
                Some(1),
                1,
            ),
            (
                "with every connection handling a request, none goes",
                vec![([10, 0, 0, 1], 1, "handling")],
                None,
                8,
            ),
        ];
        for (why, connections, expected, share) in cases {
            let open: HashMap<u64, Arc<Connection>> = connections
                .iter()
                .enumerate()
                .map(|(id, (peer, accepted, state))| {
                    (id as u64, connection(*peer, *accepted, state))
                })
                .collect();
            assert_eq!(Registry::victim(&open, share), expected, "{why}");
        }
    }
}
