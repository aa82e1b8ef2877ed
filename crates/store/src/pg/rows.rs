//! Turning PostgreSQL rows into records, error mapping, and pagination.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, PgConnection, Row};

use herald_domain::ids::Uid;
use herald_domain::{
    AppId, AttemptId, DeliveryStatus, EndpointId, EndpointUrl, ErrorClass, EventTypeName,
    MessageId, ParseError, Trigger,
};

use crate::{
    App, Attempt, Endpoint, EventType, Message, Page, PageRequest, StoreError, StoreResult,
};

pub(crate) use crate::listing::*;
pub(crate) use crate::shared::*;

/// Maps a driver error into the store's vocabulary, in this one place:
/// uniqueness violations become conflicts naming the field, lost or refused
/// connections become `Unavailable` (HTTP 503).
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            if code == "23505" {
                let constraint = database.constraint().unwrap_or_default();
                let field = if constraint.contains("event_id") {
                    "eventId"
                } else if constraint.contains("uid") {
                    "uid"
                } else if constraint.starts_with("event_types") {
                    "name"
                } else {
                    "id"
                };
                return StoreError::Conflict { field };
            }
            if unavailable(&code) {
                return StoreError::Unavailable(error.to_string());
            }
            StoreError::Internal(error.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

/// Whether an SQLSTATE says "not now" rather than "never": the server
/// cannot be reached or will not serve this session (class 08, connection;
/// 53, out of resources; 55, such as 55000 "database is not currently
/// accepting connections" and 55P03 a lock not available; 57, an operator's
/// shutdown or cancellation), it serves reads only (25006, a standby after a
/// fail-over), or the transaction lost a conflict it may win when run again
/// (40001 serialization failure, 40P01 deadlock). Each is a 503 with
/// `Retry-After`, never a 500.
pub(crate) fn unavailable(code: &str) -> bool {
    ["08", "53", "55", "57"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "25006" | "40001" | "40P01")
}

fn decode(field: &str, error: ParseError) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: field.to_owned(),
        source: Box::new(error),
    }
}

fn parsed<T>(
    row: &PgRow,
    column: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> sqlx::Result<T> {
    let text: String = row.try_get(column)?;
    parse(&text).map_err(|e| decode(column, e))
}

fn optional_uid(row: &PgRow, column: &str) -> sqlx::Result<Option<Uid>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uid::parse("uid", &t).map_err(|e| decode(column, e)))
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &PgRow, column: &str) -> sqlx::Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    column: &str,
) -> sqlx::Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: Box::new(e),
        })
    })
    .transpose()
}

fn small(row: &PgRow, column: &str) -> sqlx::Result<Option<u32>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(|v| v as u32))
}

