//! The SQL both backends run, written once in PostgreSQL's dialect with
//! `$n` placeholders; the SQLite copy (`?n`, which SQLite numbers the same
//! way) is made at compile time. Statements only one backend can run
//! (`ANY($1)`, `UNNEST`, `FOR UPDATE SKIP LOCKED`, `NOTIFY`) stay with it.

/// One statement, as each backend runs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sql {
    pub pg: &'static str,
    pub sqlite: &'static str,
}

/// `pg` with each `$` that starts a placeholder turned into `?`.
pub(crate) const fn sqlite_placeholders<const N: usize>(pg: &str) -> [u8; N] {
    let bytes = pg.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        let next_is_digit = i + 1 < N && bytes[i + 1].is_ascii_digit();
        out[i] = if bytes[i] == b'$' && next_is_digit {
            b'?'
        } else {
            bytes[i]
        };
        i += 1;
    }
    out
}

/// Declares each statement as a [`Sql`] constant.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $text:expr;)*) => {
        $(
            $(#[$doc])*
            pub(crate) const $name: Sql = {
                const PG: &str = $text;
                const SQLITE: [u8; PG.len()] = sqlite_placeholders(PG);
                Sql {
                    pg: PG,
                    sqlite: match std::str::from_utf8(&SQLITE) {
                        Ok(text) => text,
                        Err(_) => panic!("a statement is not UTF-8"),
                    },
                }
            };
        )*
    };
}

