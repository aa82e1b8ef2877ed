//! Background tasks: a bulk recovery runs as a loop of short store steps
//! (each one transaction re-queueing a batch of failed deliveries), so it
//! never holds the database for long and resumes after a restart from the
//! cursor its last step saved.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::TaskId;
use herald_store::{Store, StoreError, TaskStatus};

/// Deliveries re-queued per step.
pub const RECOVERY_STEP: usize = 500;

/// Runs `task` to its end. `progress` is called after every step that
/// queued work (to wake a local dispatcher). Store errors are retried after
/// a pause; a task that no longer exists ends the loop.
pub async fn run_recovery(store: Arc<dyn Store>, task: TaskId, progress: impl Fn()) {
    loop {
        match store.recovery_step(task, RECOVERY_STEP).await {
            Ok(state) => {
                progress();
                if state.status != TaskStatus::Running {
                    tracing::info!(task = %task, recovered = state.done, "recovery finished");
                    return;
                }
            }
            Err(StoreError::NotFound) => return,
            Err(error) => {
                tracing::warn!(task = %task, %error, "recovery step failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