pub(crate) fn app(row: &PgRow) -> sqlx::Result<App> {
    Ok(App {
        id: parsed(row, "id", AppId::parse)?,
        uid: optional_uid(row, "uid")?,
        name: row.try_get("name")?,
        rate_limit: small(row, "rate_limit")?,
        metadata: json(row, "metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(crate) fn event_type(row: &PgRow) -> sqlx::Result<EventType> {
    Ok(EventType {
        name: parsed(row, "name", EventTypeName::stored)?,
        description: row.try_get("description")?,
        schemas: optional_json(row, "schemas")?,
        archived: row.try_get("archived")?,
        deprecated: row.try_get("deprecated")?,
        feature_flag: row.try_get("feature_flag")?,
        group_name: row.try_get("group_name")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        enforce_schema: row.try_get("enforce_schema")?,
    })
}

pub(crate) fn endpoint(row: &PgRow) -> sqlx::Result<Endpoint> {
    Ok(Endpoint {
        id: parsed(row, "id", EndpointId::parse)?,
        app_id: parsed(row, "app_id", AppId::parse)?,
        uid: optional_uid(row, "uid")?,
        url: parsed(row, "url", EndpointUrl::stored)?,
        description: row.try_get("description")?,
        disabled: row.try_get("disabled")?,
        filter_types: optional_json(row, "filter_types")?,
        channels: optional_json(row, "channels")?,
        rate_limit: small(row, "rate_limit")?,
        version: row.try_get::<i64, _>("version")? as i32,
        metadata: json(row, "metadata")?,
        headers: json(row, "headers")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        retry_policy: optional_json::<herald_domain::RetryPolicySpec>(row, "retry_policy")?
            .map(|spec| {
                herald_domain::RetryPolicy::from_spec(&spec).map_err(|e| {
                    sqlx::Error::ColumnDecode {
                        index: "retry_policy".into(),
                        source: Box::new(e),
                    }
                })
            })
            .transpose()?,
        disabled_reason: row.try_get("disabled_reason")?,
        disabled_at: row.try_get("disabled_at")?,
        strict_ordering: row.try_get("strict_ordering")?,
        options: herald_domain::DeliveryOptions::decode(
            row.try_get::<Option<String>, _>("options")?.as_deref(),
        ),
    })
}

pub(crate) fn destination(row: &PgRow) -> sqlx::Result<crate::Destination> {
    let (status, next_attempt) = crate::shared::destination_state(
        row.try_get("delivery_status")?,
        row.try_get("next_attempt_at")?,
        row.try_get("lease_until")?,
    );
    Ok(crate::Destination {
        endpoint: endpoint(row)?,
        status,
        next_attempt,
    })
}

pub(crate) fn endpoint_message(row: &PgRow) -> sqlx::Result<crate::EndpointMessage> {
    let (status, next_attempt) = crate::shared::destination_state(
        row.try_get("delivery_status")?,
        row.try_get("next_attempt_at")?,
        row.try_get("lease_until")?,
    );
    Ok(crate::EndpointMessage {
        message: message(row)?,
        status,
        next_attempt,
    })
}

pub(crate) fn message(row: &PgRow) -> sqlx::Result<Message> {
    Ok(Message {
        id: parsed(row, "id", MessageId::parse)?,
        app_id: parsed(row, "app_id", AppId::parse)?,
        event_id: optional_uid(row, "event_id")?,
        event_type: parsed(row, "event_type", EventTypeName::stored)?,
        payload: row.try_get("payload")?,
        channels: optional_json(row, "channels")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn attempt(row: &PgRow) -> sqlx::Result<Attempt> {
    let error_class: Option<String> = row.try_get("error_class")?;
    Ok(Attempt {
        id: parsed(row, "id", AttemptId::parse)?,
        app_id: parsed(row, "app_id", AppId::parse)?,
        message_id: parsed(row, "message_id", MessageId::parse)?,
        endpoint_id: parsed(row, "endpoint_id", EndpointId::parse)?,
        url: row.try_get("url")?,
        status: DeliveryStatus::from_code(row.try_get("status")?).unwrap_or(DeliveryStatus::Failed),
        response_status_code: row.try_get::<i64, _>("response_status_code")? as u16,
        response: row.try_get("response")?,
        response_duration_ms: row.try_get::<i64, _>("response_duration_ms")? as u64,
        error_class: error_class.as_deref().and_then(ErrorClass::parse),
        trigger: Trigger::from_code(row.try_get("trigger_type")?),
        created_at: row.try_get("created_at")?,
    })
}

/// Runs one page of a listing (see [`page_query`]).
pub(crate) async fn list<T>(
    conn: &mut PgConnection,
    listing: Listing,
    page: &PageRequest,
    map: impl Fn(&PgRow) -> sqlx::Result<T>,
    key_of: impl Fn(&T) -> String,
) -> StoreResult<Page<T>> {
    list_within(conn, listing, page, map, key_of, Filling::unbounded()).await
}

/// [`list`] into `filling`: rows are read one by one, and reading stops
/// once the page is full (the rest of the answer is discarded unread).
pub(crate) async fn list_within<T>(
    conn: &mut PgConnection,
    listing: Listing,
    page: &PageRequest,
    map: impl Fn(&PgRow) -> sqlx::Result<T>,
    key_of: impl Fn(&T) -> String,
    mut filling: Filling<T>,
) -> StoreResult<Page<T>> {
    use futures_util::TryStreamExt;
    let query = page_query(listing, page);
    let mut arguments = PgArguments::default();
    for bind in query.binds {
        match bind {
            Bind::Text(text) => arguments.add(text),
            Bind::Int(number) => arguments.add(number),
        }
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    }
    let sql = numbered(&query.sql);
    let mut rows = sqlx::query_with(&sql, arguments).fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(db)? {
        if !filling.push(map(&row).map_err(db)?) {
            break;
        }
    }
    Ok(filling.finish(query.limit, &page.cursor, key_of))
}

/// Rewrites `?` placeholders as `$1`, `$2`, … (no `?` appears in literals here).
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}