statements! {
    // An endpoint's attempts by outcome ($1 endpoint, $2 lowest id, $3 id
    // past the window, $4 app): the endpoint's index walks the window; the
    // app is checked on the rows it finds.
    ATTEMPT_STATS = "SELECT status, COUNT(*) FROM attempts
         WHERE endpoint_id = $1 AND id >= $2 AND id < $3 AND app_id || '' = $4 GROUP BY status";
    // Removing an attempt's stored response ($1 app, $2 message, $3 attempt).
    EXPUNGE_ATTEMPT_RESPONSE = "UPDATE attempts SET response = '' WHERE app_id = $1 AND message_id = $2 AND id = $3";
    // Removing a message's content ($1 app, $2 message, $3 now).
    REMOVE_CONTENT = "UPDATE messages SET payload = '{}', content_removed_at = $3 WHERE app_id = $1 AND id = $2";
    PENDING_DESTINATIONS = "SELECT d.endpoint_id, e.url FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.message_id = $1 AND d.status = 1 ORDER BY d.endpoint_id";
    /// An attempt that was never made ($1 id, $2 app, $3 message, $4
    /// endpoint, $5 url, $6 why, $7 error class, $8 now): failed, no answer.
    UNSENT_ATTEMPT = "INSERT INTO attempts (id, app_id, message_id, endpoint_id, url, status, response_status_code,
             response, response_duration_ms, error_class, trigger_type, created_at)
         VALUES ($1, $2, $3, $4, $5, 2, 0, $6, 0, $7, 0, $8)";
    FAIL_PENDING_DELIVERIES = "UPDATE deliveries SET status = 2, lease_until = NULL, next_attempt_at = NULL, updated_at = $2
         WHERE message_id = $1 AND status = 1";
    /// Stored idempotent answers matching the `LIKE` pattern $1.
    /// An endpoint's ($2 of app $1) unsettled deliveries, soonest due first, at most $3.
    PENDING_OF_ENDPOINT = "SELECT d.message_id, m.event_type, d.attempts, d.next_attempt_at, d.lease_until
         FROM deliveries d JOIN messages m ON m.id = d.message_id
         WHERE d.app_id = $1 AND d.endpoint_id = $2 AND d.status = 1
         ORDER BY d.next_attempt_at, d.message_id LIMIT $3";
    CONTENT_REMOVED_AT = "SELECT content_removed_at FROM messages WHERE id = $1";
    INSERT_APP = "INSERT INTO apps (id, uid, name, rate_limit, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)";
    UPDATE_APP = "UPDATE apps SET uid = $1, name = $2, rate_limit = $3, metadata = $4, updated_at = $5 WHERE id = $6";
    SET_ALERT_RULES = "UPDATE apps SET alert_rules = $1, updated_at = $2 WHERE id = $3";
    DELETE_APP_ATTEMPTS = "DELETE FROM attempts WHERE app_id = $1";
    DELETE_APP_DELIVERIES = "DELETE FROM deliveries WHERE app_id = $1";
    DELETE_APP_MESSAGES = "DELETE FROM messages WHERE app_id = $1";
    DELETE_APP_SECRETS = "DELETE FROM endpoint_secrets WHERE endpoint_id IN (SELECT id FROM endpoints WHERE app_id = $1)";
    DELETE_APP_ENDPOINTS = "DELETE FROM endpoints WHERE app_id = $1";
    DELETE_APP_TOKENS = "DELETE FROM tokens WHERE app_id = $1";
    DELETE_APP = "DELETE FROM apps WHERE id = $1";
    UPDATE_EVENT_TYPE = "UPDATE event_types SET description = $1, schemas = $2, archived = $3, deprecated = $4,
             feature_flag = $5, group_name = $6, updated_at = $7, enforce_schema = $9
         WHERE name = $8";
    DELETE_EVENT_TYPE = "DELETE FROM event_types WHERE name = $1";
    ARCHIVE_EVENT_TYPE = "UPDATE event_types SET archived = TRUE WHERE name = $1";
    INSERT_ENDPOINT = "INSERT INTO endpoints (id, app_id, uid, url, description, disabled, filter_types, channels,
             rate_limit, version, metadata, headers, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)";
    INSERT_SECRET = "INSERT INTO endpoint_secrets (endpoint_id, secret, created_at, expires_at) VALUES ($1, $2, $3, NULL)";
    UPDATE_ENDPOINT = "UPDATE endpoints SET uid = $1, url = $2, description = $3, disabled = $4, filter_types = $5,
             channels = $6, rate_limit = $7, version = $8, metadata = $9, updated_at = $10
         WHERE app_id = $11 AND id = $12";
    DELETE_ENDPOINT_ATTEMPTS = "DELETE FROM attempts WHERE endpoint_id = $1";
    DELETE_ENDPOINT_DELIVERIES = "DELETE FROM deliveries WHERE endpoint_id = $1";
    DELETE_ENDPOINT_SECRETS = "DELETE FROM endpoint_secrets WHERE endpoint_id = $1";
    DELETE_ENDPOINT = "DELETE FROM endpoints WHERE id = $1";
    SIGNING_SECRETS = "SELECT secret FROM endpoint_secrets
         WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)
         ORDER BY expires_at IS NOT NULL, created_at DESC";
    DROP_EXPIRED_SECRETS = "DELETE FROM endpoint_secrets WHERE endpoint_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2";
    EXPIRE_CURRENT_SECRET = "UPDATE endpoint_secrets SET expires_at = $1 WHERE endpoint_id = $2 AND expires_at IS NULL";
    SET_ENDPOINT_HEADERS = "UPDATE endpoints SET headers = $1, updated_at = $2 WHERE app_id = $3 AND id = $4";
    ENDPOINT_DISABLED = "SELECT disabled FROM endpoints WHERE id = $1";
    INSERT_TOKEN = "INSERT INTO tokens (id, app_id, kind, name, hash, created_at, expires_at)
         SELECT $1, id, $2, $3, $4, $5, $6 FROM apps WHERE id = $7";
    INSERT_AUDIT = "INSERT INTO audit_log (id, actor, app_id, action, target, detail, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    OPEN_INSPECTOR = "INSERT INTO inspectors (app_id, token, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (app_id) DO NOTHING";
    INSPECTOR_OF_APP = "SELECT app_id, token, created_at FROM inspectors WHERE app_id = $1";
    INSPECTOR_BY_TOKEN = "SELECT app_id, token, created_at FROM inspectors WHERE token = $1";
    CLOSE_INSPECTOR = "DELETE FROM inspectors WHERE app_id = $1";
    TRIM_INSPECTED = "DELETE FROM inspected_requests WHERE app_id = $1 AND id NOT IN (
             SELECT id FROM inspected_requests WHERE app_id = $1
             ORDER BY received_at DESC, id DESC LIMIT $2)";
    DELIVERY_TARGET = "SELECT url, headers, retry_policy, rate_limit, strict_ordering, options FROM endpoints WHERE id = $1";
    SCHEDULE_RESEND = "INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
             next_attempt_at, lease_until, updated_at)
         VALUES ($1, $2, $3, 1, 0, 1, $5, $5, $4)
         ON CONFLICT (message_id, endpoint_id) DO UPDATE SET
             status = 1, trigger_type = 1, next_attempt_at = $5, lease_until = $5, updated_at = $4
         RETURNING attempts";
    RELEASE_DELIVERY = "UPDATE deliveries SET lease_until = NULL, next_attempt_at = $3
         WHERE message_id = $1 AND endpoint_id = $2 AND status = 1 AND lease_until = $4";
    RESERVE_IDEMPOTENCY_KEY = "INSERT INTO idempotency_keys (scope, key, status, body, created_at, fingerprint)
         VALUES ($1, $2, $3, '', $4, $5)
         ON CONFLICT (scope, key) DO NOTHING";
    RETAKE_IDEMPOTENCY_KEY = "UPDATE idempotency_keys SET created_at = $1 WHERE scope = $2 AND key = $3 AND status = $4";
    COMPLETE_IDEMPOTENCY_KEY = "UPDATE idempotency_keys SET status = $1, body = $2 WHERE scope = $3 AND key = $4";
    ABANDON_IDEMPOTENCY_KEY = "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status = $3";
    PURGE_IDEMPOTENCY_KEYS = "DELETE FROM idempotency_keys WHERE created_at < $1";
    INSERT_TASK = "INSERT INTO background_tasks (id, app_id, kind, status, params, cursor, done, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, NULL, 0, $6, $7)";
    TASKS_WITH_STATUS = "SELECT id FROM background_tasks WHERE status = $1 ORDER BY id";
    UPDATE_TASK = "UPDATE background_tasks SET status = $1, cursor = COALESCE($2, cursor), done = $3, updated_at = $4
         WHERE id = $5";
    PURGE_HEALTH = "DELETE FROM endpoint_health WHERE bucket < $1";

    /// Due and scheduled deliveries, disabled and failing endpoints (`$1`: now).
    QUEUE_GAUGES = "SELECT
    (SELECT count(*) FROM deliveries WHERE status = 1 AND next_attempt_at <= $1),
    (SELECT count(*) FROM deliveries WHERE status = 1 AND next_attempt_at > $1),
    (SELECT count(*) FROM endpoints WHERE disabled),
    (SELECT count(*) FROM endpoint_status WHERE consecutive_failures > 0)";
    /// Each endpoint's app, id, disabled flag and run of failures.
    ENDPOINT_GAUGES = "SELECT e.app_id, e.id, e.disabled,
        COALESCE(s.consecutive_failures, 0)
    FROM endpoints e LEFT JOIN endpoint_status s ON s.endpoint_id = e.id
    ORDER BY e.app_id, e.id";
    /// Endpoints of an app joined with their signing secrets, one row per
    /// (endpoint, secret), ordered by endpoint and then current secret first.
    TARGET_ROWS = "SELECT e.id, e.url, e.headers, e.filter_types, e.channels, s.secret, e.retry_policy, e.rate_limit, e.strict_ordering, e.options
     FROM endpoints e JOIN endpoint_secrets s ON s.endpoint_id = e.id
     WHERE e.app_id = $1 AND e.disabled = FALSE AND (s.expires_at IS NULL OR s.expires_at > $2)
     ORDER BY e.id, s.expires_at IS NOT NULL, s.created_at DESC";
    /// Drops an endpoint's ($1) previous secrets beyond the newest $2.
    TRIM_PREVIOUS_SECRETS = "DELETE FROM endpoint_secrets WHERE endpoint_id = $1 AND expires_at IS NOT NULL
         AND secret NOT IN (SELECT secret FROM endpoint_secrets
                            WHERE endpoint_id = $1 AND expires_at IS NOT NULL
                            ORDER BY created_at DESC LIMIT $2)";
    /// One sealed secret, if any (a store opened without a key must have none).
    ANY_SEALED_SECRET = "SELECT secret FROM endpoint_secrets WHERE secret LIKE 'hsec1:%' LIMIT 1";
    /// The next messages a recovery step looks at: up to $5 of app $1's, from
    /// $2 (inclusive: the window's start, or the endpoint's creation if later),
    /// after the cursor $3, before $4 (the window's end, if any), each with its
    /// delivery to endpoint $6 if there is one. Messages whose content was
    /// removed are never sent again.
    RECOVERY_SCAN = "SELECT m.id, m.event_type, m.channels, d.status
     FROM (SELECT id, event_type, channels FROM messages
           WHERE app_id = $1 AND content_removed_at IS NULL AND id >= $2 AND id > $3 AND (CAST($4 AS TEXT) IS NULL OR id < $4)
           ORDER BY id LIMIT $5) m
     LEFT JOIN deliveries d ON d.message_id = m.id AND d.endpoint_id = $6
     ORDER BY m.id";
    /// A failed delivery, queued again for one manual attempt ($3 now).
    RECOVERY_REQUEUE = "UPDATE deliveries SET status = 1, trigger_type = 1, next_attempt_at = $3, lease_until = NULL, updated_at = $3
     WHERE message_id = $1 AND endpoint_id = $2 AND status = 2";
    /// A delivery the endpoint never got (it was disabled then), created for
    /// one manual attempt ($4 now).
    RECOVERY_CREATE = "INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
         next_attempt_at, lease_until, updated_at)
     VALUES ($1, $2, $3, 1, 0, 1, $4, NULL, $4)
     ON CONFLICT (message_id, endpoint_id) DO NOTHING";
    /// Adds one bucket's counts to the stored ones (`$n` placeholders; SQLite
    /// runs it with `?n`).
    HEALTH_UPSERT = "INSERT INTO endpoint_health (endpoint_id, bucket, succeeded, failed, duration_sum_ms,
         h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
     ON CONFLICT (endpoint_id, bucket) DO UPDATE SET
         succeeded = endpoint_health.succeeded + excluded.succeeded,
         failed = endpoint_health.failed + excluded.failed,
         duration_sum_ms = endpoint_health.duration_sum_ms + excluded.duration_sum_ms,
         h0 = endpoint_health.h0 + excluded.h0, h1 = endpoint_health.h1 + excluded.h1,
         h2 = endpoint_health.h2 + excluded.h2, h3 = endpoint_health.h3 + excluded.h3,
         h4 = endpoint_health.h4 + excluded.h4, h5 = endpoint_health.h5 + excluded.h5,
         h6 = endpoint_health.h6 + excluded.h6, h7 = endpoint_health.h7 + excluded.h7,
         h8 = endpoint_health.h8 + excluded.h8, h9 = endpoint_health.h9 + excluded.h9,
         h10 = endpoint_health.h10 + excluded.h10, h11 = endpoint_health.h11 + excluded.h11";
    /// Moves an endpoint's current run on: a report with a success restarts it
    /// ($6 true), one without extends it.
    STATUS_UPSERT = "INSERT INTO endpoint_status (endpoint_id, consecutive_failures, last_success_at, last_failure_at, failing_since)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (endpoint_id) DO UPDATE SET
         consecutive_failures = CASE WHEN $6 THEN excluded.consecutive_failures
             ELSE endpoint_status.consecutive_failures + excluded.consecutive_failures END,
         last_success_at = COALESCE(excluded.last_success_at, endpoint_status.last_success_at),
         last_failure_at = COALESCE(excluded.last_failure_at, endpoint_status.last_failure_at),
         failing_since = CASE WHEN $6 THEN excluded.failing_since
             ELSE COALESCE(endpoint_status.failing_since, excluded.failing_since) END";
    /// The buckets of the last week, for [`health_windows`].
    HEALTH_BUCKETS = "SELECT bucket, succeeded, failed, duration_sum_ms,
         h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11
     FROM endpoint_health WHERE endpoint_id = $1 AND bucket >= $2";
    STATUS = "SELECT consecutive_failures, last_success_at, last_failure_at, failing_since
     FROM endpoint_status WHERE endpoint_id = $1";
    /// After an endpoint is written: its retry policy ($2), and why and since
    /// when it is disabled — kept if already known, `manual` otherwise, cleared
    /// when enabled ($3 is now).
    ENDPOINT_WRITTEN = "UPDATE endpoints SET retry_policy = $2, strict_ordering = $4, options = $5,
         disabled_reason = CASE WHEN disabled THEN COALESCE(disabled_reason, 'manual') ELSE NULL END,
         disabled_at = CASE WHEN disabled THEN COALESCE(disabled_at, $3) ELSE NULL END
     WHERE id = $1";
    /// A re-enabled endpoint starts counting failures afresh (else the next
    /// failure would disable it again at once); while it keeps failing, it has
    /// been failing since the same moment, so it is disabled again once it has
    /// failed the minimum number of attempts anew. Its first success ends the
    /// run (and the episode of its notifications).
    RESET_RUN = "UPDATE endpoint_status SET consecutive_failures = 0 WHERE endpoint_id = $1";
    /// The receiver answered 410 Gone ($1 now, $2 the endpoint).
    DISABLE_GONE = "UPDATE endpoints SET disabled = TRUE, disabled_reason = 'gone', disabled_at = $1, updated_at = $1
     WHERE id = $2 AND disabled = FALSE";
    /// Disables endpoint $1 at $2 if every attempt since $3 or earlier failed
    /// and there were at least $4 of them; changes one row if it did.
    AUTO_DISABLE = "UPDATE endpoints SET disabled = TRUE, disabled_reason = 'failing', disabled_at = $2, updated_at = $2
     WHERE id = $1 AND disabled = FALSE AND EXISTS (
         SELECT 1 FROM endpoint_status s
         WHERE s.endpoint_id = $1 AND s.failing_since <= $3 AND s.consecutive_failures >= $4)";
    /// Retention: up to $2 messages made before $1 (a message-id bound) with no
    /// delivery still pending, with their deliveries and attempts (cascade).
    PURGE_MESSAGES = "DELETE FROM messages WHERE id IN (
     SELECT m.id FROM messages m
     WHERE m.id < $1 AND NOT EXISTS (
         SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status = 1)
     ORDER BY m.id LIMIT $2)";
    /// Marks endpoint $1's success rate as dropped since $2, unless it already
    /// is; returns the start of the drop.
    MARK_RATE_DROP = "UPDATE endpoint_status SET rate_dropped_since = COALESCE(rate_dropped_since, $2)
     WHERE endpoint_id = $1 RETURNING rate_dropped_since";
    CLEAR_RATE_DROP = "UPDATE endpoint_status SET rate_dropped_since = NULL WHERE endpoint_id = $1";
    /// Rewrites the health check's probe row (`$1`: now).
    PROBE_WRITE = "INSERT INTO store_probe (id, at) VALUES (1, $1)
     ON CONFLICT (id) DO UPDATE SET at = excluded.at";
}

