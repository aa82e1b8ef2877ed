//! The official Svix Python SDK drives Herald unchanged
//! (`tests/compat/svix_compat.py`), against SQLite and against PostgreSQL.
//! Runs when `HERALD_TEST_PYTHON` names a Python with the pinned `svix` and
//! `standardwebhooks` packages (`scripts/test` sets it up); says so and
//! skips otherwise.

use std::process::Command;

use crate::helpers::{spawn_app, Server, TestDatabase, POSTGRES, TOKEN};

fn python() -> Option<String> {
    let python = std::env::var("HERALD_TEST_PYTHON").ok();
    if python.is_none() {
        crate::helpers::skip_or_fail(
            "the Svix SDK suite",
            "set HERALD_TEST_PYTHON to a Python with the pinned svix SDK (scripts/test does)",
        );
    }
    python
}

/// Runs the compatibility suite against the Herald at `address`.
async fn run_suite(python: String, address: std::net::SocketAddr) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/compat/svix_compat.py"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("HERALD_URL", format!("http://{address}"))
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
        "svix compatibility suite failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("svix compatibility suite passed"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_svix_python_sdk_works_unchanged_against_sqlite() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    run_suite(python, app.address).await;
}

#[tokio::test]
async fn the_svix_python_sdk_works_unchanged_against_postgres() {
    let Some(python) = python() else { return };
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the Svix SDK suite on PostgreSQL").await else {
        return;
    };
    let server = Server::start(&database.env());
    run_suite(python, server.address).await;
    server.terminate();
    database.drop_database().await;
}
