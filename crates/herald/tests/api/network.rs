//! Outbound safety (SPEC §4): the SSRF matrix — address literals in every
//! spelling, and names that a DNS server on loopback (started by the test)
//! answers with refused addresses, including one that rebinds between
//! attempts — and deliveries through an egress proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use herald_domain::Cidr;

use crate::helpers::{spawn_app_with, Options, Receiver, Reply, TestApp};

/// A DNS server on 127.0.0.1 that answers A and AAAA questions from a
/// table; a name may have a sequence of answers (for rebinding), the last
/// one repeating. Unknown names get NXDOMAIN.
struct DnsServer {
    address: SocketAddr,
    answers: Arc<Mutex<HashMap<String, Vec<Vec<IpAddr>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let answers: Arc<Mutex<HashMap<String, Vec<Vec<IpAddr>>>>> = Arc::default();
        let table = answers.clone();
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            loop {
                let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                if let Some(reply) = answer(&buffer[..length], &table) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Self {
            address,
            answers,
            task,
        }
    }

    fn set(&self, name: &str, ips: &[&str]) {
        self.sequence(name, &[ips]);
    }

    fn sequence(&self, name: &str, answers: &[&[&str]]) {
        let parsed = answers
            .iter()
            .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect();
        self.answers.lock().unwrap().insert(name.to_owned(), parsed);
    }
}

/// One DNS reply (RFC 1035 §4.1), or `None` for a packet that is not a
/// one-question query.
fn answer(query: &[u8], table: &Mutex<HashMap<String, Vec<Vec<IpAddr>>>>) -> Option<Vec<u8>> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = *query.get(at)? as usize;
        at += 1;
        if length == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_lowercase());
        at += length;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let name = labels.join(".");
    let mut table = table.lock().unwrap();
    let (found, ips) = match table.get_mut(&name) {
        None => (false, Vec::new()),
        Some(sequence) => {
            let wanted_v4 = qtype == 1;
            let current = sequence[0].clone();
            // A-questions step through the sequence (one per lookup).
            if wanted_v4 && sequence.len() > 1 {
                sequence.remove(0);
            }
            let ips: Vec<IpAddr> = current
                .into_iter()
                .filter(|ip| match qtype {
                    1 => ip.is_ipv4(),
                    28 => ip.is_ipv6(),
                    _ => false,
                })
                .collect();
            (true, ips)
        }
    };
    let mut reply = Vec::with_capacity(question_end + ips.len() * 28);
    reply.extend_from_slice(&query[..2]);
    reply.extend_from_slice(&[0x81, if found { 0x80 } else { 0x83 }]);
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    for ip in ips {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        let (kind, data) = match ip {
            IpAddr::V4(v4) => (1u16, v4.octets().to_vec()),
            IpAddr::V6(v6) => (28u16, v6.octets().to_vec()),
        };
        reply.extend_from_slice(&kind.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes()); // IN
        reply.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: ask again next time
        reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
        reply.extend_from_slice(&data);
    }
    Some(reply)
}

