//! What both backends share: column lists (the schemas are twins) and the
//! arithmetic of a page.

use crate::{Cursor, Page, Timestamp};

/// The wall clock in unix milliseconds.
pub(crate) fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub(crate) const APP_COLUMNS: &str = "id, uid, name, rate_limit, metadata, created_at, updated_at";
pub(crate) const EVENT_TYPE_COLUMNS: &str = "name, description, schemas, archived, deprecated, feature_flag, group_name, created_at, updated_at";
pub(crate) const ENDPOINT_COLUMNS: &str = "id, app_id, uid, url, description, disabled, filter_types, channels, rate_limit, version, metadata, headers, created_at, updated_at";
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, app_id, event_id, event_type, payload, channels, created_at";
pub(crate) const ATTEMPT_COLUMNS: &str = "id, app_id, message_id, endpoint_id, url, status, response_status_code, response, response_duration_ms, error_class, trigger_type, created_at";

/// Turns up to `limit + 1` fetched rows into a page. Rows fetched walking
/// backwards (a `-` cursor) are put back into listing order.
pub(crate) fn finish_page<T>(
    mut data: Vec<T>,
    limit: usize,
    cursor: &Cursor,
    key_of: impl Fn(&T) -> String,
) -> Page<T> {
    let backwards = matches!(cursor, Cursor::Before(_));
    let more = data.len() > limit;
    data.truncate(limit);
    if backwards {
        data.reverse();
    }
    let cursor_key = match cursor {
        Cursor::Start => None,
        Cursor::After(k) | Cursor::Before(k) => Some(k.clone()),
    };
    let first = data.first().map(&key_of);
    let last = data.last().map(&key_of).or(cursor_key);
    let (done, prev_iterator) = if backwards {
        (false, first.filter(|_| more).map(|k| format!("-{k}")))
    } else {
        (!more, first.map(|k| format!("-{k}")))
    };
    Page {
        data,
        iterator: last,
        prev_iterator,
        done,
    }
}
