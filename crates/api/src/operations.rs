//! The changes a caller makes to an app's endpoints, deliveries and alert
//! rules, whichever door they come through — the JSON API or the portal.
//! Each operation checks that the caller may make it (their own app, and
//! not a `readOnly` token), applies the limits, makes the change, records
//! it in the audit log, and starts the deliveries it creates. The doors
//! parse input and shape answers around these calls; they change nothing
//! themselves, so both leave the same audit entries and hit the same
//! limits.

use herald_domain::{AlertRules, AppId, EndpointId, MessageId, Secret};
use herald_store::{
    AuditEntry, BackgroundTask, CreatedMessage, Endpoint, EndpointInput, Headers, Message,
    MessageInput,
};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::middleware::now_ms;
use crate::AppState;

/// The audit actions operations record (the routes that declare them
/// leave the audit to them).
pub(crate) const ACTIONS: &[&str] = &[
    "endpoint.created",
    "endpoint.updated",
    "endpoint.headers_updated",
    "endpoint.deleted",
    "endpoint.secret_rotated",
    "endpoint.recovery_started",
    "endpoint.test_event_sent",
    "message.resent",
    "alert_rules.updated",
    "alert_rules.reset",
    "inspector.opened",
    "inspector.closed",
];

/// The operations of one caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operations<'a> {
    state: &'a AppState,
    caller: Principal,
}

impl<'a> Operations<'a> {
    pub(crate) fn new(state: &'a AppState, caller: Principal) -> Self {
        Self { state, caller }
    }

    /// 404 for another app's things, 403 for a `readOnly` token.
    fn may_change(&self, app: AppId) -> ApiResult<()> {
        self.caller.check(app)?;
        if self.caller.read_only() {
            return Err(ApiError::ReadOnly);
        }
        Ok(())
    }

    /// Records a change that was made. A failure to record it is logged:
    /// the change itself stands.
    async fn audit(&self, app: AppId, action: &'static str, target: String) {
        let entry = AuditEntry {
            id: herald_domain::AuditId::generate(),
            actor: self.caller.actor(),
            app_id: Some(app),
            action: action.to_owned(),
            target,
            detail: None,
            created_at: now_ms(),
        };
        if let Err(error) = self.state.store.record_audit(entry).await {
            tracing::error!(%error, action, "recording an audit entry failed");
        }
    }

    /// A new endpoint, within the app's endpoint limit.
    pub(crate) async fn create_endpoint(
        &self,
        app: AppId,
        input: EndpointInput,
        headers: Headers,
        secret: Secret,
    ) -> ApiResult<Endpoint> {
        self.may_change(app)?;
        // Checked before the write: concurrent creations may pass it
        // together, so the limit can be exceeded by a few, never by many.
        let max = self.state.config.max_endpoints_per_app;
        let existing = self
            .state
            .store
            .list_endpoints(
                app,
                herald_store::PageRequest {
                    limit: max,
                    cursor: Default::default(),
                },
            )
            .await?;
        if existing.data.len() >= max {
            return Err(ApiError::invalid(
                "endpoints",
                format!("this app already has the most endpoints allowed ({max})"),
            ));
        }
        let created = self
            .state
            .store
            .create_endpoint(app, input, headers, secret)
            .await?;
        self.audit(app, "endpoint.created", created.id.to_string())
            .await;
        Ok(created)
    }

