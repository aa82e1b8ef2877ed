//! The example receivers in `examples/` (Python with the `standardwebhooks`
//! PyPI package, Node with the `standardwebhooks` npm package) verify real
//! deliveries from Herald and act on the platform's events; a forged
//! request is refused. They run when `HERALD_TEST_PYTHON` / `HERALD_TEST_NODE`
//! name the interpreters (`scripts/test` sets both up) and say so otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_app};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

struct Example {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Example {
    fn start(program: &str, script: &str) -> Self {
        let mut child = Command::new(program)
            .arg(script)
            .arg("0")
            .env("WEBHOOK_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    async fn line_with(&self, text: &str) -> String {
        let lines = self.lines.clone();
        eventually(Duration::from_secs(15), text, || {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            async move { found }
        })
        .await
    }
}

async fn drive(program: &str, script: &str) {
    let example = Example::start(program, script);
    let listening = example.line_with("listening on ").await;
    let url = listening.trim_start_matches("listening on ").to_owned();

    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({"url": url, "secret": SECRET, "filterTypes": ["call.*", "contact.created"]}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    app.send(
        &tenant,
        "call.completed",
        json!({"callId": "call_1", "contactId": "contact_9912", "durationSeconds": 395,
               "startedAt": "2026-11-27T09:00:00Z", "endedAt": "2026-11-27T09:06:35Z"}),
    )
    .await;
    app.send(
        &tenant,
        "contact.created",
        json!({"contactId": "contact_77", "firstName": "Ada", "lastName": "Lovelace"}),
    )
    .await;
    app.send(
        &tenant,
        "call.failed",
        json!({"callId": "call_2", "to": "+442071838750", "reason": "no_answer"}),
    )
    .await;
    example
        .line_with("CRM: call call_1 with contact_9912 lasted 395 s")
        .await;
    example
        .line_with("chat: new contact Ada Lovelace (contact_77)")
        .await;
    example
        .line_with("task: call back +442071838750 (call call_2 failed: no_answer)")
        .await;

    // A forged request is refused and does nothing.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body(r#"{"type":"call.completed","data":{"callId":"call_forged"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    example.line_with("rejected").await;
    assert!(!example
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("call_forged")));
}

/// The Python the examples run with (`HERALD_TEST_PYTHON`); `None`, said
/// (or failed, in CI), without one.
fn python(test: &str) -> Option<String> {
    let found = std::env::var("HERALD_TEST_PYTHON").ok();
    if found.is_none() {
        crate::helpers::skip_or_fail(
            test,
            "set HERALD_TEST_PYTHON to a Python with standardwebhooks (scripts/test does)",
        );
    }
    found
}

#[tokio::test]
async fn the_python_example_receiver_verifies_and_acts_on_herald_deliveries() {
    let Some(python) = python("the Python example") else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/receiver.py"
    );
    drive(&python, script).await;
}

/// The chat notification with no relay: an endpoint's transformation
/// writes the Slack-shaped body and its filter keeps inbound calls; the
/// stand-in chat verifies the signature and shows the line.
#[tokio::test]
async fn a_transformation_posts_straight_to_the_slack_shaped_chat_example() {
    let Some(python) = python("the chat example") else {
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/chat_receiver.py"
    );
    let example = Example::start(&python, script);
    let listening = example.line_with("listening on ").await;
    let url = listening.trim_start_matches("listening on ").to_owned();

    let app = spawn_app().await;
    let tenant = app.create_app("Acme").await;
    let (status, endpoint) = app
        .post(
            &format!("/app/{tenant}/endpoint/"),
            json!({
                "url": url,
                "secret": SECRET,
                "filterTypes": ["call.completed"],
                "filter": "data.direction == \"inbound\"",
                "transformation": "{\"text\": \"Call \" + data.callId + \" completed in \" + string(data.durationSeconds) + \" s\"}",
            }),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let outbound = app
        .send(
            &tenant,
            "call.completed",
            json!({"callId": "call_2", "direction": "outbound", "durationSeconds": 12}),
        )
        .await;
    app.send(
        &tenant,
        "call.completed",
        json!({"callId": "call_1", "direction": "inbound", "durationSeconds": 395}),
    )
    .await;
    example
        .line_with("chat: Call call_1 completed in 395 s")
        .await;
    // The outbound call was never meant for the chat: no delivery exists.
    let (_, destinations) = app
        .get(&format!("/app/{tenant}/msg/{outbound}/endpoint/"))
        .await;
    assert_eq!(destinations["data"], json!([]), "{destinations}");
    let lines = example.lines.lock().unwrap().clone();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("call_2") || l.contains("rejected") || l.contains("not a chat")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_node_example_receiver_verifies_and_acts_on_herald_deliveries() {
    let Ok(node) = std::env::var("HERALD_TEST_NODE") else {
        crate::helpers::skip_or_fail(
            "the Node example",
            "set HERALD_TEST_NODE to node, with examples/node installed (scripts/test does)",
        );
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/node/receiver.mjs"
    );
    drive(&node, script).await;
}
