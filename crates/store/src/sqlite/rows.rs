//! Turning SQLite rows into records, and the shared pagination helper.

use rusqlite::{Connection, Row};

use herald_domain::ids::Uid;
use herald_domain::{
    AppId, AttemptId, DeliveryStatus, EndpointId, EndpointUrl, ErrorClass, EventTypeName,
    MessageId, ParseError, Trigger,
};

use super::pool::internal;
use crate::{
    App, Attempt, Endpoint, EventType, Message, Page, PageRequest, StoreError, StoreResult,
};

pub(crate) use crate::listing::*;
pub(crate) use crate::shared::*;

fn bad_value(
    index: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(error))
}

fn parsed<T>(
    row: &Row<'_>,
    index: usize,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).map_err(|e| bad_value(index, e))
}

fn optional_uid(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Uid>> {
    let text: Option<String> = row.get(index)?;
    text.map(|t| Uid::parse("uid", &t).map_err(|e| bad_value(index, e)))
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| bad_value(index, e))
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(index)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| bad_value(index, e)))
        .transpose()
}

pub(crate) fn app(row: &Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        id: parsed(row, 0, AppId::parse)?,
        uid: optional_uid(row, 1)?,
        name: row.get(2)?,
        rate_limit: row.get(3)?,
        metadata: json(row, 4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

pub(crate) fn event_type(row: &Row<'_>) -> rusqlite::Result<EventType> {
    Ok(EventType {
        name: parsed(row, 0, EventTypeName::stored)?,
        description: row.get(1)?,
        schemas: optional_json(row, 2)?,
        archived: row.get(3)?,
        deprecated: row.get(4)?,
        feature_flag: row.get(5)?,
        group_name: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        enforce_schema: row.get(9)?,
    })
}

pub(crate) fn endpoint(row: &Row<'_>) -> rusqlite::Result<Endpoint> {
    Ok(Endpoint {
        id: parsed(row, 0, EndpointId::parse)?,
        app_id: parsed(row, 1, AppId::parse)?,
        uid: optional_uid(row, 2)?,
        url: parsed(row, 3, EndpointUrl::stored)?,
        description: row.get(4)?,
        disabled: row.get(5)?,
        filter_types: optional_json(row, 6)?,
        channels: optional_json(row, 7)?,
        rate_limit: row.get(8)?,
        version: row.get(9)?,
        metadata: json(row, 10)?,
        headers: json(row, 11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
        retry_policy: optional_json::<herald_domain::RetryPolicySpec>(row, 14)?
            .map(|spec| herald_domain::RetryPolicy::from_spec(&spec).map_err(|e| bad_value(14, e)))
            .transpose()?,
        disabled_reason: row.get(15)?,
        disabled_at: row.get(16)?,
        strict_ordering: row.get(17)?,
        options: herald_domain::DeliveryOptions::decode(
            row.get::<_, Option<String>>(18)?.as_deref(),
        ),
    })
}

/// A row of [`crate::listing::Listing::destinations`]: the endpoint's
/// columns, then its delivery's (read by name).
pub(crate) fn destination(row: &Row<'_>) -> rusqlite::Result<crate::Destination> {
    let (status, next_attempt) = crate::shared::destination_state(
        row.get("delivery_status")?,
        row.get("next_attempt_at")?,
        row.get("lease_until")?,
    );
    Ok(crate::Destination {
        endpoint: endpoint(row)?,
        status,
        next_attempt,
    })
}

pub(crate) fn endpoint_message(row: &Row<'_>) -> rusqlite::Result<crate::EndpointMessage> {
    let (status, next_attempt) = crate::shared::destination_state(
        row.get("delivery_status")?,
        row.get("next_attempt_at")?,
        row.get("lease_until")?,
    );
    Ok(crate::EndpointMessage {
        message: message(row)?,
        status,
        next_attempt,
    })
}

pub(crate) fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: parsed(row, 0, MessageId::parse)?,
        app_id: parsed(row, 1, AppId::parse)?,
        event_id: optional_uid(row, 2)?,
        event_type: parsed(row, 3, EventTypeName::stored)?,
        payload: row.get(4)?,
        channels: optional_json(row, 5)?,
        created_at: row.get(6)?,
    })
}

pub(crate) fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let status: i64 = row.get(5)?;
    let error_class: Option<String> = row.get(9)?;
    Ok(Attempt {
        id: parsed(row, 0, AttemptId::parse)?,
        app_id: parsed(row, 1, AppId::parse)?,
        message_id: parsed(row, 2, MessageId::parse)?,
        endpoint_id: parsed(row, 3, EndpointId::parse)?,
        url: row.get(4)?,
        status: DeliveryStatus::from_code(status).unwrap_or(DeliveryStatus::Failed),
        response_status_code: row.get(6)?,
        response: row.get(7)?,
        response_duration_ms: row.get(8)?,
        error_class: error_class.as_deref().and_then(ErrorClass::parse),
        trigger: Trigger::from_code(row.get(10)?),
        created_at: row.get(11)?,
    })
}

impl rusqlite::ToSql for Bind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Bind::Text(text) => text.to_sql(),
            Bind::Int(number) => number.to_sql(),
        }
    }
}

/// Runs one page of a listing (see [`page_query`]).
pub(crate) fn list<T>(
    conn: &Connection,
    listing: Listing,
    page: &PageRequest,
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    key_of: impl Fn(&T) -> String,
) -> StoreResult<Page<T>> {
    list_within(conn, listing, page, map, key_of, Filling::unbounded())
}

/// [`list`] into `filling`: rows are read one by one, and reading stops
/// once the page is full.
pub(crate) fn list_within<T>(
    conn: &Connection,
    listing: Listing,
    page: &PageRequest,
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    key_of: impl Fn(&T) -> String,
    mut filling: Filling<T>,
) -> StoreResult<Page<T>> {
    let query = page_query(listing, page);
    let mut statement = conn.prepare_cached(&query.sql).map_err(internal)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(query.binds.iter()), map)
        .map_err(internal)?;
    for row in rows {
        if !filling.push(row.map_err(internal)?) {
            break;
        }
    }
    Ok(filling.finish(query.limit, &page.cursor, key_of))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

pub(crate) fn optional_to_json<T: serde::Serialize>(
    value: &Option<T>,
) -> StoreResult<Option<String>> {
    value.as_ref().map(to_json).transpose()
}
