//! `herald token create|list|revoke`: app-scoped API tokens, made straight
//! in the database (no running server or admin token needed). A new token
//! is printed once; only its SHA-256 is stored.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use herald_domain::ids::IdOrUid;
use herald_domain::token::ApiToken;
use herald_domain::{AppId, TokenId};
use herald_store::{PageRequest, Store, TokenInput, TokenKind};

use crate::config::{Database, DatabaseArgs, DatabaseSettings};

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Make a token that reaches one app only; prints it once.
    Create {
        /// The app's id or uid.
        #[arg(long)]
        app: String,
        /// What the token is for (shown in listings).
        #[arg(long, default_value = "cli")]
        name: String,
        /// How long it works (`30d`, `12h`); default: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List an app's tokens (never the tokens themselves).
    List {
        #[arg(long)]
        app: String,
    },
    /// Revoke a token at once.
    Revoke {
        #[arg(long)]
        app: String,
        /// The token's id (`tok_…`).
        token: String,
    },
}

async fn open(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &settings.database {
        Database::Sqlite { path } => {
            anyhow::ensure!(
                path.exists(),
                "no database at {} (run `herald migrate` or `herald serve` first)",
                path.display()
            );
            let mut options = herald_store::SqliteOptions::new(path);
            options.sealing = settings.sealing.clone();
            Arc::new(herald_store::SqliteStore::open(&options)?)
        }
        Database::Postgres { url, .. } => {
            let mut options = herald_store::PgOptions::new(url.0.clone());
            options.sealing = settings.sealing.clone();
            Arc::new(herald_store::PgStore::open(&options).await?)
        }
    })
}

async fn app(store: &dyn Store, reference: &str) -> anyhow::Result<AppId> {
    let reference = IdOrUid::<AppId>::parse(reference)
        .map_err(|e| anyhow::anyhow!("--app `{reference}`: {e}"))?;
    Ok(store.get_app(&reference).await.context("no such app")?.id)
}

fn millis(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let settings = DatabaseSettings::from_args(&args.database)?;
    let store = open(&settings).await?;
    let now = chrono::Utc::now().timestamp_millis();
    match args.command {
        TokenCommand::Create {
            app: a,
            name,
            expires,
        } => {
            let app = app(store.as_ref(), &a).await?;
            let expires_at = expires
                .map(|text| {
                    herald_domain::parse_duration(&text)
                        .map(|d| now + d.as_millis() as i64)
                        .map_err(|reason| anyhow::anyhow!("--expires: {reason}"))
                })
                .transpose()?;
            let token = ApiToken::generate();
            let record = store
                .create_token(
                    TokenInput {
                        app_id: app,
                        kind: TokenKind::Api,
                        name,
                        hash: token.hash(),
                        expires_at,
                    },
                    cli_audit(app, "token.created", String::new()),
                )
                .await?;
            eprintln!(
                "Created {} for {app}{} (shown once, only its hash is stored):",
                record.id,
                expires_at
                    .map(|at| format!(", expiring {}", millis(at)))
                    .unwrap_or_default()
            );
            println!("{}", token.reveal());
        }
        TokenCommand::List { app: a } => {
            let app = app(store.as_ref(), &a).await?;
            let page = store
                .list_tokens(
                    app,
                    PageRequest {
                        limit: 250,
                        cursor: Default::default(),
                    },
                )
                .await?;
            for token in page.data {
                let state = if token.revoked_at.is_some() {
                    "revoked"
                } else if !token.is_valid_at(now) {
                    "expired"
                } else {
                    "valid"
                };
                println!(
                    "{}\t{}\t{}\t{}\tcreated {}",
                    token.id,
                    token.kind.as_str(),
                    state,
                    token.name,
                    millis(token.created_at)
                );
            }
        }
        TokenCommand::Revoke { app: a, token } => {
            let app = app(store.as_ref(), &a).await?;
            let id = TokenId::parse(&token).map_err(|e| anyhow::anyhow!("{e}"))?;
            store
                .revoke_token(
                    app,
                    id,
                    now,
                    cli_audit(app, "token.revoked", id.to_string()),
                )
                .await
                .context("no such token for this app")?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// The audit entry of a change made with `herald token` (actor `cli`: the
/// operator at the database, no token involved).
fn cli_audit(app: AppId, action: &str, target: String) -> Option<herald_store::AuditEntry> {
    Some(herald_store::AuditEntry {
        id: herald_domain::AuditId::generate(),
        actor: "cli".into(),
        app_id: Some(app),
        action: action.into(),
        target,
        detail: None,
        created_at: chrono::Utc::now().timestamp_millis(),
    })
}
