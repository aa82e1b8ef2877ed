//! The official Svix Python SDK drives Herald unchanged. Runs when
//! `HERALD_TEST_PYTHON` names a Python with the pinned `svix` and
//! `standardwebhooks` packages (`scripts/test` sets it up); says so and
//! skips otherwise.

use std::process::Command;

use crate::helpers::{spawn_app, TOKEN};

#[tokio::test]
async fn the_svix_python_sdk_creates_and_lists_apps_endpoints_messages_and_attempts() {
    let Ok(python) = std::env::var("HERALD_TEST_PYTHON") else {
        eprintln!("SKIPPED: set HERALD_TEST_PYTHON to a Python with the pinned svix SDK (scripts/test does)");
        return;
    };
    let app = spawn_app().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/compat/svix_smoke.py"
    );
    let server_url = format!("http://{}", app.address);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("HERALD_URL", server_url)
            .env("HERALD_TOKEN", TOKEN)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "svix smoke test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("svix smoke test passed"), "{stdout}");
}
