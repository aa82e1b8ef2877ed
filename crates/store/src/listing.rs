//! Paginated listings, the same on both backends: which rows a listing
//! reads ([`Listing`]), one page of them as SQL ([`page_query`], with `?`
//! placeholders that PostgreSQL numbers), and the page made of what came
//! back ([`finish_page`]).

use herald_domain::{AppId, AttemptId, DeliveryStatus, MessageId};

use crate::{AttemptFilter, AttemptQuery, Cursor, MessageQuery, Page, PageRequest};

/// The rows of `table` matching `filter` (`?` placeholders bound to
/// `binds`), ordered by the unique column `key`.
#[derive(Debug)]
pub(crate) struct Listing {
    pub columns: &'static str,
    pub table: &'static str,
    pub filter: String,
    pub binds: Vec<Bind>,
    pub key: &'static str,
    pub order: Order,
}

impl Listing {
    fn of(columns: &'static str, table: &'static str, key: &'static str, order: Order) -> Self {
        Self {
            columns,
            table,
            filter: "1 = 1".into(),
            binds: Vec::new(),
            key,
            order,
        }
    }

    fn of_app(columns: &'static str, table: &'static str, app: AppId, order: Order) -> Self {
        Self {
            filter: "app_id = ?".into(),
            binds: vec![Bind::Text(app.to_string())],
            ..Self::of(columns, table, "id", order)
        }
    }

    pub(crate) fn apps() -> Self {
        Self::of(crate::shared::APP_COLUMNS, "apps", "id", Order::Ascending)
    }

    pub(crate) fn event_types(include_archived: bool) -> Self {
        let mut listing = Self::of(
            crate::shared::EVENT_TYPE_COLUMNS,
            "event_types",
            "name",
            Order::Ascending,
        );
        if !include_archived {
            listing.filter = "NOT archived".into();
        }
        listing
    }

    pub(crate) fn endpoints(app: AppId) -> Self {
        Self::of_app(
            crate::shared::ENDPOINT_COLUMNS,
            "endpoints",
            app,
            Order::Ascending,
        )
    }

    pub(crate) fn tokens(app: AppId) -> Self {
        Self::of_app(
            crate::access::TOKEN_COLUMNS,
            "tokens",
            app,
            Order::Ascending,
        )
    }

    /// Newest first, of one app or of all.
    pub(crate) fn audit(app: Option<AppId>) -> Self {
        let columns = crate::access::AUDIT_COLUMNS;
        match app {
            Some(app) => Self::of_app(columns, "audit_log", app, Order::Descending),
            None => Self::of(columns, "audit_log", "id", Order::Descending),
        }
    }

    /// The endpoints a message was fanned out to, by endpoint id, each with
    /// its delivery's `delivery_status`, `next_attempt_at` and `lease_until`.
    pub(crate) fn destinations(app: AppId, message: MessageId) -> Self {
        Self {
            filter: "app_id = ? AND message_id = ?".into(),
            binds: vec![
                Bind::Text(app.to_string()),
                Bind::Text(message.to_string()),
            ],
            ..Self::of(
                DESTINATION_COLUMNS,
                "(SELECT e.*, d.message_id, d.status AS delivery_status, d.next_attempt_at, d.lease_until
                  FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id) destinations",
                "id",
                Order::Ascending,
            )
        }
    }

    /// The messages fanned out to an endpoint, newest first, each with its
    /// delivery's `delivery_status`, `next_attempt_at` and `lease_until`.
    pub(crate) fn endpoint_messages(app: AppId, query: &crate::EndpointMessageQuery) -> Self {
        let (mut filter, mut binds) = message_filter(app, &query.messages);
        filter.push_str(" AND endpoint_id = ?");
        binds.push(Bind::Text(query.endpoint.to_string()));
        match query.status {
            None => {}
            // A pending delivery leased to a worker is being sent.
            Some(DeliveryStatus::Pending) => {
                filter.push_str(" AND delivery_status = 1 AND lease_until IS NULL")
            }
            Some(DeliveryStatus::Sending) => {
                filter.push_str(" AND delivery_status = 1 AND lease_until IS NOT NULL")
            }
            Some(status) => {
                filter.push_str(" AND delivery_status = ?");
                binds.push(Bind::Int(status.code()));
            }
        }
        Self::newest(
            ENDPOINT_MESSAGE_COLUMNS,
            "(SELECT m.*, d.endpoint_id, d.status AS delivery_status, d.next_attempt_at, d.lease_until
              FROM deliveries d JOIN messages m ON m.id = d.message_id) endpoint_messages",
            (filter, binds),
        )
    }

    /// Background tasks newest first, of one app or of all, of one status
    /// or of any.
    pub(crate) fn tasks(app: Option<AppId>, status: Option<crate::TaskStatus>) -> Self {
        let mut filter = vec![];
        let mut binds = vec![];
        if let Some(app) = app {
            filter.push("app_id = ?");
            binds.push(Bind::Text(app.to_string()));
        }
        if let Some(status) = status {
            filter.push("status = ?");
            binds.push(Bind::Text(status.as_str().to_owned()));
        }
        let filter = if filter.is_empty() {
            "1 = 1".to_owned()
        } else {
            filter.join(" AND ")
        };
        Self::newest(
            crate::shared::TASK_COLUMNS,
            "background_tasks",
            (filter, binds),
        )
    }

    /// Newest first, with the query's filters.
    pub(crate) fn messages(app: AppId, query: &MessageQuery) -> Self {
        let columns = crate::shared::MESSAGE_COLUMNS;
        Self::newest(columns, "messages", message_filter(app, query))
    }

    /// Newest first, with the query's filters.
    pub(crate) fn attempts(app: AppId, query: &AttemptQuery) -> Self {
        let columns = crate::shared::ATTEMPT_COLUMNS;
        Self::newest(columns, "attempts", attempt_filter(app, query))
    }

    /// Newest first by id, the rows matching `filter`.
    fn newest(
        columns: &'static str,
        table: &'static str,
        (filter, binds): (String, Vec<Bind>),
    ) -> Self {
        Self {
            filter,
            binds,
            ..Self::of(columns, table, "id", Order::Descending)
        }
    }
}

