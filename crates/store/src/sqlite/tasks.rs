//! SQL for background tasks: bulk recovery of an endpoint's failed
//! deliveries, one resumable step at a time.

use rusqlite::{params, Connection, OptionalExtension};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, TaskId};

use super::admin::{get_endpoint, now};
use super::pool::internal;
use crate::shared::{self, TaskRow, TASK_COLUMNS};
use crate::{BackgroundTask, Recovery, StoreResult, TaskStatus};

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        app_id: r.get(1)?,
        status: r.get(2)?,
        params: r.get(3)?,
        done: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

pub(crate) fn start_recovery(
    conn: &Connection,
    app: AppId,
    recovery: Recovery,
) -> StoreResult<BackgroundTask> {
    get_endpoint(conn, app, &IdOrUid::Id(recovery.endpoint_id))?;
    let task = shared::new_recovery(app, recovery);
    conn.prepare_cached(
        "INSERT INTO background_tasks (id, app_id, kind, status, params, cursor, done, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, NULL, 0, ?, ?)",
    )
    .and_then(|mut s| {
        s.execute(params![
            task.id.to_string(),
            app.to_string(),
            BackgroundTask::RECOVER,
            task.status.as_str(),
            shared::encode_recovery(&task.recovery),
            task.created_at,
            task.updated_at
        ])
    })
    .map_err(internal)?;
    Ok(task)
}

pub(crate) fn get_task(conn: &Connection, task: TaskId) -> StoreResult<BackgroundTask> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {TASK_COLUMNS} FROM background_tasks WHERE id = ?"
        ))
        .and_then(|mut s| s.query_row([task.to_string()], row))
        .map_err(internal)?;
    shared::task(found)
}

pub(crate) fn running_tasks(conn: &Connection) -> StoreResult<Vec<TaskId>> {
    let ids = conn
        .prepare_cached("SELECT id FROM background_tasks WHERE status = ? ORDER BY id")
        .and_then(|mut s| {
            s.query_map([TaskStatus::Running.as_str()], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    Ok(ids.iter().filter_map(|id| TaskId::parse(id).ok()).collect())
}

/// Runs on the writer thread, so steps never overlap.
pub(crate) fn recovery_step(
    conn: &Connection,
    task: TaskId,
    limit: usize,
) -> StoreResult<BackgroundTask> {
    let mut current = get_task(conn, task)?;
    if current.status != TaskStatus::Running {
        return Ok(current);
    }
    let cursor: Option<String> = conn
        .prepare_cached("SELECT cursor FROM background_tasks WHERE id = ?")
        .and_then(|mut s| s.query_row([task.to_string()], |r| r.get(0)).optional())
        .map_err(internal)?
        .flatten();
    let range = shared::step_range(&current.recovery, cursor);
    let sql = format!(
        "SELECT message_id FROM deliveries
         WHERE endpoint_id = ?1 AND status = 2 AND message_id {} ?2{}
         ORDER BY message_id LIMIT ?4",
        if range.from_inclusive { ">=" } else { ">" },
        if range.to.is_some() {
            " AND message_id < ?3"
        } else {
            ""
        },
    );
    let endpoint = current.recovery.endpoint_id.to_string();
    let failed: Vec<String> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            // Without an end, ?3 is not in the statement but still counts.
            let binds: Vec<rusqlite::types::Value> = vec![
                endpoint.clone().into(),
                range.from.clone().into(),
                range
                    .to
                    .clone()
                    .map_or(rusqlite::types::Value::Null, Into::into),
                (limit as i64).into(),
            ];
            s.query_map(rusqlite::params_from_iter(binds), |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    let at = now();
    let mut requeue = conn
        .prepare_cached(
            "UPDATE deliveries SET status = 1, trigger_type = 1, next_attempt_at = ?1,
                 lease_until = NULL, updated_at = ?1
             WHERE message_id = ?2 AND endpoint_id = ?3 AND status = 2",
        )
        .map_err(internal)?;
    for message in &failed {
        requeue
            .execute(params![at, message, endpoint])
            .map_err(internal)?;
    }
    current.done += failed.len() as u64;
    if failed.len() < limit {
        current.status = TaskStatus::Finished;
    }
    current.updated_at = at;
    conn.prepare_cached(
        "UPDATE background_tasks SET status = ?, cursor = COALESCE(?, cursor), done = ?, updated_at = ?
         WHERE id = ?",
    )
    .and_then(|mut s| {
        s.execute(params![
            current.status.as_str(),
            failed.last(),
            current.done as i64,
            at,
            task.to_string()
        ])
    })
    .map_err(internal)?;
    Ok(current)
}
