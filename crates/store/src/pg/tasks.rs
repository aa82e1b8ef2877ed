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
    sqlx::query(
        "INSERT INTO background_tasks (id, app_id, kind, status, params, cursor, done, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, NULL, 0, $6, $7)",
    )
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

pub(crate) async fn running_tasks(conn: &mut PgConnection) -> StoreResult<Vec<TaskId>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM background_tasks WHERE status = $1 ORDER BY id")
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
    let range = shared::step_range(&current.recovery, cursor);
    let at = now();
    let sql = format!(
        "UPDATE deliveries SET status = 1, trigger_type = 1, next_attempt_at = $4,
             lease_until = NULL, updated_at = $4
         WHERE endpoint_id = $1 AND status = 2 AND message_id IN (
             SELECT message_id FROM deliveries
             WHERE endpoint_id = $1 AND status = 2 AND message_id {} $2
               AND ($3::text IS NULL OR message_id < $3)
             ORDER BY message_id LIMIT $5)
         RETURNING message_id",
        if range.from_inclusive { ">=" } else { ">" },
    );
    let requeued: Vec<String> = sqlx::query_scalar(&sql)
        .bind(current.recovery.endpoint_id.to_string())
        .bind(&range.from)
        .bind(&range.to)
        .bind(at)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    current.done += requeued.len() as u64;
    if requeued.len() < limit {
        current.status = TaskStatus::Finished;
    }
    current.updated_at = at;
    sqlx::query(
        "UPDATE background_tasks SET status = $1, cursor = COALESCE($2, cursor), done = $3, updated_at = $4
         WHERE id = $5",
    )
    .bind(current.status.as_str())
    .bind(requeued.iter().max())
    .bind(current.done as i64)
    .bind(at)
    .bind(task.to_string())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if !requeued.is_empty() {
        notify_workers(conn).await?;
    }
    Ok(current)
}
