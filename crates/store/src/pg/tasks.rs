//! PostgreSQL SQL for background tasks: bulk recovery of an endpoint's
//! failed deliveries, one resumable step at a time. A step locks its task
//! row, so steps of one task run one after another even across processes.

use sqlx::{PgConnection, Row};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, TaskId};

use super::admin::get_endpoint;
use super::delivery::notify_workers;
use super::rows::db;
use crate::shared::{self, now, TaskRow, TASK_COLUMNS};
use crate::sql;
use crate::{BackgroundTask, Recovery, StoreResult, TaskStatus};

fn row(r: &sqlx::postgres::PgRow) -> sqlx::Result<TaskRow> {
    Ok(TaskRow {
        id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        status: r.try_get(2)?,
        params: r.try_get(3)?,
        done: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

pub(crate) async fn start_recovery(
    conn: &mut PgConnection,
    app: AppId,
    recovery: Recovery,
) -> StoreResult<BackgroundTask> {
    get_endpoint(conn, app, &IdOrUid::Id(recovery.endpoint_id)).await?;
    let task = shared::new_recovery(app, recovery);
    sqlx::query(sql::INSERT_TASK.pg)
        .bind(task.id.to_string())
        .bind(app.to_string())
        .bind(BackgroundTask::RECOVER)
        .bind(task.status.as_str())
        .bind(shared::encode_recovery(&task.recovery))
        .bind(task.created_at)
        .bind(task.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(task)
}

pub(crate) async fn get_task(conn: &mut PgConnection, task: TaskId) -> StoreResult<BackgroundTask> {
    let found = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM background_tasks WHERE id = $1"
    ))
    .bind(task.to_string())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    shared::task(row(&found).map_err(db)?)
}

pub(crate) async fn list_tasks(
    conn: &mut PgConnection,
    app: Option<AppId>,
    status: Option<TaskStatus>,
    page: crate::PageRequest,
) -> StoreResult<crate::Page<BackgroundTask>> {
    let rows = super::rows::list(
        conn,
        crate::listing::Listing::tasks(app, status),
        &page,
        row,
        |r| r.id.clone(),
    )
    .await?;
    shared::tasks_page(rows)
}

pub(crate) async fn running_tasks(conn: &mut PgConnection) -> StoreResult<Vec<TaskId>> {
    let ids: Vec<String> = sqlx::query_scalar(sql::TASKS_WITH_STATUS.pg)
        .bind(TaskStatus::Running.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    Ok(ids.iter().filter_map(|id| TaskId::parse(id).ok()).collect())
}

pub(crate) async fn recovery_step(
    conn: &mut PgConnection,
    task: TaskId,
    limit: usize,
) -> StoreResult<BackgroundTask> {
    let locked = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS}, cursor FROM background_tasks WHERE id = $1 FOR UPDATE"
    ))
    .bind(task.to_string())
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let mut current = shared::task(row(&locked).map_err(db)?)?;
    if current.status != TaskStatus::Running {
        return Ok(current);
    }
    let cursor: Option<String> = locked.try_get("cursor").map_err(db)?;
    let endpoint = get_endpoint(
        conn,
        current.app_id,
        &IdOrUid::Id(current.recovery.endpoint_id),
    )
    .await?;
    let (start, after, end) = shared::scan_bounds(&current.recovery, &endpoint, cursor);
    let rows = sqlx::query(sql::RECOVERY_SCAN.pg)
        .bind(current.app_id.to_string())
        .bind(start)
        .bind(after)
        .bind(end)
        .bind(limit as i64)
        .bind(endpoint.id.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let scanned = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect::<sqlx::Result<Vec<shared::ScannedMessage>>>()
        .map_err(db)?;
    let (requeue, create) = shared::recovery_plan(&endpoint, &scanned)?;
    let at = now();
    let id = endpoint.id.to_string();
    for message in &requeue {
        sqlx::query(sql::RECOVERY_REQUEUE.pg)
            .bind(message)
            .bind(&id)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    for message in &create {
        sqlx::query(sql::RECOVERY_CREATE.pg)
            .bind(message)
            .bind(&id)
            .bind(current.app_id.to_string())
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let queued = requeue.len() + create.len();
    current.done += queued as u64;
    if scanned.len() < limit {
        current.status = TaskStatus::Finished;
    }
    current.updated_at = at;
    sqlx::query(sql::UPDATE_TASK.pg)
        .bind(current.status.as_str())
        .bind(scanned.last().map(|m| m.0.clone()))
        .bind(current.done as i64)
        .bind(at)
        .bind(task.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if queued > 0 {
        notify_workers(conn).await?;
    }
    Ok(current)
}
