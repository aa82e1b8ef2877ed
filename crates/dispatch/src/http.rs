//! One HTTP POST of one delivery: body, Standard Webhooks headers, the
//! address policy applied to every resolved address at connect time, and
//! classification of what came back.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};

use herald_domain::{expr, AddressPolicy, DeliveryOptions, ErrorClass, SigningKeys};
use herald_store::{DeliveryJob, Message};

/// `{"type": …, "timestamp": …, "data": <payload>}`, the payload copied as stored.
pub fn build_body(message: &Message) -> Bytes {
    let timestamp = expr::timestamp_text(message.created_at);
    let event_type = serde_json::to_string(message.event_type.as_str()).unwrap_or_default();
    let mut body = String::with_capacity(message.payload.len() + event_type.len() + 64);
    body.push_str("{\"type\":");
    body.push_str(&event_type);
    body.push_str(",\"timestamp\":\"");
    body.push_str(&timestamp);
    body.push_str("\",\"data\":");
    body.push_str(&message.payload);
    body.push('}');
    Bytes::from(body)
}

/// What an endpoint is sent for `message`: its transformation's JSON, the
/// payload alone (`rawPayload`), or the envelope (`envelope`, built by the
/// caller so that endpoints of one message share it). `Err`: why the
/// transformation failed (the attempt fails without a request).
pub fn endpoint_body(
    message: &Message,
    options: &DeliveryOptions,
    envelope: impl FnOnce() -> Bytes,
) -> Result<Bytes, String> {
    if let Some(source) = &options.transformation {
        let program = expr::cached(source).map_err(|e| format!("the transformation: {e}"))?;
        let subject = message
            .subject()
            .map_err(|e| format!("the transformation: {e}"))?;
        return program
            .render(&subject.input())
            .map(Bytes::from)
            .map_err(|e| format!("the transformation: {e}"));
    }
    if options.raw_payload {
        return Ok(Bytes::from(message.payload.clone()));
    }
    Ok(envelope())
}

/// Transformations running at once on the blocking pool, in the whole
/// process. Each stops at its budget and deadline; the bound keeps a
/// tenant's slow ones from taking every thread of the pool.
static TRANSFORMATIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// [`endpoint_body`] for an endpoint with a transformation, evaluated on
/// the blocking pool (at most four at once): an expensive transformation
/// never holds the runtime's worker threads, which serve the API, the
/// health check and every other delivery.
pub async fn transformed_body(
    message: Arc<Message>,
    options: DeliveryOptions,
) -> Result<Bytes, String> {
    let _permit = TRANSFORMATIONS
        .acquire()
        .await
        .map_err(|e| format!("the transformation: {e}"))?;
    tokio::task::spawn_blocking(move || endpoint_body(&message, &options, Bytes::new))
        .await
        .map_err(|e| format!("the transformation: {e}"))?
}

/// The answer, or the failure, of one POST.
#[derive(Debug, Clone)]
pub struct SendResult {
    /// 0 when no HTTP answer came.
    pub status: u16,
    pub body: String,
    pub duration: Duration,
    pub error: Option<ErrorClass>,
    /// `Retry-After` in seconds, when the receiver sent one.
    pub retry_after: Option<Duration>,
}

impl SendResult {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug)]
struct ForbiddenAddress(String);

impl std::fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves only to addresses this server refuses",
            self.0
        )
    }
}
impl StdError for ForbiddenAddress {}

#[derive(Debug)]
struct DnsFailure(String, std::io::Error);

impl std::fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not resolve {}: {}", self.0, self.1)
    }
}
impl StdError for DnsFailure {}

/// Where delivery requests go out: the resolver and the optional proxy and
/// source address.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// DNS servers to ask instead of the system resolver (`ip:port`).
    pub dns_servers: Vec<SocketAddr>,
    /// An HTTP(S) proxy for every delivery (`http://host:port`).
    pub proxy: Option<String>,
    /// The local address deliveries connect from.
    pub source_address: Option<IpAddr>,
    /// Extra trusted root certificates (PEM), for receivers on a private
    /// PKI; the public roots stay trusted.
    pub ca_bundle: Option<Vec<u8>>,
}

