//! SQL for the configuration side: applications, event types, endpoints and
//! their secrets and headers.

use rusqlite::{params, Connection, OptionalExtension};

use herald_domain::event_type::FilterPattern;
use herald_domain::ids::IdOrUid;
use herald_domain::sealing::Sealing;
use herald_domain::{AlertRules, AppId, EndpointId, EventTypeName, FilterTypes, Secret};

use super::pool::internal;
use super::rows::{self, list, optional_to_json, to_json};
use crate::listing::Listing;
use crate::shared;
use crate::sql;
use crate::{
    App, AppInput, AppRef, Endpoint, EndpointInput, EndpointRef, EndpointStats, EventType,
    EventTypeInput, Headers, Page, PageRequest, StoreError, StoreResult, Timestamp,
};

/// An UPDATE or DELETE that touched no row means the thing does not exist.
fn found(rows: usize) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

pub(crate) use crate::shared::now;

pub(crate) fn create_app(conn: &Connection, input: AppInput) -> StoreResult<App> {
    let id = AppId::generate();
    let at = now();
    conn.prepare_cached(sql::INSERT_APP.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                id.to_string(),
                input.uid.as_ref().map(|u| u.as_str()),
                input.name,
                input.rate_limit,
                to_json(&input.metadata).unwrap_or_default(),
                at
            ])
        })
        .map_err(internal)?;
    get_app(conn, &IdOrUid::Id(id))
}

pub(crate) fn get_app(conn: &Connection, app: &AppRef) -> StoreResult<App> {
    let (column, value) = match app {
        IdOrUid::Id(id) => ("id", id.to_string()),
        IdOrUid::Uid(uid) => ("uid", uid.to_string()),
    };
    conn.prepare_cached(&format!(
        "SELECT {} FROM apps WHERE {column} = ?",
        rows::APP_COLUMNS
    ))
    .and_then(|mut s| s.query_row([value], rows::app))
    .map_err(internal)
}

pub(crate) fn list_apps(conn: &Connection, page: PageRequest) -> StoreResult<Page<App>> {
    list(conn, Listing::apps(), &page, rows::app, |app| {
        app.id.to_string()
    })
}

pub(crate) fn update_app(conn: &Connection, app: AppId, input: AppInput) -> StoreResult<App> {
    let changed = conn
        .prepare_cached(sql::UPDATE_APP.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                input.uid.as_ref().map(|u| u.as_str()),
                input.name,
                input.rate_limit,
                to_json(&input.metadata).unwrap_or_default(),
                now(),
                app.to_string()
            ])
        })
        .map_err(internal)?;
    found(changed)?;
    get_app(conn, &IdOrUid::Id(app))
}

pub(crate) fn set_alert_rules(
    conn: &Connection,
    app: AppId,
    rules: Option<AlertRules>,
) -> StoreResult<()> {
    let changed = conn
        .prepare_cached(sql::SET_ALERT_RULES.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                shared::encode_alert_rules(rules.as_ref()),
                now(),
                app.to_string()
            ])
        })
        .map_err(internal)?;
    found(changed)
}

/// The rules of those of `apps` that have their own.
pub(crate) fn alert_rules(
    conn: &Connection,
    apps: Vec<AppId>,
) -> StoreResult<Vec<(AppId, AlertRules)>> {
    let mut statement = conn
        .prepare_cached("SELECT alert_rules FROM apps WHERE id = ? AND alert_rules IS NOT NULL")
        .map_err(internal)?;
    let mut found = Vec::new();
    for app in apps {
        let text: Option<String> = statement
            .query_row([app.to_string()], |row| row.get(0))
            .optional()
            .map_err(internal)?;
        if let Some(text) = text {
            found.push((app, shared::decode_alert_rules(&text)?));
        }
    }
    Ok(found)
}

pub(crate) fn delete_app(conn: &Connection, app: AppId) -> StoreResult<()> {
    let id = app.to_string();
    // Children first: attempts and deliveries hang off messages and endpoints.
    for sql in [
        sql::DELETE_APP_ATTEMPTS.sqlite,
        sql::DELETE_APP_DELIVERIES.sqlite,
        sql::DELETE_APP_MESSAGES.sqlite,
        sql::DELETE_APP_SECRETS.sqlite,
        sql::DELETE_APP_ENDPOINTS.sqlite,
        sql::DELETE_APP_TOKENS.sqlite,
    ] {
        conn.execute(sql, [&id]).map_err(internal)?;
    }
    let removed = conn
        .execute(sql::DELETE_APP.sqlite, [&id])
        .map_err(internal)?;
    found(removed)?;
    Ok(())
}

