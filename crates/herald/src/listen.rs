//! `herald listen`: a local receiver for trying webhooks out. It prints each
//! request readably (event type, id, the signing headers, the JSON body
//! pretty-printed), says whether its signature verifies with `--secret`,
//! answers 200, and with `--forward URL` relays the request to a local app
//! and answers with what the app answered.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Args;
use tokio_util::sync::CancellationToken;

use herald_domain::Secret;

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Port on 127.0.0.1 (0: any free one, printed at start).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// The endpoint's secret, to check each request's signature.
    #[arg(long, env = "HERALD_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Relay each request to this URL (a local app) and answer with its answer.
    #[arg(long, value_name = "URL")]
    pub forward: Option<String>,
}

struct Listener {
    secret: Option<Secret>,
    forward: Option<String>,
    client: reqwest::Client,
}

pub async fn run(args: ListenArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = args
        .secret
        .as_deref()
        .map(|s| Secret::parse(s.trim()).map_err(|e| anyhow::anyhow!("--secret: {}", e.reason)))
        .transpose()?;
    let state = Arc::new(Listener {
        secret,
        forward: args.forward.clone(),
        client: reqwest::Client::new(),
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| format!("listening on port {}", args.port))?;
    let address = listener.local_addr()?;
    println!("herald listen: waiting for webhooks at http://{address}/");
    if let Some(forward) = &args.forward {
        println!("herald listen: relaying them to {forward}");
    }
    let app = axum::Router::new().fallback(receive).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, names: [&str; 2]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
}

async fn receive(
    State(state): State<Arc<Listener>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let event_type = json
        .as_ref()
        .and_then(|j| j.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("(not a webhook body)");
    let id = header(&headers, ["webhook-id", "svix-id"]).unwrap_or("-");
    let timestamp = header(&headers, ["webhook-timestamp", "svix-timestamp"]);
    let signature = header(&headers, ["webhook-signature", "svix-signature"]);
    let mut out = format!("\n── {method} {uri}  {event_type}  {id}\n");
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            out.push_str(&format!("   {name}: {value}\n"));
        }
    }
    let verdict = match (
        &state.secret,
        timestamp.and_then(|t| t.parse::<i64>().ok()),
        signature,
    ) {
        (None, _, _) => "signature not checked (no --secret given)".to_owned(),
        (Some(_), None, _) | (Some(_), _, None) => "signature invalid: headers missing".to_owned(),
        (Some(secret), Some(timestamp), Some(signature)) => {
            if secret.verify(id, timestamp, &body, signature) {
                "signature valid".to_owned()
            } else {
                "signature invalid".to_owned()
            }
        }
    };
    out.push_str(&format!("   {verdict}\n"));
    match &json {
        Some(json) => out.push_str(&serde_json::to_string_pretty(json).unwrap_or_default()),
        None => out.push_str(&String::from_utf8_lossy(&body)),
    }
    println!("{out}");
    let Some(forward) = &state.forward else {
        return (StatusCode::OK, "ok").into_response();
    };
    let mut relay = state.client.request(method, forward).body(body);
    for (name, value) in headers.iter() {
        if name != "host" && name != "content-length" {
            relay = relay.header(name, value);
        }
    }
    match relay.send().await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = answer.text().await.unwrap_or_default();
            println!("   relayed to {forward}: {status}");
            (status, text).into_response()
        }
        Err(error) => {
            println!("   relaying to {forward} failed: {error}");
            (StatusCode::BAD_GATEWAY, "relay failed").into_response()
        }
    }
}
