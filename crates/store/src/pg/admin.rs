//! PostgreSQL SQL for applications, event types, endpoints, secrets, headers.

use sqlx::{PgConnection, Row};

use herald_domain::event_type::FilterPattern;
use herald_domain::ids::IdOrUid;
use herald_domain::sealing::Sealing;
use herald_domain::{AlertRules, AppId, EndpointId, EventTypeName, FilterTypes, Secret};

use super::rows::{self, db, list};
use crate::listing::Listing;
use crate::shared::now;
use crate::sql;
use crate::{
    App, AppInput, AppRef, Endpoint, EndpointInput, EndpointRef, EndpointStats, EventType,
    EventTypeInput, Headers, Page, PageRequest, StoreError, StoreResult, Timestamp,
};

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn found(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

pub(crate) async fn create_app(conn: &mut PgConnection, input: AppInput) -> StoreResult<App> {
    let id = AppId::generate();
    let at = now();
    sqlx::query(sql::INSERT_APP.pg)
        .bind(id.to_string())
        .bind(input.uid.as_ref().map(|u| u.to_string()))
        .bind(&input.name)
        .bind(input.rate_limit.map(i64::from))
        .bind(to_json(&input.metadata))
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    get_app(conn, &IdOrUid::Id(id)).await
}

pub(crate) async fn get_app(conn: &mut PgConnection, app: &AppRef) -> StoreResult<App> {
    let (column, value) = match app {
        IdOrUid::Id(id) => ("id", id.to_string()),
        IdOrUid::Uid(uid) => ("uid", uid.to_string()),
    };
    let row = sqlx::query(&format!(
        "SELECT {} FROM apps WHERE {column} = $1",
        rows::APP_COLUMNS
    ))
    .bind(value)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    rows::app(&row).map_err(db)
}

pub(crate) async fn list_apps(
    conn: &mut PgConnection,
    page: PageRequest,
) -> StoreResult<Page<App>> {
    list(conn, Listing::apps(), &page, rows::app, |a| {
        a.id.to_string()
    })
    .await
}

pub(crate) async fn update_app(
    conn: &mut PgConnection,
    app: AppId,
    input: AppInput,
) -> StoreResult<App> {
    let changed = sqlx::query(sql::UPDATE_APP.pg)
        .bind(input.uid.as_ref().map(|u| u.to_string()))
        .bind(&input.name)
        .bind(input.rate_limit.map(i64::from))
        .bind(to_json(&input.metadata))
        .bind(now())
        .bind(app.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    found(changed.rows_affected())?;
    get_app(conn, &IdOrUid::Id(app)).await
}

pub(crate) async fn set_alert_rules(
    conn: &mut PgConnection,
    app: AppId,
    rules: Option<AlertRules>,
) -> StoreResult<()> {
    let changed = sqlx::query(sql::SET_ALERT_RULES.pg)
        .bind(crate::shared::encode_alert_rules(rules.as_ref()))
        .bind(now())
        .bind(app.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    found(changed.rows_affected())
}

/// The rules of those of `apps` that have their own.
pub(crate) async fn alert_rules(
    conn: &mut PgConnection,
    apps: Vec<AppId>,
) -> StoreResult<Vec<(AppId, AlertRules)>> {
    let ids: Vec<String> = apps.iter().map(ToString::to_string).collect();
    let rows = sqlx::query(
        "SELECT id, alert_rules FROM apps WHERE id = ANY($1) AND alert_rules IS NOT NULL",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get(0).map_err(db)?;
            let text: String = row.try_get(1).map_err(db)?;
            let app = AppId::parse(&id)
                .map_err(|e| StoreError::Internal(format!("stored app id: {e}")))?;
            Ok((app, crate::shared::decode_alert_rules(&text)?))
        })
        .collect()
}

pub(crate) async fn delete_app(conn: &mut PgConnection, app: AppId) -> StoreResult<()> {
    let id = app.to_string();
    for sql in [
        sql::DELETE_APP_ATTEMPTS.pg,
        sql::DELETE_APP_DELIVERIES.pg,
        sql::DELETE_APP_MESSAGES.pg,
        sql::DELETE_APP_SECRETS.pg,
        sql::DELETE_APP_ENDPOINTS.pg,
        sql::DELETE_APP_TOKENS.pg,
    ] {
        sqlx::query(sql)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let removed = sqlx::query(sql::DELETE_APP.pg)
        .bind(&id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    found(removed.rows_affected())
}

pub(crate) async fn seed_event_types(
    conn: &mut PgConnection,
    entries: Vec<EventTypeInput>,
) -> StoreResult<usize> {
    let mut added = 0;
    for entry in &entries {
        added += insert_event_type(conn, entry, true).await?;
    }
    Ok(added as usize)
}

pub(crate) async fn create_event_type(
    conn: &mut PgConnection,
    input: EventTypeInput,
) -> StoreResult<EventType> {
    insert_event_type(conn, &input, false).await?;
    get_event_type(conn, &input.name).await
}

async fn insert_event_type(
    conn: &mut PgConnection,
    input: &EventTypeInput,
    or_ignore: bool,
) -> StoreResult<u64> {
    let at = now();
    let conflict = if or_ignore {
        "ON CONFLICT (name) DO NOTHING"
    } else {
        ""
    };
    let done = sqlx::query(&format!(
        "INSERT INTO event_types (name, description, schemas, archived, deprecated, feature_flag, group_name, created_at, updated_at, enforce_schema)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) {conflict}"
    ))
    .bind(input.name.as_str())
    .bind(&input.description)
    .bind(input.schemas.as_ref().map(to_json))
    .bind(input.archived)
    .bind(input.deprecated)
    .bind(&input.feature_flag)
    .bind(input.group_name.clone().or_else(|| input.name.group().map(str::to_owned)))
    .bind(at)
    .bind(input.enforce_schema)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

pub(crate) async fn get_event_type(
    conn: &mut PgConnection,
    name: &EventTypeName,
) -> StoreResult<EventType> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM event_types WHERE name = $1",
        rows::EVENT_TYPE_COLUMNS
    ))
    .bind(name.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    rows::event_type(&row).map_err(db)
}

pub(crate) async fn list_event_types(
    conn: &mut PgConnection,
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
    .await
}

pub(crate) async fn update_event_type(
    conn: &mut PgConnection,
    input: EventTypeInput,
) -> StoreResult<EventType> {
    let changed = sqlx::query(sql::UPDATE_EVENT_TYPE.pg)
        .bind(&input.description)
        .bind(input.schemas.as_ref().map(to_json))
        .bind(input.archived)
        .bind(input.deprecated)
        .bind(&input.feature_flag)
        .bind(
            input
                .group_name
                .clone()
                .or_else(|| input.name.group().map(str::to_owned)),
        )
        .bind(now())
        .bind(input.name.as_str())
        .bind(input.enforce_schema)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if changed.rows_affected() == 0 {
        insert_event_type(conn, &input, false).await?;
    }
    get_event_type(conn, &input.name).await
}

pub(crate) async fn delete_event_type(
    conn: &mut PgConnection,
    name: &EventTypeName,
    expunge: bool,
) -> StoreResult<()> {
    let sql = if expunge {
        sql::DELETE_EVENT_TYPE.pg
    } else {
        sql::ARCHIVE_EVENT_TYPE.pg
    };
    let done = sqlx::query(sql)
        .bind(name.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    found(done.rows_affected())
}

async fn check_filter_types(conn: &mut PgConnection, filter: &FilterTypes) -> StoreResult<()> {
    for pattern in filter.patterns() {
        let known = match pattern {
            FilterPattern::Exact(name) => {
                sqlx::query("SELECT 1 FROM event_types WHERE name = $1 AND NOT archived")
                    .bind(name.as_str())
                    .fetch_optional(&mut *conn)
                    .await
            }
            FilterPattern::Group(group) => sqlx::query(
                "SELECT 1 FROM event_types WHERE starts_with(name, $1) AND NOT archived LIMIT 1",
            )
            .bind(format!("{group}."))
            .fetch_optional(&mut *conn)
            .await,
        }
        .map_err(db)?;
        if known.is_none() {
            return Err(StoreError::Invalid {
                field: "filterTypes",
                detail: format!("unknown event type `{pattern}`"),
            });
        }
    }
    Ok(())
}

pub(crate) async fn create_endpoint(
    conn: &mut PgConnection,
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
    get_app(conn, &IdOrUid::Id(app)).await?;
    check_filter_types(conn, &input.filter_types).await?;
    let id = EndpointId::generate();
    let at = now();
    sqlx::query(sql::INSERT_ENDPOINT.pg)
        .bind(id.to_string())
        .bind(app.to_string())
        .bind(input.uid.as_ref().map(|u| u.to_string()))
        .bind(input.url.as_str())
        .bind(&input.description)
        .bind(input.disabled)
        .bind(input.filter_types.to_strings().map(|f| to_json(&f)))
        .bind(input.channels.as_ref().map(to_json))
        .bind(input.rate_limit.map(i64::from))
        .bind(i64::from(input.version))
        .bind(to_json(&input.metadata))
        .bind(to_json(&headers))
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query(sql::INSERT_SECRET.pg)
        .bind(id.to_string())
        .bind(&secret)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    endpoint_written(conn, id, input_policy, input_strict, input_options, false).await?;
    get_endpoint(conn, app, &IdOrUid::Id(id)).await
}

pub(crate) async fn get_endpoint(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: &EndpointRef,
) -> StoreResult<Endpoint> {
    let (column, value) = match endpoint {
        IdOrUid::Id(id) => ("id", id.to_string()),
        IdOrUid::Uid(uid) => ("uid", uid.to_string()),
    };
    let row = sqlx::query(&format!(
        "SELECT {} FROM endpoints WHERE app_id = $1 AND {column} = $2",
        rows::ENDPOINT_COLUMNS
    ))
    .bind(app.to_string())
    .bind(value)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    rows::endpoint(&row).map_err(db)
}

pub(crate) async fn list_endpoints(
    conn: &mut PgConnection,
    app: AppId,
    page: PageRequest,
) -> StoreResult<Page<Endpoint>> {
    get_app(conn, &IdOrUid::Id(app)).await?;
    list(conn, Listing::endpoints(app), &page, rows::endpoint, |e| {
        e.id.to_string()
    })
    .await
}

pub(crate) async fn update_endpoint(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    input: EndpointInput,
) -> StoreResult<Endpoint> {
    let input_policy = crate::shared::encode_policy(input.retry_policy.as_ref());
    let input_strict = input.strict_ordering;
    let input_options = input.options.encode();
    let re_enabled = !input.disabled && is_disabled(conn, endpoint).await?;
    check_filter_types(conn, &input.filter_types).await?;
    let changed = sqlx::query(sql::UPDATE_ENDPOINT.pg)
        .bind(input.uid.as_ref().map(|u| u.to_string()))
        .bind(input.url.as_str())
        .bind(&input.description)
        .bind(input.disabled)
        .bind(input.filter_types.to_strings().map(|f| to_json(&f)))
        .bind(input.channels.as_ref().map(to_json))
        .bind(input.rate_limit.map(i64::from))
        .bind(i64::from(input.version))
        .bind(to_json(&input.metadata))
        .bind(now())
        .bind(app.to_string())
        .bind(endpoint.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    found(changed.rows_affected())?;
    endpoint_written(
        conn,
        endpoint,
        input_policy,
        input_strict,
        input_options,
        re_enabled,
    )
    .await?;
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await
}

pub(crate) async fn delete_endpoint(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
) -> StoreResult<()> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let id = endpoint.to_string();
    for sql in [
        sql::DELETE_ENDPOINT_ATTEMPTS.pg,
        sql::DELETE_ENDPOINT_DELIVERIES.pg,
        sql::DELETE_ENDPOINT_SECRETS.pg,
        sql::DELETE_ENDPOINT.pg,
    ] {
        sqlx::query(sql)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// The secrets that sign now: the current one first, then those in grace.
pub(crate) async fn signing_secrets(
    conn: &mut PgConnection,
    endpoint: &str,
    at: Timestamp,
    sealing: &Sealing,
) -> StoreResult<Vec<Secret>> {
    let found = sqlx::query(sql::SIGNING_SECRETS.pg)
        .bind(endpoint)
        .bind(at)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    found
        .iter()
        .map(|row| {
            let text: String = row.try_get(0).map_err(db)?;
            crate::shared::read_secret(sealing, &text)
        })
        .collect()
}

pub(crate) async fn endpoint_secret(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    sealing: &Sealing,
) -> StoreResult<Secret> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    signing_secrets(conn, &endpoint.to_string(), now(), sealing)
        .await?
        .into_iter()
        .next()
        .ok_or(StoreError::NotFound)
}

pub(crate) async fn rotate_endpoint_secret(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    secret: Secret,
    previous_valid_until: Timestamp,
    sealing: &Sealing,
) -> StoreResult<()> {
    let secret = sealing.store(&secret);
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let id = endpoint.to_string();
    let at = now();
    sqlx::query(sql::DROP_EXPIRED_SECRETS.pg)
        .bind(&id)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query(sql::EXPIRE_CURRENT_SECRET.pg)
        .bind(previous_valid_until)
        .bind(&id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query(sql::TRIM_PREVIOUS_SECRETS.pg)
        .bind(&id)
        .bind(crate::shared::MAX_PREVIOUS_SECRETS)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query(sql::INSERT_SECRET.pg)
        .bind(&id)
        .bind(&secret)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

pub(crate) async fn set_endpoint_headers(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    headers: Headers,
) -> StoreResult<()> {
    let changed = sqlx::query(sql::SET_ENDPOINT_HEADERS.pg)
        .bind(to_json(&headers))
        .bind(now())
        .bind(app.to_string())
        .bind(endpoint.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    found(changed.rows_affected())
}

pub(crate) async fn attempt_stats(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
    since: Timestamp,
    until: Timestamp,
) -> StoreResult<crate::AttemptStats> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let rows = sqlx::query(crate::sql::ATTEMPT_STATS.pg)
        .bind(endpoint.to_string())
        .bind(herald_domain::AttemptId::lowest_at(since).to_string())
        .bind(herald_domain::AttemptId::lowest_at(until).to_string())
        .bind(app.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut counts = Vec::new();
    for row in rows {
        let status: i64 = row.try_get(0).map_err(db)?;
        let count: i64 = row.try_get(1).map_err(db)?;
        counts.push((status, count.max(0) as u64));
    }
    Ok(crate::shared::attempt_stats(counts))
}

pub(crate) async fn endpoint_stats(
    conn: &mut PgConnection,
    app: AppId,
    endpoint: EndpointId,
) -> StoreResult<EndpointStats> {
    get_endpoint(conn, app, &IdOrUid::Id(endpoint)).await?;
    let found = sqlx::query(
        "SELECT status, lease_until IS NOT NULL AS leased, COUNT(*) AS n FROM deliveries
         WHERE endpoint_id = $1 GROUP BY status, lease_until IS NOT NULL",
    )
    .bind(endpoint.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut stats = EndpointStats::default();
    for row in found {
        let status: i64 = row.try_get("status").map_err(db)?;
        let leased: bool = row.try_get("leased").map_err(db)?;
        let count = row.try_get::<i64, _>("n").map_err(db)? as u64;
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
async fn endpoint_written(
    conn: &mut PgConnection,
    endpoint: EndpointId,
    policy: Option<String>,
    strict_ordering: bool,
    options: Option<String>,
    re_enabled: bool,
) -> StoreResult<()> {
    sqlx::query(sql::ENDPOINT_WRITTEN.pg)
        .bind(endpoint.to_string())
        .bind(policy)
        .bind(crate::shared::now())
        .bind(strict_ordering)
        .bind(options)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if re_enabled {
        sqlx::query(sql::RESET_RUN.pg)
            .bind(endpoint.to_string())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

async fn is_disabled(conn: &mut PgConnection, endpoint: EndpointId) -> StoreResult<bool> {
    let found: Option<bool> = sqlx::query_scalar(sql::ENDPOINT_DISABLED.pg)
        .bind(endpoint.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    Ok(found.unwrap_or(false))
}