/// An HTTP proxy on loopback: tunnels `CONNECT` and forwards absolute-form
/// requests, recording each request line it saw.
struct Proxy {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = relay(client, log).await;
                });
            }
        });
        Self {
            address,
            seen,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn relay(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    log.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        let mut upstream = TcpStream::connect(target).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let url = url::Url::parse(target).map_err(std::io::Error::other)?;
    let host = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(80)
    );
    let mut upstream = TcpStream::connect(host).await?;
    let origin_form = &url[url::Position::BeforePath..];
    let rewritten = text.replacen(target, origin_form, 1);
    upstream.write_all(rewritten.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A test event to `endpoint`, waiting for its attempt.
async fn attempt(app: &TestApp, tenant: &str, endpoint: &str) -> Value {
    let (status, result) = app
        .post(
            &format!("/app/{tenant}/endpoint/{endpoint}/send-example/?wait=true"),
            json!({"eventType": "call.completed"}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    result["attempt"].clone()
}

/// Address literals in many spellings, with the range that re-allows each.
const LITERALS: &[(&str, &str)] = &[
    ("http://127.0.0.1/", "127.0.0.0/8"),
    ("http://2130706433/", "127.0.0.0/8"),
    ("http://0x7f000001/", "127.0.0.0/8"),
    ("http://0177.0.0.1/", "127.0.0.0/8"),
    ("http://127.1/", "127.0.0.0/8"),
    ("http://0x7f.0.0.1/", "127.0.0.0/8"),
    ("http://0.0.0.0/", "0.0.0.0/8"),
    ("http://0/", "0.0.0.0/8"),
    ("http://10.0.0.1/", "10.0.0.0/8"),
    ("http://012.1.2.3/", "10.0.0.0/8"),
    ("http://172.16.5.4/", "172.16.0.0/12"),
    ("http://192.168.0.1/", "192.168.0.0/16"),
    ("http://100.64.1.1/", "100.64.0.0/10"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
    ("http://2852039166/", "169.254.0.0/16"),
    ("http://224.0.0.1/", "224.0.0.0/4"),
    ("http://255.255.255.255/", "255.255.255.255/32"),
    ("http://192.0.2.1/", "192.0.2.0/24"),
    ("http://198.18.0.1/", "198.18.0.0/15"),
    ("http://[::1]/", "::1/128"),
    ("http://[::]/", "::/128"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.0/8"),
    ("http://[::ffff:7f00:1]/", "127.0.0.0/8"),
    ("http://[::ffff:a9fe:a9fe]/", "169.254.0.0/16"),
    ("http://[64:ff9b::7f00:1]/", "64:ff9b::/96"),
    ("http://[fd00::1]/", "fc00::/7"),
    ("http://[fe80::1]/", "fe80::/10"),
    ("http://[ff02::1]/", "ff00::/8"),
    ("http://[2001:db8::1]/", "2001:db8::/32"),
];

#[tokio::test]
async fn address_literals_in_any_spelling_are_refused_unless_their_range_is_allowed() {
    let strict = spawn_app_with(Options {
        allow_private_networks: false,
        ..Options::default()
    })
    .await;
    let tenant = strict.create_app("Acme").await;
    let path = format!("/app/{tenant}/endpoint/");
    for (url, _) in LITERALS
        .iter()
        .chain(&[("http://localhost/", ""), ("http://api.localhost./", "")])
    {
        let (status, error) = strict.post(&path, json!({ "url": url })).await;
        assert_eq!(status, 422, "{url} must be refused: {error}");
        assert!(
            crate::helpers::detail_text(&error).starts_with("url"),
            "{url}: {error}"
        );
    }
    let (_, listed) = strict.get(&path).await;
    assert_eq!(listed["data"], json!([]), "nothing half-written");

    // The same literals pass when the operator allows their ranges.
    let open = spawn_app_with(Options {
        allow_private_networks: false,
        allowed_cidrs: LITERALS
            .iter()
            .map(|(_, cidr)| Cidr::parse(cidr).unwrap())
            .collect(),
        ..Options::default()
    })
    .await;
    let tenant = open.create_app("Acme").await;
    for (url, cidr) in LITERALS {
        let (status, created) = open
            .post(&format!("/app/{tenant}/endpoint/"), json!({ "url": url }))
            .await;
        assert_eq!(status, 201, "{url} with {cidr} allowed: {created}");
    }
}

/// Names and what the test's DNS server answers for them.
const NAMES: &[(&str, &[&str])] = &[
    ("loopback.test", &["127.0.0.1"]),
    ("private.test", &["10.1.2.3"]),
    ("metadata.test", &["169.254.169.254"]),
    ("cgnat.test", &["100.64.0.1"]),
    ("zero.test", &["0.0.0.0"]),
    ("loopback6.test", &["::1"]),
    ("ula.test", &["fd00::1"]),
    ("mapped.test", &["::ffff:127.0.0.1"]),
    ("nat64.test", &["64:ff9b::a00:1"]),
    ("linklocal6.test", &["fe80::1"]),
    ("mixed.test", &["10.0.0.1", "127.0.0.1"]),
];

#[tokio::test]
async fn names_resolving_to_refused_addresses_are_refused_at_connect_time_even_when_they_rebind() {
    let dns = DnsServer::start().await;
    let receiver = Receiver::start().await;
    let port = receiver
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    for (name, ips) in NAMES {
        dns.set(name, ips);
    }
    // A public address when the endpoint is saved and first tried, then
    // loopback: the classic rebinding.
    dns.sequence("rebind.test", &[&["93.184.216.34"], &["127.0.0.1"]]);
    let app = spawn_app_with(Options {
        allow_private_networks: false,
        request_timeout: Duration::from_secs(2),
        network: herald_dispatch::Network {
            dns_servers: vec![dns.address],
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    for (name, _) in NAMES {
        let endpoint = app
            .create_endpoint(&tenant, &format!("http://{name}:{port}/hook"), None)
            .await;
        let attempt = attempt(&app, &tenant, &endpoint).await;
        assert_eq!(
            attempt["errorClass"], "forbidden_address",
            "{name}: {attempt}"
        );
    }
    // The URL check says so before anything is saved.
    let (status, check) = app
        .post(
            &format!("/app/{tenant}/url-check/"),
            json!({"url": format!("http://metadata.test:{port}/hook")}),
        )
        .await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["ok"], false, "{check}");
    assert_eq!(check["errorClass"], "forbidden_address", "{check}");
    let endpoint = app
        .create_endpoint(&tenant, &format!("http://rebind.test:{port}/hook"), None)
        .await;
    let first = attempt(&app, &tenant, &endpoint).await;
    assert_ne!(
        first["errorClass"], "forbidden_address",
        "first look: {first}"
    );
    let second = attempt(&app, &tenant, &endpoint).await;
    assert_eq!(
        second["errorClass"], "forbidden_address",
        "rebound: {second}"
    );
    assert!(receiver.requests().is_empty(), "nothing reached loopback");

    // Allowing loopback's range lets the same kind of name through.
    let open = spawn_app_with(Options {
        allow_private_networks: false,
        allowed_cidrs: vec![Cidr::parse("127.0.0.0/8").unwrap()],
        network: herald_dispatch::Network {
            dns_servers: vec![dns.address],
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let tenant = open.create_app("Acme").await;
    let endpoint = open
        .create_endpoint(&tenant, &format!("http://loopback.test:{port}/hook"), None)
        .await;
    receiver.always("/hook", Reply::Status(200));
    let delivered = attempt(&open, &tenant, &endpoint).await;
    assert_eq!(delivered["responseStatusCode"], 200, "{delivered}");
    assert_eq!(receiver.requests_to("/hook").len(), 1);
}

#[tokio::test]
async fn deliveries_go_through_the_egress_proxy_and_names_are_still_checked() {
    let proxy = Proxy::start().await;
    let dns = DnsServer::start().await;
    dns.set("internal.test", &["10.0.0.1"]);
    let receiver = Receiver::start().await;
    let app = spawn_app_with(Options {
        allow_private_networks: false,
        allowed_cidrs: vec![Cidr::parse("127.0.0.0/8").unwrap()],
        request_timeout: Duration::from_secs(2),
        network: herald_dispatch::Network {
            dns_servers: vec![dns.address],
            proxy: Some(proxy.url()),
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/via-proxy"), None)
        .await;

    let delivered = attempt(&app, &tenant, &endpoint).await;

    assert_eq!(delivered["responseStatusCode"], 200, "{delivered}");
    assert_eq!(receiver.requests_to("/via-proxy").len(), 1);
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|line| line.contains("/via-proxy")),
        "the proxy carried it: {seen:?}"
    );
    // A name that resolves inside is refused before the proxy is asked.
    let port = receiver
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let inside = app
        .create_endpoint(&tenant, &format!("http://internal.test:{port}/x"), None)
        .await;
    let refused = attempt(&app, &tenant, &inside).await;
    assert_eq!(refused["errorClass"], "forbidden_address", "{refused}");
    assert!(!proxy
        .seen()
        .iter()
        .any(|line| line.contains("internal.test")));
    let (status, egress) = app.get("/egress/").await;
    assert_eq!(status, 200);
    assert_eq!(egress["proxied"], true, "{egress}");
}

/// A private certificate authority and an HTTPS receiver on loopback whose
/// certificate (for `localhost`) it signed. The receiver answers 200 and
/// counts the requests it read.
struct PrivatePki {
    ca_pem: String,
    address: SocketAddr,
    received: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PrivatePki {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PrivatePki {
    async fn start() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<usize>> = Arc::default();
        let count = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return; // the client refused the certificate
                    };
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = tls.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    *count.lock().unwrap() += 1;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            ca_pem: ca.pem(),
            address,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/hook", self.address.port())
    }
}

#[tokio::test]
async fn certificates_are_always_verified_and_a_private_ca_can_be_trusted() {
    let pki = PrivatePki::start().await;
    // Without the CA: the handshake fails and nothing is delivered.
    let app = spawn_app_with(Options::default()).await;
    let tenant = app.create_app("Acme").await;
    let endpoint = app.create_endpoint(&tenant, &pki.url(), None).await;
    let refused = attempt(&app, &tenant, &endpoint).await;
    assert_eq!(refused["errorClass"], "tls", "{refused}");
    assert_eq!(*pki.received.lock().unwrap(), 0);

    // With the CA bundle configured: delivered, over verified TLS.
    let trusting = spawn_app_with(Options {
        network: herald_dispatch::Network {
            ca_bundle: Some(pki.ca_pem.clone().into_bytes()),
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let tenant = trusting.create_app("Acme").await;
    let endpoint = trusting.create_endpoint(&tenant, &pki.url(), None).await;
    let delivered = attempt(&trusting, &tenant, &endpoint).await;
    assert_eq!(delivered["responseStatusCode"], 200, "{delivered}");
    assert_eq!(*pki.received.lock().unwrap(), 1);
}