/// [`crate::shared::ENDPOINT_COLUMNS`] and the delivery's state.
const DESTINATION_COLUMNS: &str = concat!(
    crate::shared::endpoint_columns!(),
    ", delivery_status, next_attempt_at, lease_until"
);

/// [`crate::shared::MESSAGE_COLUMNS`] and the delivery's state.
const ENDPOINT_MESSAGE_COLUMNS: &str =
    "id, app_id, event_id, event_type, payload, channels, created_at, delivery_status, next_attempt_at, lease_until";

/// A value bound into a dynamically built query.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// Listing order of a paginated query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Ascending,
    Descending,
}

/// One page of `SELECT {columns} FROM {table} WHERE {filter}`, keyed by a
/// unique ordered column, written with `?` placeholders. One extra row is
/// fetched to know whether more follow; walking backwards (a `-` cursor)
/// flips the comparison and the order, and [`finish_page`] puts the rows
/// back into listing order.
#[derive(Debug)]
pub(crate) struct PageQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
    pub limit: usize,
}

pub(crate) fn page_query(listing: Listing, page: &PageRequest) -> PageQuery {
    let Listing {
        columns,
        table,
        filter,
        mut binds,
        key,
        order,
    } = listing;
    let limit = page.limit.clamp(1, 250);
    let backwards = matches!(page.cursor, Cursor::Before(_));
    let ascending = (order == Order::Ascending) != backwards;
    let mut sql = format!("SELECT {columns} FROM {table} WHERE {filter}");
    if let Cursor::After(at) | Cursor::Before(at) = &page.cursor {
        sql.push_str(&format!(
            " AND {key} {} ?",
            if ascending { ">" } else { "<" }
        ));
        binds.push(Bind::Text(at.clone()));
    }
    sql.push_str(&format!(
        " ORDER BY {key} {} LIMIT {}",
        if ascending { "ASC" } else { "DESC" },
        limit + 1
    ));
    PageQuery { sql, binds, limit }
}

/// The filter of a message listing, with `?` placeholders.
fn message_filter(app: AppId, query: &MessageQuery) -> (String, Vec<Bind>) {
    let mut filter = String::from("app_id = ?");
    let mut binds = vec![Bind::Text(app.to_string())];
    if !query.event_types.is_empty() {
        let marks = vec!["?"; query.event_types.len()].join(", ");
        filter.push_str(&format!(" AND event_type IN ({marks})"));
        binds.extend(query.event_types.iter().map(|t| Bind::Text(t.to_string())));
    }
    // Ids sort by creation time, so time bounds are id bounds.
    if let Some(before) = query.before {
        filter.push_str(" AND id < ?");
        binds.push(Bind::Text(MessageId::lowest_at(before).to_string()));
    }
    if let Some(after) = query.after {
        filter.push_str(" AND id >= ?");
        binds.push(Bind::Text(MessageId::lowest_at(after + 1).to_string()));
    }
    if let Some(channel) = &query.channel {
        // Channels are stored as a JSON array of strings; channel names
        // contain no quote, and LIKE's own wildcards are escaped.
        filter.push_str(" AND channels LIKE ? ESCAPE '\\'");
        binds.push(Bind::Text(format!("%\"{}\"%", escape_like(channel))));
    }
    (filter, binds)
}

