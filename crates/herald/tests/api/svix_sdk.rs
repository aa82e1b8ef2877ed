//! The official Svix Python SDK drives Herald unchanged
//! (`tests/compat/svix_compat.py`), against SQLite and against PostgreSQL;
//! the current major line (2.x) too (`svix2_smoke.py`), and every field of
//! both lines' request models is walked (`sdk_fields.py`): each takes
//! effect or is refused by name. Runs when `HERALD_TEST_PYTHON` (1.x, with
//! `standardwebhooks`) and `HERALD_TEST_PYTHON_SDK2` (2.x) name Pythons
//! with the pinned packages (`scripts/test` sets them up); says so and
//! skips otherwise.

use std::process::Command;

use crate::helpers::{spawn_app, Server, TestDatabase, POSTGRES, TOKEN};

fn python() -> Option<String> {
    python_of("HERALD_TEST_PYTHON")
}

/// The Python named by `variable`, or a SKIPPED line (a failure under
/// `HERALD_TEST_REQUIRE_ALL`).
fn python_of(variable: &str) -> Option<String> {
    let python = std::env::var(variable).ok();
    if python.is_none() {
        crate::helpers::skip_or_fail(
            "the Svix SDK suite",
            &format!("set {variable} to a Python with the pinned svix SDK (scripts/test does)"),
        );
    }
    python
}

/// Runs `tests/compat/<script>` with `python` against the Herald at
/// `address`; its output must end with `passed`.
async fn run_script(python: String, script: &str, address: std::net::SocketAddr) -> String {
    let path = format!("{}/../../tests/compat/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(path)
            .env("HERALD_URL", format!("http://{address}"))
            .env("HERALD_TOKEN", TOKEN)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
    stdout
}

/// Both pinned SDK lines: the 2.x smoke run and the field walk of each.
async fn run_sdk_lines(address: std::net::SocketAddr) {
    let (Some(one), Some(two)) = (python(), python_of("HERALD_TEST_PYTHON_SDK2")) else {
        return;
    };
    run_script(two.clone(), "svix2_smoke.py", address).await;
    for python in [one, two] {
        let walked = run_script(python, "sdk_fields.py", address).await;
        eprintln!("{}", walked.trim());
    }
}

#[tokio::test]
async fn both_svix_sdk_lines_work_and_every_field_they_model_takes_effect_or_is_refused_on_sqlite()
{
    let app = spawn_app().await;
    run_sdk_lines(app.address).await;
}

#[tokio::test]
async fn both_svix_sdk_lines_work_and_every_field_they_model_takes_effect_or_is_refused_on_postgres(
) {
    let _shared = POSTGRES.read().await;
    let Some(database) = TestDatabase::create("the Svix SDK lines on PostgreSQL").await else {
        return;
    };
    let server = Server::start(&database.env());
    run_sdk_lines(server.address).await;
    server.terminate();
    database.drop_database().await;
}

/// Runs the compatibility suite against the Herald at `address`.
async fn run_suite(python: String, address: std::net::SocketAddr) {
    let stdout = run_script(python, "svix_compat.py", address).await;
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