pub(crate) fn seed_event_types(
    conn: &Connection,
    entries: Vec<EventTypeInput>,
) -> StoreResult<usize> {
    entries
        .iter()
        .map(|entry| insert_event_type(conn, entry, true))
        .sum()
}

pub(crate) fn create_event_type(
    conn: &Connection,
    input: EventTypeInput,
) -> StoreResult<EventType> {
    insert_event_type(conn, &input, false)?;
    get_event_type(conn, &input.name)
}

fn insert_event_type(
    conn: &Connection,
    input: &EventTypeInput,
    or_ignore: bool,
) -> StoreResult<usize> {
    let at = now();
    let verb = if or_ignore {
        "INSERT OR IGNORE"
    } else {
        "INSERT"
    };
    conn.prepare_cached(&format!(
        "{verb} INTO event_types (name, description, schemas, archived, deprecated, feature_flag, group_name, created_at, updated_at, enforce_schema)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            input.name.as_str(),
            input.description,
            optional_to_json(&input.schemas).unwrap_or_default(),
            input.archived,
            input.deprecated,
            input.feature_flag,
            input.group_name.clone().or_else(|| input.name.group().map(str::to_owned)),
            at,
            at,
            input.enforce_schema
        ])
    })
    .map_err(internal)
}

pub(crate) fn get_event_type(conn: &Connection, name: &EventTypeName) -> StoreResult<EventType> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM event_types WHERE name = ?",
        rows::EVENT_TYPE_COLUMNS
    ))
    .and_then(|mut s| s.query_row([name.as_str()], rows::event_type))
    .map_err(internal)
}

pub(crate) fn list_event_types(
    conn: &Connection,
    page: PageRequest,
    include_archived: bool,
) -> StoreResult<Page<EventType>> {
    list(
        conn,
        Listing::event_types(include_archived),
        &page,
        rows::event_type,
        |t| t.name.to_string(),
    )
}

pub(crate) fn update_event_type(
    conn: &Connection,
    input: EventTypeInput,
) -> StoreResult<EventType> {
    let changed = conn
        .execute(
            sql::UPDATE_EVENT_TYPE.sqlite,
            params![
                input.description,
                optional_to_json(&input.schemas)?,
                input.archived,
                input.deprecated,
                input.feature_flag,
                input
                    .group_name
                    .clone()
                    .or_else(|| input.name.group().map(str::to_owned)),
                now(),
                input.name.as_str(),
                input.enforce_schema
            ],
        )
        .map_err(internal)?;
    if changed == 0 {
        // PUT creates what does not exist, as in Svix.
        insert_event_type(conn, &input, false)?;
    }
    get_event_type(conn, &input.name)
}

pub(crate) fn delete_event_type(
    conn: &Connection,
    name: &EventTypeName,
    expunge: bool,
) -> StoreResult<()> {
    let sql = if expunge {
        sql::DELETE_EVENT_TYPE.sqlite
    } else {
        sql::ARCHIVE_EVENT_TYPE.sqlite
    };
    found(conn.execute(sql, [name.as_str()]).map_err(internal)?)
}

/// Every exact name must be a known, unarchived type; every group wildcard
/// must match at least one.
fn check_filter_types(conn: &Connection, filter: &FilterTypes) -> StoreResult<()> {
    for pattern in filter.patterns() {
        let known: Option<i64> = match pattern {
            FilterPattern::Exact(name) => conn
                .prepare_cached("SELECT 1 FROM event_types WHERE name = ? AND archived = 0")
                .and_then(|mut s| s.query_row([name.as_str()], |r| r.get(0)).optional()),
            FilterPattern::Group(group) => conn
                .prepare_cached(
                    "SELECT 1 FROM event_types WHERE substr(name, 1, ?) = ? AND archived = 0 LIMIT 1",
                )
                .and_then(|mut s| {
                    let prefix = format!("{group}.");
                    s.query_row(params![prefix.len() as i64, prefix], |r| r.get(0))
                        .optional()
                }),
        }
        .map_err(internal)?;
        if known.is_none() {
            return Err(StoreError::Invalid {
                field: "filterTypes",
                detail: format!("unknown event type `{pattern}`"),
            });
        }
    }
    Ok(())
}

fn require_app(conn: &Connection, app: AppId) -> StoreResult<()> {
    get_app(conn, &IdOrUid::Id(app)).map(|_| ())
}