pub(crate) fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The filter of an attempt listing, with `?` placeholders.
fn attempt_filter(app: AppId, query: &AttemptQuery) -> (String, Vec<Bind>) {
    // With an endpoint or a message, the app is checked on the rows their
    // index finds, never used to find them: `app_id || ''` is no column
    // an index covers. (SQLite, without statistics, walked the app's
    // index `(app_id, id)` backwards for a message's attempts, the whole
    // app's log for a message: 533 ms at 1,000,000 attempts.)
    let mut filter = String::from(match query.filter {
        AttemptFilter::App => "app_id = ?",
        _ => "app_id || '' = ?",
    });
    let mut binds = vec![Bind::Text(app.to_string())];
    match &query.filter {
        AttemptFilter::Endpoint(endpoint) => {
            filter.push_str(" AND endpoint_id = ?");
            binds.push(Bind::Text(endpoint.to_string()));
        }
        AttemptFilter::Message(message) => {
            filter.push_str(" AND message_id = ?");
            binds.push(Bind::Text(message.to_string()));
        }
        AttemptFilter::App => {}
    }
    if let Some(status) = query.status {
        filter.push_str(" AND status = ?");
        binds.push(Bind::Int(status.code()));
    }
    if let Some(class) = query.status_code_class {
        filter.push_str(" AND response_status_code >= ? AND response_status_code < ?");
        // Class 0 is "no HTTP answer" (connection errors, timeouts): code 0.
        let upper = if class == 0 {
            1
        } else {
            i64::from(class) + 100
        };
        binds.push(Bind::Int(i64::from(class)));
        binds.push(Bind::Int(upper));
    }
    // Ids sort by creation time, so time bounds are id bounds.
    if let Some(before) = query.before {
        filter.push_str(" AND id < ?");
        binds.push(Bind::Text(AttemptId::lowest_at(before).to_string()));
    }
    if let Some(after) = query.after {
        filter.push_str(" AND id >= ?");
        binds.push(Bind::Text(AttemptId::lowest_at(after).to_string()));
    }
    if !query.event_types.is_empty() {
        let marks = vec!["?"; query.event_types.len()].join(", ");
        filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.message_id AND m.event_type IN ({marks}))"
        ));
        binds.extend(query.event_types.iter().map(|t| Bind::Text(t.to_string())));
    }
    (filter, binds)
}

/// Turns up to `limit + 1` fetched rows into a page. Rows fetched walking
/// backwards (a `-` cursor) are put back into listing order.
/// The rows of a page as they arrive, until the page is full: `limit + 1`
/// rows (the query's own limit), or rows whose bytes reach `max_bytes`
/// (one row at least), so that a page of large rows is cut short instead
/// of being read whole into memory.
pub(crate) struct Filling<T> {
    data: Vec<T>,
    bytes: usize,
    max_bytes: usize,
    size_of: fn(&T) -> usize,
    cut_short: bool,
}

impl<T> Filling<T> {
    /// A page with no bound on its bytes.
    pub(crate) fn unbounded() -> Self {
        Self::within(usize::MAX, |_| 0)
    }

    /// A page ending after the row that brings its `size_of` to `max_bytes`.
    pub(crate) fn within(max_bytes: usize, size_of: fn(&T) -> usize) -> Self {
        Self {
            data: Vec::new(),
            bytes: 0,
            max_bytes,
            size_of,
            cut_short: false,
        }
    }

    /// [`Filling::within`] `max_bytes` when given, else unbounded.
    pub(crate) fn bounded(max_bytes: Option<usize>, size_of: fn(&T) -> usize) -> Self {
        match max_bytes {
            Some(bytes) => Self::within(bytes, size_of),
            None => Self::unbounded(),
        }
    }

    /// Adds a row; `false` once the page takes no more.
    pub(crate) fn push(&mut self, row: T) -> bool {
        self.bytes = self.bytes.saturating_add((self.size_of)(&row));
        self.data.push(row);
        self.cut_short = self.bytes >= self.max_bytes;
        !self.cut_short
    }

    /// The page: a page cut short by its bytes is not the last one.
    pub(crate) fn finish(
        self,
        limit: usize,
        cursor: &Cursor,
        key_of: impl Fn(&T) -> String,
    ) -> Page<T> {
        finish_page(self.data, limit, self.cut_short, cursor, key_of)
    }
}

fn finish_page<T>(
    mut data: Vec<T>,
    limit: usize,
    cut_short: bool,
    cursor: &Cursor,
    key_of: impl Fn(&T) -> String,
) -> Page<T> {
    let backwards = matches!(cursor, Cursor::Before(_));
    let more = data.len() > limit || cut_short;
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