/// How names are looked up: the system resolver (`getaddrinfo`), or the
/// operator's DNS servers.
#[derive(Clone)]
enum Lookup {
    System,
    Servers(Arc<hickory_resolver::TokioResolver>),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::System => "Lookup::System",
            Self::Servers(_) => "Lookup::Servers",
        })
    }
}

impl Lookup {
    fn new(servers: &[SocketAddr]) -> Self {
        use hickory_resolver::config::{
            NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
        };
        use hickory_resolver::proto::xfer::Protocol;
        if servers.is_empty() {
            return Self::System;
        }
        let mut group = NameServerConfigGroup::new();
        for server in servers {
            group.push(NameServerConfig::new(*server, Protocol::Udp));
            group.push(NameServerConfig::new(*server, Protocol::Tcp));
        }
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        // Every attempt looks the name up afresh (within the TTL): a cached
        // answer could outlive a change the policy must see.
        options.cache_size = 0;
        let resolver = hickory_resolver::TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            hickory_resolver::name_server::TokioConnectionProvider::default(),
        )
        .with_options(options)
        .build();
        Self::Servers(Arc::new(resolver))
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, std::io::Error> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect()),
            Self::Servers(resolver) => {
                let found = resolver
                    .lookup_ip(host)
                    .await
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))?;
                Ok(found.iter().collect())
            }
        }
    }

    /// The addresses of `host` that the policy permits; an error when it
    /// has none.
    async fn permitted(
        &self,
        host: &str,
        policy: &AddressPolicy,
    ) -> Result<Vec<IpAddr>, Box<dyn StdError + Send + Sync>> {
        let found = self.ips(host).await.map_err(|e| {
            Box::new(DnsFailure(host.to_owned(), e)) as Box<dyn StdError + Send + Sync>
        })?;
        let allowed: Vec<IpAddr> = found.into_iter().filter(|ip| policy.permits(*ip)).collect();
        if allowed.is_empty() {
            return Err(Box::new(ForbiddenAddress(host.to_owned())));
        }
        Ok(allowed)
    }
}

