//! The dispatcher's health flush: once a second, the attempt outcomes
//! counted in memory are added to the store's aggregates, auto-disable is
//! applied, and the operational events they call for are raised.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use std::time::Duration;

use herald_store::{HealthUpdate, StoreError};

use herald_domain::AppId;

use super::{now_ms, Dispatcher};

/// How many times one flush is written before its counts are given up.
const HEALTH_TRIES: u64 = 3;

impl Dispatcher {
    pub(super) async fn flush_health_until(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.health_flush) => {}
            }
            self.flush_health().await;
        }
    }

    /// Adds the health counts gathered since the last flush to the store.
    pub async fn flush_health(self: &Arc<Self>) {
        let mut updates: Vec<HealthUpdate> = {
            let mut pending = self.health.lock().expect("health counts");
            pending.drain().map(|(_, update)| update).collect()
        };
        if updates.is_empty() {
            return;
        }
        // Every process takes the rows of its endpoints in the same order,
        // so that two flushes of overlapping endpoints queue behind each
        // other instead of deadlocking.
        updates.sort_unstable_by_key(|update| update.endpoint_id);
        let mut tries = 0;
        let runs = loop {
            tries += 1;
            match self
                .store
                .record_health(updates.clone(), self.config.auto_disable)
                .await
            {
                Ok(runs) => break runs,
                // A conflict lost to another writer (a deadlock or a
                // serialization failure) or a short outage: the same counts
                // are written again, a few times, a little later each time.
                Err(StoreError::Unavailable(error)) if tries < HEALTH_TRIES => {
                    tracing::debug!(%error, tries, "recording endpoint health: trying again");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                // The attempt log still has every attempt; only the aggregates
                // miss this second's counts.
                Err(error) => {
                    tracing::warn!(%error, "recording endpoint health failed");
                    self.config.metrics.health_flush_failed();
                    return;
                }
            }
        };
        for run in runs.iter().filter(|run| run.disabled) {
            self.config.metrics.endpoint_auto_disabled();
            tracing::warn!(endpoint = %run.endpoint_id, "disabled an endpoint whose every attempt has failed");
        }
        let Some(config) = self.config.alerts else {
            return;
        };
        // Only endpoints where something went wrong (or a success-rate drop
        // is open) can raise anything; their apps' rules are read once.
        let watched: Vec<&HealthUpdate> = {
            let drops = self.rate_drops.lock().expect("rate drops");
            updates
                .iter()
                .filter(|update| update.app_id != Some(config.operations_app))
                .filter(|update| {
                    !update.failed_types.is_empty()
                        || update.gone
                        || drops.contains(&update.endpoint_id)
                        || runs.iter().any(|run| {
                            run.endpoint_id == update.endpoint_id && run.ended_run.is_some()
                        })
                })
                .collect()
        };
        if watched.is_empty() {
            return;
        }
        let mut apps: Vec<AppId> = watched.iter().filter_map(|u| u.app_id).collect();
        apps.sort_unstable();
        apps.dedup();
        let rules: crate::alerts::AppRules = match self.store.alert_rules(apps).await {
            Ok(rules) => rules.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "reading alert rules failed; using the defaults");
                Default::default()
            }
        };
        let mut raised = crate::alerts::alerts(&config, &rules, &updates, &runs);
        for update in watched {
            let Some(rule) = update
                .app_id
                .and_then(|app| crate::alerts::rate_rule(&config, &rules, app))
            else {
                continue;
            };
            // Checked when there were failures, or while a drop is open
            // here (so that recovering clears it).
            let open = self
                .rate_drops
                .lock()
                .expect("rate drops")
                .contains(&update.endpoint_id);
            if update.failed_types.is_empty() && !open {
                continue;
            }
            match self
                .store
                .check_success_rate(update.endpoint_id, rule, now_ms())
                .await
            {
                Ok(Some(drop)) => {
                    self.rate_drops
                        .lock()
                        .expect("rate drops")
                        .insert(update.endpoint_id);
                    raised.extend(crate::alerts::rate_alert(update, &rules, &drop, rule));
                }
                Ok(None) => {
                    self.rate_drops
                        .lock()
                        .expect("rate drops")
                        .remove(&update.endpoint_id);
                }
                Err(error) => tracing::warn!(%error, "checking a success rate failed"),
            }
        }
        for alert in raised {
            match crate::alerts::raise(
                self.store.as_ref(),
                &config,
                &alert,
                self.claim_for_new_work(),
            )
            .await
            {
                Ok(Some(created)) => {
                    self.start_created(created.jobs, created.for_claims);
                    // Only the process that raised the episode e-mails it.
                    if let Some(mailer) = &self.mailer {
                        let mailer = mailer.clone();
                        self.tasks.spawn(async move { mailer.send(&alert).await });
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "raising an operational event failed"),
            }
        }
    }
}
