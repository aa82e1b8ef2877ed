//! The one HTTP error type: every failure becomes `{"code", "detail"}` with a
//! status chosen in one `match`. Internal causes are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use herald_domain::ParseError;
use herald_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request could not be read (malformed JSON, bad query).
    BadRequest {
        code: &'static str,
        detail: String,
    },
    /// 422: well-formed but invalid input; the detail names the field.
    Invalid {
        field: String,
        detail: String,
    },
    /// 422: the payload does not validate against its event type's schema:
    /// each failing place (`loc`) with why.
    Schema(Vec<(Vec<String>, String)>),
    Unauthorized,
    /// 403: the token is valid but its scope does not reach this route.
    Forbidden,
    /// 403: the token may only read (`readOnly` portal access).
    ReadOnly,
    NotFound,
    Conflict {
        detail: String,
    },
    PayloadTooLarge,
    /// 408: the request body stopped arriving (the connection is closed).
    RequestTimeout,
    /// 503: the database cannot take the request now; retrying is safe.
    Unavailable,
    /// 503 from the health check: the database refuses writes (the cause
    /// is logged; the answer only says whether the disk is full).
    WritesFailing(String),
    /// 503 with `Retry-After`: more work is queued, or more requests are
    /// running, than Herald admits.
    Overloaded,
    /// 429 with `Retry-After`: the app already has its share of the
    /// API's request slots in use.
    AppBusy,
    /// 429 with `Retry-After` (whole seconds): the token used up its rate.
    RateLimited {
        retry_after_secs: u64,
    },
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    detail: String,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(error: ParseError) -> Self {
        Self::invalid(error.field, error.reason)
    }
}

/// No request or listing slot: the app has its share in use (429), or
/// every slot is (503).
impl From<crate::limits::NoSlot> for ApiError {
    fn from(refused: crate::limits::NoSlot) -> Self {
        match refused {
            crate::limits::NoSlot::AppShare => Self::AppBusy,
            crate::limits::NoSlot::Full => Self::Overloaded,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict { field } => Self::Conflict {
                detail: format!("`{field}` is already in use"),
            },
            StoreError::Invalid { field, detail } => Self::invalid(field, detail),
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Self::Unavailable
            }
            StoreError::ContentRemoved => Self::BadRequest {
                code: "content_removed",
                detail: error.to_string(),
            },
            StoreError::Overloaded => Self::Overloaded,
            StoreError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = match self {
            Self::BadRequest { code, detail } => (StatusCode::BAD_REQUEST, code, detail),
            Self::Invalid { field, detail } => {
                // Svix's shape: its SDKs parse a 422's `detail` as a list
                // of `{loc, msg, type}` (a string made them crash).
                let body = crate::openapi::ValidationErrorOut {
                    code: "validation_error".to_owned(),
                    detail: vec![crate::openapi::ValidationItem {
                        loc: vec![field],
                        msg: detail,
                        kind: "value_error".to_owned(),
                    }],
                };
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            Self::Schema(failures) => {
                let body = crate::openapi::ValidationErrorOut {
                    code: "validation_error".to_owned(),
                    detail: failures
                        .into_iter()
                        .map(|(loc, msg)| crate::openapi::ValidationItem {
                            loc,
                            msg,
                            kind: "value_error.jsonschema".to_owned(),
                        })
                        .collect(),
                };
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "a valid `Authorization: Bearer <token>` header is required".to_owned(),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token's scope does not allow this request".to_owned(),
            ),
            Self::ReadOnly => (
                StatusCode::FORBIDDEN,
                "read_only",
                "this token may only read: it was issued with `readOnly`".to_owned(),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".to_owned(),
            ),
            Self::Conflict { detail } => (StatusCode::CONFLICT, "conflict", detail),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body exceeds the server's size limit".to_owned(),
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body stopped arriving".to_owned(),
            ),
            Self::AppBusy => {
                let body = ErrorBody {
                    code: "too_many_concurrent_requests",
                    detail: "this application already has its share of the server's requests running; retry after the indicated delay".to_owned(),
                };
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, "1")],
                    Json(body),
                )
                    .into_response();
            }
            Self::Unavailable => {
                let body = ErrorBody {
                    code: "database_unavailable",
                    detail: "the database is unavailable; retry after the indicated delay"
                        .to_owned(),
                };
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "2")],
                    Json(body),
                )
                    .into_response();
            }
            Self::WritesFailing(cause) => {
                tracing::warn!(%cause, "health: database writes fail");
                let why = if cause.contains("full") {
                    "the disk is full"
                } else {
                    "see the server log"
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_writes_failing",
                    format!("the database refuses writes ({why}); accepted messages are kept, new ones are refused until writes work again"),
                )
            }
            Self::RateLimited { retry_after_secs } => {
                let body = ErrorBody {
                    code: "rate_limited",
                    detail: "this token is sending requests faster than its limit; retry after the indicated delay".to_owned(),
                };
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(
                        axum::http::header::RETRY_AFTER,
                        retry_after_secs.max(1).to_string(),
                    )],
                    Json(body),
                )
                    .into_response();
            }
            Self::Overloaded => {
                let body = ErrorBody {
                    code: "overloaded",
                    detail: "Herald is at capacity; retry after the indicated delay".to_owned(),
                };
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "1")],
                    Json(body),
                )
                    .into_response();
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "an internal error occurred".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { code, detail })).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_a_503_that_says_when_to_retry() {
        let response = ApiError::from(StoreError::Overloaded).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
    }

    #[tokio::test]
    async fn internal_causes_never_reach_the_client() {
        let response = ApiError::Internal("secret connection string".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("internal_error"), "{body}");
        assert!(!body.contains("secret"), "{body}");
    }
}