/// Resolves names and drops every address the policy refuses, so the
/// connection can only go to an allowed address.
#[derive(Debug, Clone)]
struct PolicyResolver {
    policy: AddressPolicy,
    lookup: Lookup,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let allowed = this.lookup.permitted(name.as_str(), &this.policy).await?;
            Ok(Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

/// How long the body of an answer is read once its status has arrived.
const BODY_READ_BOUND: Duration = Duration::from_secs(2);

/// A pooled, keep-alive HTTP client configured for deliveries.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    timeout: Duration,
    policy: AddressPolicy,
    lookup: Lookup,
    /// With a proxy the proxy resolves the target; Herald checks it first.
    proxied: bool,
    response_limit: usize,
}

impl HttpSender {
    pub fn new(
        policy: AddressPolicy,
        timeout: Duration,
        response_limit: usize,
        network: &Network,
    ) -> Result<Self, String> {
        let lookup = Lookup::new(&network.dns_servers);
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
                lookup: lookup.clone(),
            }))
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")));
        match &network.proxy {
            Some(proxy) => {
                let proxy = reqwest::Proxy::all(proxy).map_err(|e| format!("proxy URL: {e}"))?;
                builder = builder.proxy(proxy);
            }
            // Never a proxy from the environment (HTTPS_PROXY and the like):
            // only the one configured here.
            None => builder = builder.no_proxy(),
        }
        if let Some(address) = network.source_address {
            builder = builder.local_address(address);
        }
        if let Some(pem) = &network.ca_bundle {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("CA bundle: {e}"))?;
            if roots.is_empty() {
                return Err("CA bundle: no certificate in it".into());
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client,
            timeout,
            policy,
            lookup,
            proxied: network.proxy.is_some(),
            response_limit,
        })
    }

    /// POSTs `job` signed at `timestamp` (unix seconds).
    pub async fn send(&self, job: &DeliveryJob, body: &Bytes, timestamp: i64) -> SendResult {
        let started = Instant::now();
        let failed = |class: ErrorClass, text: String| SendResult {
            status: 0,
            body: text,
            duration: started.elapsed(),
            error: Some(class),
            retry_after: None,
        };
        // Parsed once, when the endpoint was read.
        let url = job.endpoint.url.as_url().clone();
        // Names are checked by the resolver; literal addresses never reach it.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| !self.policy.permits(ip)) {
            return failed(
                ErrorClass::ForbiddenAddress,
                "the endpoint's address is refused by this server's network policy".into(),
            );
        }
        // Through a proxy the connection's address is the proxy's; the
        // target's name is checked here instead (the proxy resolves it
        // again, so it should refuse internal ranges too).
        if self.proxied && literal.is_none() {
            if let Some(host) = url.host_str() {
                if let Err(error) = self.lookup.permitted(host, &self.policy).await {
                    let class = if is_local(&*error) {
                        ErrorClass::Local
                    } else if error.is::<ForbiddenAddress>() {
                        ErrorClass::ForbiddenAddress
                    } else {
                        ErrorClass::Dns
                    };
                    return failed(class, error.to_string());
                }
            }
        }
        let message_id = job.message.id.to_string();
        let signature =
            SigningKeys(&job.endpoint.secrets).signature_header(&message_id, timestamp, body);
        let headers = match request_headers(job, &message_id, timestamp, &signature) {
            Ok(h) => h,
            Err(text) => return failed(ErrorClass::Other, text),
        };
        // An endpoint's own timeout, within the server's.
        let timeout = job.endpoint.options.timeout.map_or(self.timeout, |t| {
            self.timeout.min(Duration::from_secs(t.into()))
        });
        let response = self
            .client
            .post(url)
            .timeout(timeout)
            .headers(headers)
            .body(body.clone())
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                let class = classify(&e);
                return failed(class, describe(&e));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        // The status line decides: a 2xx that arrived within the timeout is
        // a success whatever the body does next. The body is read
        // best-effort, up to what the log keeps and within a short bound,
        // so a receiver that answers and then stalls (or sends less than
        // its Content-Length) neither fails the attempt nor holds a slot.
        let mut stored = Vec::new();
        let remaining = timeout.saturating_sub(started.elapsed());
        // An empty body (a 204, `Content-Length: 0`) needs no timer.
        if response.content_length() != Some(0) {
            let read_body = async {
                while let Ok(Some(chunk)) = response.chunk().await {
                    let room = self.response_limit.saturating_sub(stored.len());
                    stored.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if stored.len() >= self.response_limit {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(remaining.min(BODY_READ_BOUND), read_body).await;
        }
        let error = (!status.is_success()).then_some(ErrorClass::HttpStatus);
        SendResult {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&stored).into_owned(),
            duration: started.elapsed(),
            error,
            retry_after,
        }
    }
}

/// `Retry-After` in either of its forms (RFC 9110 §10.2.3): delay-seconds,
/// or an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms),
/// which counts from `now` (a date in the past asks for no delay).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn request_headers(
    job: &DeliveryJob,
    message_id: &str,
    timestamp: i64,
    signature: &str,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(job.endpoint.headers.len() + 8);
    for (name, value) in &job.endpoint.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("custom header: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("custom header: {e}"))?;
        headers.insert(name, value);
    }
    let timestamp = HeaderValue::from(timestamp);
    let id = HeaderValue::from_str(message_id).map_err(|e| e.to_string())?;
    let signature = HeaderValue::from_str(signature).map_err(|e| e.to_string())?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in [
        ("webhook-id", &id),
        ("webhook-timestamp", &timestamp),
        ("webhook-signature", &signature),
        ("svix-id", &id),
        ("svix-timestamp", &timestamp),
        ("svix-signature", &signature),
    ] {
        headers.insert(HeaderName::from_static(name), value.clone());
    }
    Ok(headers)
}

