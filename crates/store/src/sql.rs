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
             feature_flag = $5, group_name = $6, updated_at = $7
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
    DELIVERY_TARGET = "SELECT url, headers, retry_policy, rate_limit, strict_ordering FROM endpoints WHERE id = $1";
    SCHEDULE_RESEND = "INSERT INTO deliveries (message_id, endpoint_id, app_id, status, attempts, trigger_type,
             next_attempt_at, lease_until, updated_at)
         VALUES ($1, $2, $3, 1, 0, 1, $5, $5, $4)
         ON CONFLICT (message_id, endpoint_id) DO UPDATE SET
             status = 1, trigger_type = 1, next_attempt_at = $5, lease_until = $5, updated_at = $4
         RETURNING attempts";
    RELEASE_DELIVERY = "UPDATE deliveries SET lease_until = NULL, next_attempt_at = $3 WHERE message_id = $1 AND endpoint_id = $2 AND status = 1";
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
}

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