    /// New settings for `endpoint` (its URL, if changed, was checked
    /// against the network policy when parsed).
    pub(crate) async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        input: EndpointInput,
    ) -> ApiResult<Endpoint> {
        self.may_change(endpoint.app_id)?;
        let updated = self
            .state
            .store
            .update_endpoint(endpoint.app_id, endpoint.id, input)
            .await?;
        self.audit(endpoint.app_id, "endpoint.updated", endpoint.id.to_string())
            .await;
        if !updated.disabled && endpoint.disabled {
            // Enabled again: what waited for it is due now.
            self.nudge();
        }
        Ok(updated)
    }

    /// Replaces `endpoint`'s custom headers.
    pub(crate) async fn set_endpoint_headers(
        &self,
        endpoint: &Endpoint,
        headers: Headers,
    ) -> ApiResult<()> {
        self.may_change(endpoint.app_id)?;
        self.state
            .store
            .set_endpoint_headers(endpoint.app_id, endpoint.id, headers)
            .await?;
        self.audit(
            endpoint.app_id,
            "endpoint.headers_updated",
            endpoint.id.to_string(),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn delete_endpoint(&self, endpoint: &Endpoint) -> ApiResult<()> {
        self.may_change(endpoint.app_id)?;
        self.state
            .store
            .delete_endpoint(endpoint.app_id, endpoint.id)
            .await?;
        self.audit(endpoint.app_id, "endpoint.deleted", endpoint.id.to_string())
            .await;
        Ok(())
    }

    /// Rotates `endpoint`'s secret to `key`, or to a new key of the kind it
    /// has; the old one keeps signing for the grace period.
    pub(crate) async fn rotate_secret(
        &self,
        endpoint: &Endpoint,
        key: Option<Secret>,
    ) -> ApiResult<()> {
        self.may_change(endpoint.app_id)?;
        let secret = match key {
            Some(key) => key,
            None => self
                .state
                .store
                .endpoint_secret(endpoint.app_id, endpoint.id)
                .await?
                .generate_like(),
        };
        let grace = self.state.config.rotation_grace;
        self.state
            .store
            .rotate_endpoint_secret(
                endpoint.app_id,
                endpoint.id,
                secret,
                now_ms() + grace.as_millis() as i64,
            )
            .await?;
        self.audit(
            endpoint.app_id,
            "endpoint.secret_rotated",
            endpoint.id.to_string(),
        )
        .await;
        Ok(())
    }

    /// Re-sends `endpoint`'s failed deliveries of `[since, until)` as a
    /// background task run by this process.
    pub(crate) async fn start_recovery(
        &self,
        endpoint: &Endpoint,
        since: i64,
        until: Option<i64>,
    ) -> ApiResult<BackgroundTask> {
        self.may_change(endpoint.app_id)?;
        let task =
            crate::recovery::start(self.state, endpoint.app_id, endpoint.id, since, until).await?;
        self.audit(
            endpoint.app_id,
            "endpoint.recovery_started",
            endpoint.id.to_string(),
        )
        .await;
        Ok(task)
    }

    /// Sends example `index` of `event_type` to `endpoint` alone, as one
    /// manual attempt.
    pub(crate) async fn send_test_event(
        &self,
        endpoint: &Endpoint,
        event_type: &str,
        index: usize,
    ) -> ApiResult<Message> {
        self.may_change(endpoint.app_id)?;
        let input = crate::test_events::message_of(self.state, endpoint, event_type, index).await?;
        let created = self.create_message(endpoint.app_id, input).await?;
        self.audit(
            endpoint.app_id,
            "endpoint.test_event_sent",
            endpoint.id.to_string(),
        )
        .await;
        Ok(created.message.as_ref().clone())
    }

    /// One manual attempt of (`message`, `endpoint`).
    pub(crate) async fn resend(
        &self,
        app: AppId,
        message: MessageId,
        endpoint: EndpointId,
    ) -> ApiResult<()> {
        self.may_change(app)?;
        crate::attempts::resend_one(self.state, app, message, endpoint).await?;
        self.audit(app, "message.resent", endpoint.to_string())
            .await;
        Ok(())
    }

    /// The app's alert rules; `None` goes back to the server's defaults.
    pub(crate) async fn set_alert_rules(
        &self,
        app: AppId,
        rules: Option<AlertRules>,
    ) -> ApiResult<()> {
        self.may_change(app)?;
        let action = if rules.is_some() {
            "alert_rules.updated"
        } else {
            "alert_rules.reset"
        };
        self.state.store.set_alert_rules(app, rules).await?;
        self.audit(app, action, app.to_string()).await;
        Ok(())
    }

    /// Opens the app's test inspector (or finds the one it has: `false`).
    pub(crate) async fn open_inspector(
        &self,
        app: AppId,
    ) -> ApiResult<(herald_store::Inspector, bool)> {
        self.may_change(app)?;
        let opened = crate::inspector::open_for(self.state, app).await?;
        self.audit(app, "inspector.opened", app.to_string()).await;
        Ok(opened)
    }

    /// Deletes the app's test inspector and what it received.
    pub(crate) async fn close_inspector(&self, app: AppId) -> ApiResult<()> {
        self.may_change(app)?;
        self.state.store.close_inspector(app).await?;
        self.audit(app, "inspector.closed", app.to_string()).await;
        Ok(())
    }

    /// Stores a new message and starts its deliveries: the ones leased to
    /// this process are sent at once, and the claim loop is woken for the
    /// rest (strictly ordered endpoints), so nothing waits for a poll.
    pub(crate) async fn create_message(
        &self,
        app: AppId,
        input: MessageInput,
    ) -> ApiResult<CreatedMessage> {
        self.may_change(app)?;
        let dispatcher = self.state.dispatcher.as_ref();
        let claim = dispatcher.and_then(|d| d.claim_for_new_work());
        let mut created = self.state.store.create_message(app, input, claim).await?;
        if let Some(dispatcher) = dispatcher {
            dispatcher.start_created(std::mem::take(&mut created.jobs), created.deliveries);
        }
        Ok(created)
    }

    fn nudge(&self) {
        if let Some(dispatcher) = &self.state.dispatcher {
            dispatcher.nudge();
        }
    }
}