pub(crate) fn create_endpoint(
    conn: &Connection,
    app: AppId,
    input: EndpointInput,
    headers: Headers,
    secret: Secret,
    sealing: &Sealing,
) -> StoreResult<Endpoint> {
    let secret = sealing.store(&secret);
    let input_policy = crate::shared::encode_policy(input.retry_policy.as_ref());
    let input_strict = input.strict_ordering;
    let input_options = input.options.encode();
    require_app(conn, app)?;
    check_filter_types(conn, &input.filter_types)?;
    let id = EndpointId::generate();
    let at = now();
    conn.execute(
        sql::INSERT_ENDPOINT.sqlite,
        params![
            id.to_string(),
            app.to_string(),
            input.uid.as_ref().map(|u| u.as_str()),
            input.url.as_str(),
            input.description,
            input.disabled,
            optional_to_json(&input.filter_types.to_strings())?,
            optional_to_json(&input.channels)?,
            input.rate_limit,
            input.version,
            to_json(&input.metadata)?,
            to_json(&headers)?,
            at
        ],
    )
    .map_err(internal)?;
    conn.execute(
        sql::INSERT_SECRET.sqlite,
        params![id.to_string(), secret, at],
    )
    .map_err(internal)?;
    endpoint_written(conn, id, input_policy, input_strict, input_options, false)?;
    get_endpoint(conn, app, &IdOrUid::Id(id))
}

pub(crate) fn get_endpoint(
    conn: &Connection,
    app: AppId,
    endpoint: &EndpointRef,
) -> StoreResult<Endpoint> {
    let (column, value) = match endpoint {
        IdOrUid::Id(id) => ("id", id.to_string()),
        IdOrUid::Uid(uid) => ("uid", uid.to_string()),
    };
    conn.prepare_cached(&format!(
        "SELECT {} FROM endpoints WHERE app_id = ? AND {column} = ?",
        rows::ENDPOINT_COLUMNS
    ))
    .and_then(|mut s| s.query_row([app.to_string(), value], rows::endpoint))
    .map_err(internal)
}

pub(crate) fn list_endpoints(
    conn: &Connection,
    app: AppId,
    page: PageRequest,
) -> StoreResult<Page<Endpoint>> {
    require_app(conn, app)?;
    list(conn, Listing::endpoints(app), &page, rows::endpoint, |e| {
        e.id.to_string()
    })
}

pub(crate) fn update_endpoint(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    input: EndpointInput,
) -> StoreResult<Endpoint> {
    let input_policy = crate::shared::encode_policy(input.retry_policy.as_ref());
    let input_strict = input.strict_ordering;
    let input_options = input.options.encode();
    check_filter_types(conn, &input.filter_types)?;
    let re_enabled = !input.disabled && is_disabled(conn, endpoint)?;
    let changed = conn
        .execute(
            sql::UPDATE_ENDPOINT.sqlite,
            params![
                input.uid.as_ref().map(|u| u.as_str()),
                input.url.as_str(),
                input.description,
                input.disabled,
                optional_to_json(&input.filter_types.to_strings())?,
                optional_to_json(&input.channels)?,
                input.rate_limit,
                input.version,
                to_json(&input.metadata)?,
                now(),
                app.to_string(),
                endpoint.to_string()
            ],
        )
        .map_err(internal)?;
    found(changed)?;
    endpoint_written(
        conn,
        endpoint,
        input_policy,
        input_strict,
        input_options,
        re_enabled,
    )?;
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))
}

pub(crate) fn delete_endpoint(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
) -> StoreResult<()> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    let id = endpoint.to_string();
    for sql in [
        sql::DELETE_ENDPOINT_ATTEMPTS.sqlite,
        sql::DELETE_ENDPOINT_DELIVERIES.sqlite,
        sql::DELETE_ENDPOINT_SECRETS.sqlite,
        sql::DELETE_ENDPOINT.sqlite,
    ] {
        conn.execute(sql, [&id]).map_err(internal)?;
    }
    Ok(())
}

/// The secrets that sign now: the current one first, then those in grace.
pub(crate) fn signing_secrets(
    conn: &Connection,
    endpoint: &str,
    at: Timestamp,
    sealing: &Sealing,
) -> StoreResult<Vec<Secret>> {
    let mut statement = conn
        .prepare_cached(sql::SIGNING_SECRETS.sqlite)
        .map_err(internal)?;
    let texts = statement
        .query_map(params![endpoint, at], |r| r.get::<_, String>(0))
        .map_err(internal)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(internal)?;
    texts
        .iter()
        .map(|t| shared::read_secret(sealing, t))
        .collect()
}

