//! PostgreSQL SQL for tokens and the audit log.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use herald_domain::{AppId, AuditId, TokenId};

use super::rows::{db, list};
use crate::access::hash_text;
use crate::listing::Listing;
use crate::sql;
use crate::{
    AuditEntry, AuditQuery, InspectedRequest, Inspector, Page, PageRequest, StoreError,
    StoreResult, Timestamp, Token, TokenInput, TokenKind, INSPECTED_KEPT,
};

use crate::access::TOKEN_COLUMNS;

fn bad(column: &str, error: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: error.to_string().into(),
    }
}

fn token(row: &PgRow) -> sqlx::Result<Token> {
    let id: String = row.try_get("id")?;
    let app: String = row.try_get("app_id")?;
    let kind: String = row.try_get("kind")?;
    Ok(Token {
        id: TokenId::parse(&id).map_err(|e| bad("id", e))?,
        app_id: AppId::parse(&app).map_err(|e| bad("app_id", e))?,
        kind: TokenKind::parse(&kind).ok_or_else(|| bad("kind", "unknown token kind"))?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn audit(row: &PgRow) -> sqlx::Result<AuditEntry> {
    let id: String = row.try_get("id")?;
    let app: Option<String> = row.try_get("app_id")?;
    Ok(AuditEntry {
        id: AuditId::parse(&id).map_err(|e| bad("id", e))?,
        actor: row.try_get("actor")?,
        app_id: app
            .map(|a| AppId::parse(&a).map_err(|e| bad("app_id", e)))
            .transpose()?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn create_token(conn: &mut PgConnection, input: TokenInput) -> StoreResult<Token> {
    let token = Token {
        id: TokenId::generate(),
        app_id: input.app_id,
        kind: input.kind,
        name: input.name,
        created_at: crate::shared::now(),
        expires_at: input.expires_at,
        revoked_at: None,
    };
    let inserted = sqlx::query(sql::INSERT_TOKEN.pg)
        .bind(token.id.to_string())
        .bind(token.kind.as_str())
        .bind(&token.name)
        .bind(hash_text(&input.hash))
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.app_id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(token)
}

pub(crate) async fn token_by_hash(
    conn: &mut PgConnection,
    hash: [u8; 32],
) -> StoreResult<Option<Token>> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"
    ))
    .bind(hash_text(&hash))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.as_ref().map(token).transpose().map_err(db)
}

pub(crate) async fn list_tokens(
    conn: &mut PgConnection,
    app: AppId,
    page: PageRequest,
) -> StoreResult<Page<Token>> {
    list(conn, Listing::tokens(app), &page, token, |t| {
        t.id.to_string()
    })
    .await
}

pub(crate) async fn revoke_token(
    conn: &mut PgConnection,
    app: AppId,
    id: TokenId,
    at: Timestamp,
) -> StoreResult<Token> {
    let row = sqlx::query(&format!(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND app_id = $3
         RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(at)
    .bind(id.to_string())
    .bind(app.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.as_ref()
        .map(token)
        .transpose()
        .map_err(db)?
        .ok_or(StoreError::NotFound)
}

pub(crate) async fn record_audit(conn: &mut PgConnection, entry: AuditEntry) -> StoreResult<()> {
    sqlx::query(sql::INSERT_AUDIT.pg)
        .bind(entry.id.to_string())
        .bind(&entry.actor)
        .bind(entry.app_id.map(|a| a.to_string()))
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.detail)
        .bind(entry.created_at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn list_audit(
    conn: &mut PgConnection,
    query: AuditQuery,
) -> StoreResult<Page<AuditEntry>> {
    list(conn, Listing::audit(query.app), &query.page, audit, |e| {
        e.id.to_string()
    })
    .await
}

const INSPECTED_COLUMNS: &str =
    "id, app_id, method, path, query, headers, body, body_truncated, received_at";

fn inspector(row: &PgRow) -> sqlx::Result<Inspector> {
    let app: String = row.try_get("app_id")?;
    Ok(Inspector {
        app_id: AppId::parse(&app).map_err(|e| bad("app_id", e))?,
        token: row.try_get("token")?,
        created_at: row.try_get("created_at")?,
    })
}

fn inspected(row: &PgRow) -> sqlx::Result<InspectedRequest> {
    let app: String = row.try_get("app_id")?;
    let headers: String = row.try_get("headers")?;
    Ok(InspectedRequest {
        id: row.try_get("id")?,
        app_id: AppId::parse(&app).map_err(|e| bad("app_id", e))?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        query: row.try_get("query")?,
        headers: serde_json::from_str(&headers).map_err(|e| bad("headers", e))?,
        body: row.try_get("body")?,
        body_truncated: row.try_get("body_truncated")?,
        received_at: row.try_get("received_at")?,
    })
}

pub(crate) async fn open_inspector(
    conn: &mut PgConnection,
    app: AppId,
    token: String,
) -> StoreResult<Inspector> {
    let now = crate::shared::now();
    sqlx::query(sql::OPEN_INSPECTOR.pg)
        .bind(app.to_string())
        .bind(token)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    inspector_of(conn, app).await?.ok_or(StoreError::NotFound)
}

pub(crate) async fn inspector_of(
    conn: &mut PgConnection,
    app: AppId,
) -> StoreResult<Option<Inspector>> {
    let row = sqlx::query(sql::INSPECTOR_OF_APP.pg)
        .bind(app.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(inspector).transpose().map_err(db)
}

pub(crate) async fn inspector_by_token(
    conn: &mut PgConnection,
    token: String,
) -> StoreResult<Option<Inspector>> {
    let row = sqlx::query(sql::INSPECTOR_BY_TOKEN.pg)
        .bind(token)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(inspector).transpose().map_err(db)
}

pub(crate) async fn close_inspector(conn: &mut PgConnection, app: AppId) -> StoreResult<()> {
    let done = sqlx::query(sql::CLOSE_INSPECTOR.pg)
        .bind(app.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn record_inspected(
    conn: &mut PgConnection,
    request: InspectedRequest,
) -> StoreResult<()> {
    let app = request.app_id.to_string();
    let headers =
        serde_json::to_string(&request.headers).map_err(|e| StoreError::Internal(e.to_string()))?;
    sqlx::query(&format!(
        "INSERT INTO inspected_requests ({INSPECTED_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&request.id)
    .bind(&app)
    .bind(&request.method)
    .bind(&request.path)
    .bind(&request.query)
    .bind(headers)
    .bind(&request.body)
    .bind(request.body_truncated)
    .bind(request.received_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        // The inspector was closed meanwhile (foreign key).
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => StoreError::NotFound,
        _ => db(e),
    })?;
    sqlx::query(sql::TRIM_INSPECTED.pg)
        .bind(&app)
        .bind(INSPECTED_KEPT as i64)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn list_inspected(
    conn: &mut PgConnection,
    app: AppId,
    limit: usize,
) -> StoreResult<Vec<InspectedRequest>> {
    let rows = sqlx::query(&format!(
        "SELECT {INSPECTED_COLUMNS} FROM inspected_requests WHERE app_id = $1
         ORDER BY received_at DESC, id DESC LIMIT $2"
    ))
    .bind(app.to_string())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(inspected)
        .collect::<sqlx::Result<_>>()
        .map_err(db)
}