/// Maps a transport error to its class by looking through its causes.
pub fn classify(error: &reqwest::Error) -> ErrorClass {
    if is_local(error) {
        return ErrorClass::Local;
    }
    if error.is_timeout() {
        return ErrorClass::Timeout;
    }
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    let mut text = String::new();
    while let Some(cause) = source {
        if cause.is::<ForbiddenAddress>() {
            return ErrorClass::ForbiddenAddress;
        }
        if cause.is::<DnsFailure>() {
            return ErrorClass::Dns;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ErrorClass::Timeout;
            }
        }
        text.push_str(&format!("{cause:?} "));
        source = cause.source();
    }
    let text = text.to_ascii_lowercase();
    if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        ErrorClass::Tls
    } else if error.is_connect() {
        ErrorClass::Connect
    } else {
        ErrorClass::Other
    }
}

/// Whether the request failed for want of a resource of Herald's own —
/// file descriptors (EMFILE, ENFILE), socket buffers (ENOBUFS), memory
/// (ENOMEM) or local ports (EADDRNOTAVAIL) — rather than anything the
/// receiver did. Some wrappers (the system resolver's) keep only the
/// message, so the text is looked at too.
fn is_local(error: &(dyn StdError + 'static)) -> bool {
    const LOCAL_ERRNOS: [i32; 5] = [
        libc::EMFILE,
        libc::ENFILE,
        libc::ENOBUFS,
        libc::ENOMEM,
        libc::EADDRNOTAVAIL,
    ];
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.raw_os_error().is_some_and(|e| LOCAL_ERRNOS.contains(&e)) {
                return true;
            }
        }
        let text = cause.to_string().to_ascii_lowercase();
        if [
            "too many open files",
            "no buffer space available",
            "cannot allocate memory",
            "cannot assign requested address",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A one-line description of a transport error, with its causes.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 10:00:00 GMT").unwrap();
        let cases = [
            ("120", Some(120), "delay-seconds"),
            (" 5 ", Some(5), "delay-seconds with spaces"),
            ("Wed, 02 Dec 2026 10:01:30 GMT", Some(90), "IMF-fixdate"),
            (
                "Wednesday, 02-Dec-26 10:00:30 GMT",
                Some(30),
                "RFC 850 date",
            ),
            ("Wed Dec  2 10:00:10 2026", Some(10), "asctime date"),
            (
                "Wed, 02 Dec 2026 09:00:00 GMT",
                Some(0),
                "a date in the past",
            ),
            ("-5", None, "a negative number"),
            ("soon", None, "nonsense"),
            ("", None, "empty"),
        ];
        for (value, expected, why) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                expected.map(Duration::from_secs),
                "{why}: {value:?}"
            );
        }
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn herald_s_own_shortages_are_local_and_the_receiver_s_failures_are_not() {
        let cases = [
            (libc::EMFILE, true, "out of file descriptors"),
            (libc::ENFILE, true, "the system is out of file descriptors"),
            (libc::ENOBUFS, true, "no socket buffers"),
            (libc::ENOMEM, true, "no memory"),
            (libc::EADDRNOTAVAIL, true, "no local port"),
            (libc::ECONNREFUSED, false, "the receiver refused"),
            (libc::ECONNRESET, false, "the receiver reset"),
            (libc::EHOSTUNREACH, false, "the receiver is unreachable"),
        ];
        for (errno, local, why) in cases {
            let error = Wrapped(std::io::Error::from_raw_os_error(errno));
            assert_eq!(is_local(&error), local, "{why}");
        }
        let resolver = DnsFailure(
            "hooks.test".into(),
            std::io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert!(
            is_local(&resolver),
            "a lookup that failed for want of descriptors (only its message says so)"
        );
    }
}