pub(crate) fn endpoint_secret(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    sealing: &Sealing,
) -> StoreResult<Secret> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    signing_secrets(conn, &endpoint.to_string(), now(), sealing)?
        .into_iter()
        .next()
        .ok_or(StoreError::NotFound)
}

pub(crate) fn rotate_endpoint_secret(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    secret: Secret,
    previous_valid_until: Timestamp,
    sealing: &Sealing,
) -> StoreResult<()> {
    let secret = sealing.store(&secret);
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    let id = endpoint.to_string();
    let at = now();
    // Expired secrets are dropped so that rotation keeps the table small.
    conn.execute(sql::DROP_EXPIRED_SECRETS.sqlite, params![id, at])
        .map_err(internal)?;
    conn.execute(
        sql::EXPIRE_CURRENT_SECRET.sqlite,
        params![previous_valid_until, id],
    )
    .map_err(internal)?;
    conn.execute(
        sql::TRIM_PREVIOUS_SECRETS.sqlite,
        params![id, shared::MAX_PREVIOUS_SECRETS],
    )
    .map_err(internal)?;
    conn.execute(sql::INSERT_SECRET.sqlite, params![id, secret, at])
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn set_endpoint_headers(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    headers: Headers,
) -> StoreResult<()> {
    let changed = conn
        .execute(
            sql::SET_ENDPOINT_HEADERS.sqlite,
            params![
                to_json(&headers)?,
                now(),
                app.to_string(),
                endpoint.to_string()
            ],
        )
        .map_err(internal)?;
    found(changed)?;
    Ok(())
}

pub(crate) fn attempt_stats(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
    since: Timestamp,
    until: Timestamp,
) -> StoreResult<crate::AttemptStats> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    let mut statement = conn
        .prepare_cached(crate::sql::ATTEMPT_STATS.sqlite)
        .map_err(internal)?;
    let rows = statement
        .query_map(
            params![
                endpoint.to_string(),
                herald_domain::AttemptId::lowest_at(since).to_string(),
                herald_domain::AttemptId::lowest_at(until).to_string(),
                app.to_string()
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u64>(1)?)),
        )
        .map_err(internal)?;
    let mut counts = Vec::new();
    for row in rows {
        counts.push(row.map_err(internal)?);
    }
    Ok(crate::shared::attempt_stats(counts))
}

pub(crate) fn endpoint_stats(
    conn: &Connection,
    app: AppId,
    endpoint: EndpointId,
) -> StoreResult<EndpointStats> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint))?;
    let mut statement = conn
        .prepare_cached(
            "SELECT status, lease_until IS NOT NULL, COUNT(*) FROM deliveries
             WHERE endpoint_id = ? GROUP BY status, lease_until IS NOT NULL",
        )
        .map_err(internal)?;
    let mut stats = EndpointStats::default();
    let rows = statement
        .query_map([endpoint.to_string()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })
        .map_err(internal)?;
    for row in rows {
        let (status, leased, count) = row.map_err(internal)?;
        match (status, leased) {
            (0, _) => stats.success += count,
            (1, true) => stats.sending += count,
            (1, false) => stats.pending += count,
            _ => stats.fail += count,
        }
    }
    Ok(stats)
}

/// Bookkeeping after an endpoint is written: its retry policy, why it is
/// disabled, and a fresh run of failures once it is enabled again.
fn endpoint_written(
    conn: &Connection,
    endpoint: EndpointId,
    policy: Option<String>,
    strict_ordering: bool,
    options: Option<String>,
    re_enabled: bool,
) -> StoreResult<()> {
    conn.prepare_cached(sql::ENDPOINT_WRITTEN.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                endpoint.to_string(),
                policy,
                now(),
                strict_ordering,
                options
            ])
        })
        .map_err(internal)?;
    if re_enabled {
        conn.prepare_cached(sql::RESET_RUN.sqlite)
            .and_then(|mut s| s.execute([endpoint.to_string()]))
            .map_err(internal)?;
    }
    Ok(())
}

fn is_disabled(conn: &Connection, endpoint: EndpointId) -> StoreResult<bool> {
    conn.prepare_cached(sql::ENDPOINT_DISABLED.sqlite)
        .and_then(|mut s| s.query_row([endpoint.to_string()], |r| r.get(0)).optional())
        .map(|found| found.unwrap_or(false))
        .map_err(internal)
}
