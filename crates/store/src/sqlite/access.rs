//! SQLite SQL for tokens and the audit log.

use rusqlite::{params, Connection, OptionalExtension, Row};

use herald_domain::{AppId, AuditId, TokenId};

use super::pool::internal;
use super::rows::list;
use crate::access::hash_text;
use crate::listing::Listing;
use crate::sql;
use crate::{
    AuditEntry, AuditQuery, InspectedRequest, Inspector, Page, PageRequest, StoreError,
    StoreResult, Timestamp, Token, TokenInput, TokenKind, INSPECTED_KEPT,
};

use crate::access::TOKEN_COLUMNS;

fn bad(index: usize, error: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        error.to_string().into(),
    )
}

fn token(row: &Row<'_>) -> rusqlite::Result<Token> {
    let id: String = row.get(0)?;
    let app: String = row.get(1)?;
    let kind: String = row.get(2)?;
    Ok(Token {
        id: TokenId::parse(&id).map_err(|e| bad(0, e))?,
        app_id: AppId::parse(&app).map_err(|e| bad(1, e))?,
        kind: TokenKind::parse(&kind).ok_or_else(|| bad(2, "unknown token kind"))?,
        name: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

fn audit(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let id: String = row.get(0)?;
    let app: Option<String> = row.get(2)?;
    Ok(AuditEntry {
        id: AuditId::parse(&id).map_err(|e| bad(0, e))?,
        actor: row.get(1)?,
        app_id: app
            .map(|a| AppId::parse(&a).map_err(|e| bad(2, e)))
            .transpose()?,
        action: row.get(3)?,
        target: row.get(4)?,
        detail: row.get(5)?,
        created_at: row.get(6)?,
    })
}

pub(crate) fn create_token(conn: &Connection, input: TokenInput) -> StoreResult<Token> {
    let token = Token {
        id: TokenId::generate(),
        app_id: input.app_id,
        kind: input.kind,
        name: input.name,
        created_at: crate::shared::now(),
        expires_at: input.expires_at,
        revoked_at: None,
    };
    conn.prepare_cached(sql::INSERT_TOKEN.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                token.id.to_string(),
                token.kind.as_str(),
                token.name,
                hash_text(&input.hash),
                token.created_at,
                token.expires_at,
                token.app_id.to_string(),
            ])
        })
        .map_err(internal)
        .and_then(|rows| {
            if rows == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(token.clone())
            }
        })
}

pub(crate) fn token_by_hash(conn: &Connection, hash: [u8; 32]) -> StoreResult<Option<Token>> {
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?"
    ))
    .and_then(|mut s| s.query_row([hash_text(&hash)], token).optional())
    .map_err(internal)
}

pub(crate) fn list_tokens(
    conn: &Connection,
    app: AppId,
    page: PageRequest,
) -> StoreResult<Page<Token>> {
    list(conn, Listing::tokens(app), &page, token, |t| {
        t.id.to_string()
    })
}

pub(crate) fn revoke_token(
    conn: &Connection,
    app: AppId,
    id: TokenId,
    at: Timestamp,
) -> StoreResult<Token> {
    conn.prepare_cached(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND app_id = ?",
    )
    .and_then(|mut s| s.execute(params![at, id.to_string(), app.to_string()]))
    .map_err(internal)?;
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ? AND app_id = ?"
    ))
    .and_then(|mut s| {
        s.query_row([id.to_string(), app.to_string()], token)
            .optional()
    })
    .map_err(internal)?
    .ok_or(StoreError::NotFound)
}

pub(crate) fn record_audit(conn: &Connection, entry: AuditEntry) -> StoreResult<()> {
    conn.prepare_cached(sql::INSERT_AUDIT.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                entry.id.to_string(),
                entry.actor,
                entry.app_id.map(|a| a.to_string()),
                entry.action,
                entry.target,
                entry.detail,
                entry.created_at,
            ])
        })
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn list_audit(conn: &Connection, query: AuditQuery) -> StoreResult<Page<AuditEntry>> {
    list(conn, Listing::audit(query.app), &query.page, audit, |e| {
        e.id.to_string()
    })
}

