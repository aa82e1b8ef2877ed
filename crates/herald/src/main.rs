//! `herald`: parse the command, load configuration, build, run.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use herald::bench::BenchArgs;
use herald::config::{Database, DatabaseArgs, DatabaseSettings, LogFormat, ServeArgs, Settings};
use herald::Application;

/// mimalloc instead of the system allocator: allocation was a fifth of
/// Herald's CPU time under load with glibc malloc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Herald: self-hosted webhook delivery. Accepts events over a
/// Svix-compatible API, signs them (Standard Webhooks), delivers, retries
/// and logs every attempt — one binary, embedded database.
#[derive(Debug, Parser)]
#[command(name = "herald", version = herald::VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the delivery workers.
    Serve(Box<ServeArgs>),
    /// Create or upgrade the database schema, then exit.
    Migrate(DatabaseArgs),
    /// Measure throughput and latency against a local receiver.
    Bench(BenchArgs),
    /// Create, list and revoke app-scoped API tokens.
    Token(herald::tokens::TokenArgs),
    /// Check a saved webhook request's signature with a secret.
    Verify(herald::verify::VerifyArgs),
    /// Receive webhooks locally: print each one and check its signature.
    Listen(herald::listen::ListenArgs),
    /// Manage apps on a running Herald (a thin API client).
    App(herald::client::AppArgs),
    /// Manage endpoints on a running Herald (a thin API client).
    Endpoint(herald::client::EndpointArgs),
    /// Send a message (an event) through a running Herald.
    Send(herald::client::SendArgs),
    /// Export an app's or an endpoint's attempts as JSON Lines or CSV.
    Export(herald::client::ExportArgs),
    /// Exit 0 when a running Herald answers its health check (for containers).
    Health(herald::client::HealthArgs),
    /// Print the API's OpenAPI 3.1 document (what `/api/v1/openapi.json` serves).
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::App(args) => herald::client::app(args).await,
        Command::Endpoint(args) => herald::client::endpoint(args).await,
        Command::Send(args) => herald::client::send(args).await,
        Command::Export(args) => herald::client::export(args).await,
        Command::Health(args) => herald::client::health(args).await,
        Command::Openapi => {
            print!("{}", herald_api::openapi_document());
            Ok(())
        }
        Command::Serve(args) => {
            let settings = Settings::from_args(*args)?;
            init_logging(&settings.log, settings.log_format, std::io::stdout);
            let application = Application::build(settings).await?;
            if let Some(token) = &application.generated_admin_token {
                println!("Generated an admin token (shown once, only its hash is stored):\n\n    {token}\n");
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            application.run(shutdown).await
        }
        Command::Migrate(args) => {
            let settings = DatabaseSettings::from_args(&args)?;
            let (place, version) = match settings.database {
                Database::Sqlite { path } => {
                    std::fs::create_dir_all(&settings.data_dir)?;
                    let version = herald_store::SqliteStore::migrate_only(&path)?;
                    (path.display().to_string(), version)
                }
                Database::Postgres { url, .. } => {
                    let options = herald_store::PgOptions::new(url.0.clone());
                    let version = herald_store::PgStore::migrate_only(&options).await?;
                    (herald_store::redact_password(&url.0), version)
                }
            };
            println!("{place}: schema version {version}");
            Ok(())
        }
        Command::Bench(args) => {
            init_tool_logging();
            // Stopped by a signal, the run is dropped, and with it the
            // `herald serve` children and their database connections
            // (before, they outlived a killed bench).
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            tokio::select! {
                done = herald::bench::run(args) => done,
                _ = shutdown.cancelled() => anyhow::bail!("stopped by a signal"),
            }
        }
        Command::Token(args) => {
            init_tool_logging();
            herald::tokens::run(args).await
        }
        Command::Listen(args) => {
            init_tool_logging();
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            herald::listen::run(args, shutdown).await
        }
        Command::Verify(args) => match herald::verify::check(&args)? {
            Ok(valid) => {
                println!("{valid}");
                Ok(())
            }
            Err(invalid) => {
                println!("{invalid}");
                std::process::exit(1)
            }
        },
    }
}

/// `serve` logs to standard output; the tools whose standard output is
/// their result (`bench --json`, `token create`, `listen`) log to standard
/// error (a slow statement's warning in the middle of `bench --json` made
/// it unreadable).
fn init_logging<W>(filter: &str, format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn init_tool_logging() {
    init_logging("warn", LogFormat::Text, std::io::stderr);
}

/// SIGINT or SIGTERM starts a graceful shutdown.
async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.ok();
    tracing::info!("shutting down: finishing in-flight deliveries");
    shutdown.cancel();
}
