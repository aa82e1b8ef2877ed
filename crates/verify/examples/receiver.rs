//! A receiver that acts on Herald's webhooks only when they are signed:
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_… cargo run -p herald-verify --features axum --example receiver
//! ```
//!
//! then point an endpoint at `http://127.0.0.1:3000/webhooks`.

use axum::extract::FromRef;
use axum::routing::post;
use axum::Router;
use herald_verify::{Verified, Webhook};

#[derive(Clone)]
struct AppState {
    webhook: Webhook,
}

impl FromRef<AppState> for Webhook {
    fn from_ref(state: &AppState) -> Webhook {
        state.webhook.clone()
    }
}

async fn receive(webhook: Verified) -> &'static str {
    let event: serde_json::Value = match serde_json::from_slice(&webhook.body) {
        Ok(event) => event,
        Err(_) => return "ignored: not JSON",
    };
    match event["type"].as_str() {
        Some("call.completed") => println!("update the CRM: {}", event["data"]),
        Some(other) => println!("{other} ({})", webhook.id),
        None => println!("untyped event {}", webhook.id),
    }
    "ok"
}

#[tokio::main]
async fn main() {
    let secret = std::env::var("WEBHOOK_SECRET")
        .expect("set WEBHOOK_SECRET to the endpoint's whsec_ secret");
    let state = AppState {
        webhook: Webhook::new(&secret).expect("a whsec_ secret or whpk_ public key"),
    };
    let app = Router::new()
        .route("/webhooks", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
