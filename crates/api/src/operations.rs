//! The changes a caller makes — apps, event types, endpoints, deliveries,
//! alert rules, tokens, the inspector — whichever door they come through:
//! the JSON API or the portal. Each operation checks that the caller may
//! make it (their own app, and not a `readOnly` token), applies the
//! limits, makes the change with its audit entry in the same store
//! transaction, and starts the deliveries it creates. The doors parse
//! input and shape answers around these calls; they change nothing
//! themselves, so both leave the same audit entries and hit the same
//! limits.

use herald_domain::{AlertRules, AppId, EndpointId, EventTypeName, MessageId, Secret, TokenId};
use herald_store::{
    App, AppInput, AuditEntry, BackgroundTask, CreatedMessage, Endpoint, EndpointInput, EventType,
    EventTypeInput, Headers, Message, MessageInput, Token, TokenKind,
};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::middleware::now_ms;
use crate::AppState;

/// The audit actions operations record: every action a route declares.
pub(crate) const ACTIONS: &[&str] = &[
    "app.created",
    "app.updated",
    "app.deleted",
    "event_type.created",
    "event_type.updated",
    "event_type.deleted",
    "token.created",
    "token.revoked",
    "portal_access.created",
    "endpoint.created",
    "endpoint.updated",
    "endpoint.headers_updated",
    "endpoint.deleted",
    "endpoint.secret_rotated",
    "endpoint.recovery_started",
    "endpoint.test_event_sent",
    "message.resent",
    "message.content_removed",
    "attempt.content_removed",
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

    /// 403 unless the caller is the operator.
    fn may_administer(&self) -> ApiResult<()> {
        if self.caller == Principal::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// The audit entry of a change, for the store to write with it; an
    /// empty `target` is the id of what the change makes.
    fn entry(
        &self,
        app: Option<AppId>,
        action: &'static str,
        target: String,
    ) -> Option<AuditEntry> {
        debug_assert!(
            ACTIONS.contains(&action),
            "undeclared audit action {action}"
        );
        Some(AuditEntry {
            id: herald_domain::AuditId::generate(),
            actor: self.caller.actor(),
            app_id: app,
            action: action.to_owned(),
            target,
            detail: None,
            created_at: now_ms(),
        })
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
        let audit = self.entry(Some(app), "endpoint.created", String::new());
        let created = self
            .state
            .store
            .create_endpoint(app, input, headers, secret, audit)
            .await?;
        self.state.filters.forget(app);
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
        let audit = self.entry(
            Some(endpoint.app_id),
            "endpoint.updated",
            endpoint.id.to_string(),
        );
        let updated = self
            .state
            .store
            .update_endpoint(endpoint.app_id, endpoint.id, input, audit)
            .await?;
        self.state.filters.forget(endpoint.app_id);
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
        let audit = self.entry(
            Some(endpoint.app_id),
            "endpoint.headers_updated",
            endpoint.id.to_string(),
        );
        self.state
            .store
            .set_endpoint_headers(endpoint.app_id, endpoint.id, headers, audit)
            .await?;
        Ok(())
    }

    pub(crate) async fn delete_endpoint(&self, endpoint: &Endpoint) -> ApiResult<()> {
        self.may_change(endpoint.app_id)?;
        let audit = self.entry(
            Some(endpoint.app_id),
            "endpoint.deleted",
            endpoint.id.to_string(),
        );
        self.state
            .store
            .delete_endpoint(endpoint.app_id, endpoint.id, audit)
            .await?;
        self.state.filters.forget(endpoint.app_id);
        Ok(())
    }

    /// Rotates `endpoint`'s secret to `key`, or to a new key of the kind it
    /// has; the old one keeps signing for the grace period.
    /// Rotates `endpoint`'s secret to `key` (else a new one of its kind);
    /// the old one keeps signing for `grace` (else the server's default).
    /// Returns the new secret.
    pub(crate) async fn rotate_secret(
        &self,
        endpoint: &Endpoint,
        key: Option<Secret>,
        grace: Option<std::time::Duration>,
    ) -> ApiResult<Secret> {
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
        let grace = grace.unwrap_or(self.state.config.rotation_grace);
        let audit = self.entry(
            Some(endpoint.app_id),
            "endpoint.secret_rotated",
            endpoint.id.to_string(),
        );
        self.state
            .store
            .rotate_endpoint_secret(
                endpoint.app_id,
                endpoint.id,
                secret.clone(),
                now_ms() + grace.as_millis() as i64,
                audit,
            )
            .await?;
        Ok(secret)
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
        let audit = self.entry(
            Some(endpoint.app_id),
            "endpoint.recovery_started",
            endpoint.id.to_string(),
        );
        crate::recovery::start(
            self.state,
            endpoint.app_id,
            endpoint.id,
            since,
            until,
            audit,
        )
        .await
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
        let audit = self.entry(
            Some(endpoint.app_id),
            "endpoint.test_event_sent",
            endpoint.id.to_string(),
        );
        let created = self.start_message(endpoint.app_id, input, audit).await?;
        Ok(created.message.as_ref().clone())
    }

    /// Erases `message`'s content for good.
    pub(crate) async fn remove_content(&self, app: AppId, message: MessageId) -> ApiResult<()> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "message.content_removed", message.to_string());
        self.state.store.remove_content(app, message, audit).await?;
        Ok(())
    }

    /// Erases one attempt's stored response body.
    pub(crate) async fn expunge_attempt_content(
        &self,
        app: AppId,
        message: MessageId,
        attempt: herald_domain::AttemptId,
    ) -> ApiResult<()> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "attempt.content_removed", attempt.to_string());
        self.state
            .store
            .expunge_attempt_content(app, message, attempt, audit)
            .await?;
        Ok(())
    }

    /// One manual attempt of (`message`, `endpoint`).
    pub(crate) async fn resend(
        &self,
        app: AppId,
        message: MessageId,
        endpoint: EndpointId,
    ) -> ApiResult<()> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "message.resent", endpoint.to_string());
        crate::attempts::resend_one(self.state, app, message, endpoint, audit).await
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
        let audit = self.entry(Some(app), action, app.to_string());
        self.state.store.set_alert_rules(app, rules, audit).await?;
        Ok(())
    }

    /// Opens the app's test inspector (or finds the one it has: `false`).
    pub(crate) async fn open_inspector(
        &self,
        app: AppId,
    ) -> ApiResult<(herald_store::Inspector, bool)> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "inspector.opened", app.to_string());
        crate::inspector::open_for(self.state, app, audit).await
    }

    /// Deletes the app's test inspector and what it received.
    pub(crate) async fn close_inspector(&self, app: AppId) -> ApiResult<()> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "inspector.closed", app.to_string());
        self.state.store.close_inspector(app, audit).await?;
        Ok(())
    }

    /// A new app (the operator's).
    pub(crate) async fn create_app(&self, input: AppInput) -> ApiResult<App> {
        self.may_administer()?;
        let audit = self.entry(None, "app.created", String::new());
        Ok(self.state.store.create_app(input, audit).await?)
    }

    pub(crate) async fn update_app(&self, app: AppId, input: AppInput) -> ApiResult<App> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "app.updated", app.to_string());
        Ok(self.state.store.update_app(app, input, audit).await?)
    }

    /// Deletes an app with everything it has.
    pub(crate) async fn delete_app(&self, app: AppId) -> ApiResult<()> {
        self.may_change(app)?;
        let audit = self.entry(Some(app), "app.deleted", app.to_string());
        Ok(self.state.store.delete_app(app, audit).await?)
    }

    /// A new event type in the catalog (the operator's).
    pub(crate) async fn create_event_type(&self, input: EventTypeInput) -> ApiResult<EventType> {
        self.may_administer()?;
        let audit = self.entry(None, "event_type.created", input.name.to_string());
        let name = input.name.clone();
        let created = self.state.store.create_event_type(input, audit).await?;
        self.state.schemas.forget(&name);
        Ok(created)
    }

    pub(crate) async fn update_event_type(&self, input: EventTypeInput) -> ApiResult<EventType> {
        self.may_administer()?;
        let audit = self.entry(None, "event_type.updated", input.name.to_string());
        let name = input.name.clone();
        let updated = self.state.store.update_event_type(input, audit).await?;
        self.state.schemas.forget(&name);
        Ok(updated)
    }

    /// Archives an event type, or removes it for good with `expunge`.
    pub(crate) async fn delete_event_type(
        &self,
        name: &EventTypeName,
        expunge: bool,
    ) -> ApiResult<()> {
        self.may_administer()?;
        let audit = self.entry(None, "event_type.deleted", name.to_string());
        Ok(self
            .state
            .store
            .delete_event_type(name, expunge, audit)
            .await
            .inspect(|()| self.state.schemas.forget(name))?)
    }

    /// A token for `app`: an API token (`token.created`, the operator's)
    /// or a portal session (`portal_access.created`, the operator's or
    /// the app's own).
    pub(crate) async fn issue_token(
        &self,
        app: AppId,
        kind: TokenKind,
        name: String,
        expires_at: Option<i64>,
    ) -> ApiResult<(herald_domain::token::ApiToken, Token)> {
        let audit = match kind {
            TokenKind::Api => {
                self.may_administer()?;
                self.entry(Some(app), "token.created", String::new())
            }
            TokenKind::Portal | TokenKind::PortalReadOnly => {
                self.may_change(app)?;
                self.entry(Some(app), "portal_access.created", app.to_string())
            }
        };
        crate::tokens::issue(self.state, app, kind, name, expires_at, audit).await
    }

    /// Revokes one of `app`'s tokens (the operator's).
    pub(crate) async fn revoke_token(&self, app: AppId, token: TokenId) -> ApiResult<Token> {
        self.may_administer()?;
        let audit = self.entry(Some(app), "token.revoked", token.to_string());
        Ok(self
            .state
            .store
            .revoke_token(app, token, now_ms(), audit)
            .await?)
    }

    /// Revokes the caller's own token (an app-scoped one).
    pub(crate) async fn log_out(&self) -> ApiResult<()> {
        let Principal::App { app, token, .. } = self.caller else {
            return Err(ApiError::BadRequest {
                code: "not_an_app_token",
                detail: "only an app-scoped token can log out; the admin token is configuration"
                    .to_owned(),
            });
        };
        let audit = self.entry(Some(app), "token.revoked", token.to_string());
        self.state
            .store
            .revoke_token(app, token, now_ms(), audit)
            .await?;
        Ok(())
    }

    /// Revokes every portal-session token of `app` still valid; its API
    /// tokens stay.
    pub(crate) async fn end_portal_sessions(&self, app: AppId) -> ApiResult<()> {
        self.may_administer()?;
        let now = now_ms();
        let store = &self.state.store;
        let tokens = crate::extract::every(|page| store.list_tokens(app, page)).await?;
        for token in tokens {
            let portal = matches!(
                token.kind,
                herald_store::TokenKind::Portal | herald_store::TokenKind::PortalReadOnly
            );
            if portal && token.is_valid_at(now) {
                let audit = self.entry(Some(app), "token.revoked", token.id.to_string());
                store.revoke_token(app, token.id, now, audit).await?;
            }
        }
        Ok(())
    }

    /// Stores a new message and starts its deliveries: the ones leased to
    /// this process are sent at once, and the claim loop is woken for the
    /// rest (strictly ordered endpoints), so nothing waits for a poll.
    pub(crate) async fn create_message(
        &self,
        app: AppId,
        mut input: MessageInput,
    ) -> ApiResult<CreatedMessage> {
        self.may_change(app)?;
        // Whoever sends it (API, CLI, an SDK): its type's schema, when enforced.
        self.state
            .schemas
            .check(self.state.store.as_ref(), &input.event_type, &input.payload)
            .await?;
        // The app's filters run here, not in the writer all apps share.
        self.state
            .filters
            .decide(self.state.store.as_ref(), app, &mut input)
            .await?;
        self.start_message(app, input, None).await
    }

    /// Stores a message (with `audit`, for a test event) and starts it.
    async fn start_message(
        &self,
        app: AppId,
        input: MessageInput,
        audit: Option<AuditEntry>,
    ) -> ApiResult<CreatedMessage> {
        let dispatcher = self.state.dispatcher.as_ref();
        let claim = dispatcher.and_then(|d| d.claim_for_new_work());
        let mut created = self
            .state
            .store
            .create_message(app, input, claim, audit)
            .await?;
        if let Some(dispatcher) = dispatcher {
            dispatcher.start_created(std::mem::take(&mut created.jobs), created.for_claims);
        }
        Ok(created)
    }

    fn nudge(&self) {
        if let Some(dispatcher) = &self.state.dispatcher {
            dispatcher.nudge();
        }
    }
}
