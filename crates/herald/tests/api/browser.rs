//! The portal in a real browser: Debian's Chromium driven by
//! `tests/browser/portal.mjs` (Node's playwright-core, pinned). Runs when
//! `HERALD_TEST_BROWSER` names the Chromium executable (`.ci/run` installs
//! it and sets it); says so and skips otherwise. Screenshots go to
//! `target/screenshots/`.

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::{spawn_app, Receiver, Reply};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn a_customer_follows_a_portal_link_and_manages_an_endpoint_end_to_end() {
    let Ok(browser) = std::env::var("HERALD_TEST_BROWSER") else {
        crate::helpers::skip_or_fail(
            "the browser test",
            "set HERALD_TEST_BROWSER=/usr/bin/chromium to run it",
        );
        return;
    };
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (tenant, other) = (app.create_app("Acme").await, app.create_app("Other").await);
    let endpoint = receiver.url("/crm");
    // The URL check and the first test event succeed, the second test
    // event fails, then the receiver is fixed.
    receiver.script(
        "/crm-new",
        &[
            Reply::Body(200, "received"),
            Reply::Body(200, "received"),
            Reply::Status(500),
        ],
    );
    receiver.always("/crm-new", Reply::Body(200, "received"));
    receiver.always("/pending", Reply::Status(500));
    app.create_endpoint(&tenant, &endpoint, Some(&["call.*", "contact.created"]))
        .await;
    let (status, access) = app
        .post(&format!("/auth/app-portal-access/{tenant}/"), json!({}))
        .await;
    assert_eq!(status, 200, "{access}");

    let (status, read_only) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"readOnly": true}),
        )
        .await;
    assert_eq!(status, 200, "{read_only}");

    let script = workspace().join("tests/browser/portal.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("HERALD_TEST_BROWSER", browser)
        .env("PORTAL_LINK", access["url"].as_str().unwrap())
        .env("ENDPOINT_URL", &endpoint)
        .env("NEW_ENDPOINT_URL", receiver.url("/crm-new"))
        .env("OTHER_APP_PATH", format!("/portal/app/{other}"))
        .env("READ_ONLY_LINK", read_only["url"].as_str().unwrap())
        .env("API_BASE", format!("http://{}/api/v1", app.address))
        .env("API_TOKEN", crate::helpers::TOKEN)
        .env("APP_ID", &tenant)
        .env("PENDING_URL", receiver.url("/pending"))
        .env("SCREENSHOTS", workspace().join("target/screenshots"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the browser walk-through finishes within 2 minutes")
        .expect("node runs");
    assert!(
        output.status.success(),
        "portal.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    // What the pages saved is what the API reads.
    let (_, endpoints) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    let edited = endpoints["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["description"] == "CRM updates")
        .expect("the edited endpoint")
        .clone();
    assert_eq!(edited["rateLimit"], 10, "{edited}");
    assert_eq!(edited["retryPolicy"]["type"], "exponential", "{edited}");
    assert_eq!(edited["retryPolicy"]["maxAttempts"], 4, "{edited}");
    assert_eq!(
        edited["filter"], "data.direction == \"inbound\"",
        "{edited}"
    );
    assert!(
        edited["transformation"]
            .as_str()
            .is_some_and(|t| t.starts_with("{\"text\": \"Call \" + data.callId")),
        "{edited}"
    );
    let id = edited["id"].as_str().unwrap();
    let (_, headers) = app
        .get(&format!("/app/{tenant}/endpoint/{id}/headers/"))
        .await;
    assert_eq!(
        headers["headers"],
        json!({"authorization": "Bearer crm-token-77", "x-tenant": "acme"}),
        "the masked credential was kept: {headers}"
    );
    let (_, rules) = app.get(&format!("/app/{tenant}/alert-rules/")).await;
    assert_eq!(
        rules["rules"],
        json!({"events": ["endpoint.failing", "message.attempt.exhausted"],
               "filterTypes": ["call.completed"], "failingAfter": 3,
               "emailTo": ["crm-team@example.com"]}),
        "{rules}"
    );
}