/// Stored idempotent answers that carry a message (`$1`, the pattern of
/// [`crate::shared::answers_of`]) keep answering, with the message's
/// `payload` blanked: a retried request replays the message rather than
/// creating a second one. Each backend's JSON functions, so two texts.
pub(crate) const BLANK_ANSWERS_PG: &str = "UPDATE idempotency_keys
     SET body = jsonb_set(body::jsonb, '{payload}', '{}'::jsonb, false)::text
     WHERE body LIKE $1 ESCAPE '\\' AND body LIKE '{%'";
pub(crate) const BLANK_ANSWERS_SQLITE: &str = "UPDATE idempotency_keys
     SET body = json_replace(body, '$.payload', json('{}'))
     WHERE body LIKE ?1 ESCAPE '\\' AND json_valid(body)";

#[cfg(test)]
mod tests {
    use super::*;

    statements! {
        EXAMPLE = "UPDATE t SET a = $2, b = '$x' WHERE id = $1 AND c = $12";
    }

    #[test]
    fn sqlite_gets_numbered_question_marks_and_keeps_other_dollars() {
        assert_eq!(
            EXAMPLE.pg,
            "UPDATE t SET a = $2, b = '$x' WHERE id = $1 AND c = $12"
        );
        assert_eq!(
            EXAMPLE.sqlite,
            "UPDATE t SET a = ?2, b = '$x' WHERE id = ?1 AND c = ?12"
        );
    }
}