const INSPECTED_COLUMNS: &str =
    "id, app_id, method, path, query, headers, body, body_truncated, received_at";

fn inspector(row: &Row<'_>) -> rusqlite::Result<Inspector> {
    let app: String = row.get(0)?;
    Ok(Inspector {
        app_id: AppId::parse(&app).map_err(|e| bad(0, e))?,
        token: row.get(1)?,
        created_at: row.get(2)?,
    })
}

fn inspected(row: &Row<'_>) -> rusqlite::Result<InspectedRequest> {
    let app: String = row.get(1)?;
    let headers: String = row.get(5)?;
    Ok(InspectedRequest {
        id: row.get(0)?,
        app_id: AppId::parse(&app).map_err(|e| bad(1, e))?,
        method: row.get(2)?,
        path: row.get(3)?,
        query: row.get(4)?,
        headers: serde_json::from_str(&headers).map_err(|e| bad(5, e))?,
        body: row.get(6)?,
        body_truncated: row.get(7)?,
        received_at: row.get(8)?,
    })
}

pub(crate) fn open_inspector(
    conn: &Connection,
    app: AppId,
    token: String,
) -> StoreResult<Inspector> {
    let now = crate::shared::now();
    conn.prepare_cached(sql::OPEN_INSPECTOR.sqlite)
        .and_then(|mut s| s.execute(params![app.to_string(), token, now]))
        .map_err(internal)?;
    inspector_of(conn, app)?.ok_or(StoreError::NotFound)
}

pub(crate) fn inspector_of(conn: &Connection, app: AppId) -> StoreResult<Option<Inspector>> {
    conn.prepare_cached(sql::INSPECTOR_OF_APP.sqlite)
        .and_then(|mut s| s.query_row([app.to_string()], inspector).optional())
        .map_err(internal)
}

pub(crate) fn inspector_by_token(
    conn: &Connection,
    token: String,
) -> StoreResult<Option<Inspector>> {
    conn.prepare_cached(sql::INSPECTOR_BY_TOKEN.sqlite)
        .and_then(|mut s| s.query_row([token], inspector).optional())
        .map_err(internal)
}

pub(crate) fn close_inspector(conn: &Connection, app: AppId) -> StoreResult<()> {
    let deleted = conn
        .prepare_cached(sql::CLOSE_INSPECTOR.sqlite)
        .and_then(|mut s| s.execute([app.to_string()]))
        .map_err(internal)?;
    if deleted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) fn record_inspected(conn: &Connection, request: InspectedRequest) -> StoreResult<()> {
    let app = request.app_id.to_string();
    let headers =
        serde_json::to_string(&request.headers).map_err(|e| StoreError::Internal(e.to_string()))?;
    conn.prepare_cached(&format!(
        "INSERT INTO inspected_requests ({INSPECTED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            request.id,
            app,
            request.method,
            request.path,
            request.query,
            headers,
            request.body,
            request.body_truncated,
            request.received_at
        ])
    })
    .map_err(|e| match e {
        // The inspector was closed meanwhile.
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::NotFound
        }
        other => internal(other),
    })?;
    conn.prepare_cached(sql::TRIM_INSPECTED.sqlite)
        .and_then(|mut s| s.execute(params![app, INSPECTED_KEPT as i64]))
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn list_inspected(
    conn: &Connection,
    app: AppId,
    limit: usize,
) -> StoreResult<Vec<InspectedRequest>> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {INSPECTED_COLUMNS} FROM inspected_requests WHERE app_id = ?
             ORDER BY received_at DESC, id DESC LIMIT ?"
        ))
        .map_err(internal)?;
    let rows = statement
        .query_map(params![app.to_string(), limit as i64], inspected)
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)
}
