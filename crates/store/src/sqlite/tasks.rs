//! SQL for background tasks: bulk recovery of an endpoint's failed
//! deliveries, one resumable step at a time.

use rusqlite::{params, Connection, OptionalExtension};

use herald_domain::ids::IdOrUid;
use herald_domain::{AppId, TaskId};

use super::admin::{get_endpoint, now};
use super::pool::internal;
use crate::shared::{self, TaskRow, TASK_COLUMNS};
use crate::sql;
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
    conn.prepare_cached(sql::INSERT_TASK.sqlite)
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

pub(crate) fn list_tasks(
    conn: &Connection,
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
    )?;
    shared::tasks_page(rows)
}

pub(crate) fn running_tasks(conn: &Connection) -> StoreResult<Vec<TaskId>> {
    let ids = conn
        .prepare_cached(sql::TASKS_WITH_STATUS.sqlite)
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
    let endpoint = get_endpoint(
        conn,
        current.app_id,
        &IdOrUid::Id(current.recovery.endpoint_id),
    )?;
    let (start, after, end) = shared::scan_bounds(&current.recovery, &endpoint, cursor);
    let scanned: Vec<shared::ScannedMessage> = conn
        .prepare_cached(sql::RECOVERY_SCAN.sqlite)
        .and_then(|mut s| {
            s.query_map(
                params![
                    current.app_id.to_string(),
                    start,
                    after,
                    end,
                    limit as i64,
                    endpoint.id.to_string()
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(internal)?;
    let (requeue, create) = shared::recovery_plan(&endpoint, &scanned)?;
    let at = now();
    let id = endpoint.id.to_string();
    let mut again = conn
        .prepare_cached(sql::RECOVERY_REQUEUE.sqlite)
        .map_err(internal)?;
    for message in &requeue {
        again.execute(params![message, id, at]).map_err(internal)?;
    }
    let mut new = conn
        .prepare_cached(sql::RECOVERY_CREATE.sqlite)
        .map_err(internal)?;
    for message in &create {
        new.execute(params![message, id, current.app_id.to_string(), at])
            .map_err(internal)?;
    }
    current.done += (requeue.len() + create.len()) as u64;
    if scanned.len() < limit {
        current.status = TaskStatus::Finished;
    }
    current.updated_at = at;
    conn.prepare_cached(sql::UPDATE_TASK.sqlite)
        .and_then(|mut s| {
            s.execute(params![
                current.status.as_str(),
                scanned.last().map(|m| &m.0),
                current.done as i64,
                at,
                task.to_string()
            ])
        })
        .map_err(internal)?;
    Ok(current)
}
