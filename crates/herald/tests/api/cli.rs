//! `herald app|endpoint|send`, the thin API client, driven as a child
//! process against a running Herald.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{spawn_app, Receiver, TOKEN};

async fn herald(server: &str, args: &[&str], token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .env("HERALD_URL", server)
        .env_remove("HERALD_TOKEN")
        .env_remove("HERALD_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("HERALD_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output().expect("herald runs"))
        .await
        .unwrap()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn the_cli_creates_an_app_and_endpoint_and_sends_a_message() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let server = format!("http://{}", app.address);
    let t = Some(TOKEN);

    let created = json(
        &herald(
            &server,
            &["app", "create", "--name", "Acme", "--uid", "acme"],
            t,
        )
        .await,
    );
    assert_eq!(created["uid"], "acme");
    let listed = json(&herald(&server, &["app", "list"], t).await);
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == created["id"]));
    assert_eq!(
        json(&herald(&server, &["app", "get", "acme"], t).await)["name"],
        "Acme"
    );

    let hook = receiver.url("/hook");
    let endpoint = json(
        &herald(
            &server,
            &[
                "endpoint",
                "create",
                "--app",
                "acme",
                "--url",
                &hook,
                "--event-type",
                "call.*",
            ],
            t,
        )
        .await,
    );
    assert_eq!(endpoint["filterTypes"], serde_json::json!(["call.*"]));
    let id = endpoint["id"].as_str().unwrap();
    let secret = herald(&server, &["endpoint", "secret", "--app", "acme", id], t).await;
    let secret = String::from_utf8(secret.stdout).unwrap();
    assert!(secret.trim().starts_with("whsec_"), "{secret}");
    let listed = json(&herald(&server, &["endpoint", "list", "--app", "acme"], t).await);
    assert_eq!(listed["data"][0]["id"], id);

    let payload_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(payload_file.path(), r#"{"callId": "c-7"}"#).unwrap();
    let file_arg = format!("@{}", payload_file.path().display());
    let sent = json(
        &herald(
            &server,
            &[
                "send",
                "--app",
                "acme",
                "--type",
                "call.completed",
                "--payload",
                &file_arg,
                "--event-id",
                "evt-7",
            ],
            t,
        )
        .await,
    );
    assert!(sent["id"].as_str().unwrap().starts_with("msg_"));
    let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(delivered[0].json()["data"]["callId"], "c-7");

    // Errors: the API's answer on stderr, exit status 1.
    let again = herald(
        &server,
        &[
            "send",
            "--app",
            "acme",
            "--type",
            "call.completed",
            "--event-id",
            "evt-7",
        ],
        t,
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("409 conflict"));
    let unauthorised = herald(
        &server,
        &["app", "list"],
        Some("wrong-token-of-enough-length"),
    )
    .await;
    assert!(String::from_utf8_lossy(&unauthorised.stderr).contains("401"));
    let no_token = herald(&server, &["app", "list"], None).await;
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no token"));

    // The activity log exported, as JSON Lines (to a file) and as CSV.
    let exported = tempfile::NamedTempFile::new().unwrap();
    let path = exported.path().display().to_string();
    let args = [
        "export",
        "--app",
        "acme",
        "--endpoint",
        id,
        "--output",
        &path,
    ];
    let lines = crate::helpers::eventually(Duration::from_secs(10), "the attempt", || {
        let (server, path) = (server.clone(), path.clone());
        async move {
            let done = herald(&server, &args, t).await;
            assert!(
                done.status.success(),
                "{}",
                String::from_utf8_lossy(&done.stderr)
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (!lines.is_empty()).then_some(lines)
        }
    })
    .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["endpointId"], id);
    assert_eq!(lines[0]["responseStatusCode"], 200);
    let csv = herald(
        &server,
        &[
            "export",
            "--app",
            "acme",
            "--format",
            "csv",
            "--status",
            "succeeded",
        ],
        t,
    )
    .await;
    let csv = String::from_utf8(csv.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[0].starts_with("id,timestamp,msgId,endpointId,"),
        "{csv}"
    );
    assert!(rows[1].contains(id), "{csv}");
    let refused = herald(&server, &["export", "--app", "acme", "--format", "xml"], t).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("422"));

    let deleted = herald(&server, &["endpoint", "delete", "--app", "acme", id], t).await;
    assert!(deleted.status.success());
    assert!(herald(&server, &["app", "delete", "acme"], t)
        .await
        .status
        .success());
    let gone = herald(&server, &["app", "get", "acme"], t).await;
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404 not_found"));

    // The container health check: up, and a port nobody listens on.
    let up = herald(&server, &["health"], None).await;
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let down = herald(&nobody, &["health", "--timeout", "2"], None).await;
    assert_eq!(down.status.code(), Some(1));
}
