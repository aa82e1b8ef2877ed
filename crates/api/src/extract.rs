//! Request parsing shared by the handlers: JSON bodies with Herald's error
//! shape, list parameters, and the wire form of timestamps.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use herald_store::{Cursor, Page, PageRequest, Timestamp};

use crate::error::{ApiError, ApiResult};

/// A JSON request body whose failures become `{code, detail}` errors.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(request.headers()) {
            return Err(ApiError::BadRequest {
                code: "invalid_content_type",
                detail: "expected `Content-Type: application/json`".to_owned(),
            });
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest {
                        code: "invalid_body",
                        detail: rejection.body_text(),
                    }
                }
            })?;
        // Every body is an object; serde would take a JSON array for a
        // struct too (`[null, null]` as a struct of optional fields).
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                return Err(ApiError::invalid("body", "must be a JSON object"));
            }
            _ => {
                return Err(ApiError::BadRequest {
                    code: "invalid_json",
                    detail: "the body is not JSON".to_owned(),
                })
            }
        }
        herald_domain::payload::check_depth(&bytes)?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A body that may be left out (the SDKs send `{}`, curl users nothing):
/// the type's default when empty, else parsed like [`Body`].
pub(crate) fn optional_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    herald_domain::payload::check_depth(bytes)?;
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(value)| value)
        .map_err(json_rejection)
}

/// `application/json`, or any `application/…+json`.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // Checked on every request with a body: compared in place, no copy.
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype
                .get(subtype.len().saturating_sub(5)..)
                .is_some_and(|end| end.eq_ignore_ascii_case("+json")))
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => {
            // serde names the field: "missing field `url`", "unknown variant …".
            let detail = text
                .split_once(": ")
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or(text);
            let field = detail
                .split('`')
                .nth(1)
                .filter(|_| detail.contains("field"))
                .unwrap_or("body")
                .to_owned();
            ApiError::invalid(field, detail)
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest {
            code: "invalid_json",
            detail: text,
        },
        JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest {
            code: "invalid_content_type",
            detail: "expected `Content-Type: application/json`".to_owned(),
        },
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::BadRequest {
            code: "invalid_body",
            detail: other.body_text(),
        },
    }
}

/// An axum extractor of request parts whose rejection (plain text in axum)
/// becomes a `400 {code, detail}` like every other error.
macro_rules! with_json_errors {
    ($(#[$doc:meta])* $name:ident, $inner:ident, $code:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<T>(pub T);

        impl<S, T> axum::extract::FromRequestParts<S> for $name<T>
        where
            T: DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                match axum::extract::$inner::<T>::from_request_parts(parts, state).await {
                    Ok(axum::extract::$inner(value)) => Ok(Self(value)),
                    Err(rejection) => Err(ApiError::BadRequest {
                        code: $code,
                        detail: rejection.body_text(),
                    }),
                }
            }
        }
    };
}

with_json_errors!(
    /// Query parameters (`invalid_query` when they do not parse).
    Query,
    Query,
    "invalid_query"
);
with_json_errors!(
    /// Path segments (`invalid_path` on bad percent-encoding).
    Path,
    Path,
    "invalid_path"
);

/// `?limit=&iterator=` as every Svix list route takes them.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 250 (default 50; out of range is clamped).
    pub limit: Option<usize>,
    /// Where the page starts: a list answer's `iterator` or `prevIterator`.
    pub iterator: Option<String>,
}

impl ListParams {
    /// The page asked for in a list keyed by `K`: an iterator that is not
    /// a `K` (the key of the item it starts after, `-` before it for
    /// `prevIterator`) cannot have come from that list and is refused
    /// with 400 rather than answered with an empty page.
    pub fn page<K: ListKey>(&self) -> ApiResult<PageRequest> {
        let cursor = Cursor::parse(self.iterator.as_deref());
        if let Cursor::After(key) | Cursor::Before(key) = &cursor {
            if !K::is_key(key) {
                return Err(ApiError::BadRequest {
                    code: "invalid_query",
                    detail: format!(
                        "iterator: `{}` is not an iterator of this list (use the `iterator` or `prevIterator` of an earlier page)",
                        self.iterator.as_deref().unwrap_or_default().chars().take(64).collect::<String>()
                    ),
                });
            }
        }
        Ok(PageRequest {
            limit: self.limit.unwrap_or(50).clamp(1, 250),
            cursor,
        })
    }
}

/// What a list is ordered and paged by: the iterators it hands out are
/// these keys.
pub trait ListKey {
    fn is_key(text: &str) -> bool;
}

macro_rules! id_keys {
    ($($id:ty),*) => {$(
        impl ListKey for $id {
            fn is_key(text: &str) -> bool {
                <$id>::parse(text).is_ok()
            }
        }
    )*};
}
id_keys!(
    herald_domain::AppId,
    herald_domain::EndpointId,
    herald_domain::MessageId,
    herald_domain::AttemptId,
    herald_domain::TokenId,
    herald_domain::AuditId,
    herald_domain::TaskId
);

impl ListKey for herald_domain::EventTypeName {
    fn is_key(text: &str) -> bool {
        herald_domain::EventTypeName::stored(text).is_ok()
    }
}

/// The Svix list shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> ListResponse<T> {
    pub fn from_page<R>(page: Page<R>, map: impl FnMut(R) -> T) -> Self {
        Self {
            data: page.data.into_iter().map(map).collect(),
            iterator: page.iterator,
            prev_iterator: page.prev_iterator,
            done: page.done,
        }
    }
}

/// `value` as a JSON answer that keeps `held` (a slot of a bounded
/// resource, such as listing memory) until it has been written, so a
/// client reading slowly holds it for as long as the answer stays in
/// memory.
pub(crate) fn json_holding<T: Serialize, H: Send + 'static>(
    value: &T,
    held: H,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let json = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("writing a list page: {e}")))?;
    let response = (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response();
    Ok(holding(response, held))
}

/// The fields a body carried that its type does not know, gathered by
/// `#[serde(flatten)]` where `deny_unknown_fields` cannot be used (it does
/// not work with flattened fields), so that they are refused by name.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Unknown(std::collections::BTreeMap<String, serde::de::IgnoredAny>);

impl Unknown {
    /// 422 naming the first unknown field, if any.
    pub(crate) fn refuse(&self) -> ApiResult<()> {
        match self.0.keys().next() {
            Some(field) => Err(ApiError::invalid(
                field.clone(),
                format!("unknown field `{field}`: Herald does not take it"),
            )),
            None => Ok(()),
        }
    }
}

/// `response` keeping `held` (a slot of a bounded resource, such as
/// listing memory) until its body has been written to the end.
pub(crate) fn holding<H: Send + 'static>(
    response: axum::response::Response,
    held: H,
) -> axum::response::Response {
    use futures_util::StreamExt;
    let (parts, body) = response.into_parts();
    let mut held = Some(held);
    let end = futures_util::stream::poll_fn(move |_| {
        drop(held.take());
        std::task::Poll::Ready(None::<Result<axum::body::Bytes, axum::Error>>)
    });
    let body = axum::body::Body::from_stream(body.into_data_stream().chain(end));
    axum::response::Response::from_parts(parts, body)
}

/// Every item of a listing, read page after page (250 at a time).
pub(crate) async fn every<T, F, Fut>(mut list: F) -> herald_store::StoreResult<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = herald_store::StoreResult<Page<T>>>,
{
    let mut page = PageRequest {
        limit: 250,
        cursor: Cursor::Start,
    };
    let mut all = Vec::new();
    loop {
        let found = list(page.clone()).await?;
        all.extend(found.data);
        match found.iterator {
            Some(next) if !found.done => page.cursor = Cursor::After(next),
            _ => return Ok(all),
        }
    }
}

/// 422 naming a query parameter Herald does not do, when it was given
/// (one that a client's SDK sends must not be dropped unnoticed: a `tag`
/// filter ignored would list every message as if it matched).
pub(crate) fn refuse_given<T>(name: &str, value: &Option<T>, why: &str) -> ApiResult<()> {
    match value {
        Some(_) => Err(ApiError::invalid(name, why)),
        None => Ok(()),
    }
}

/// One value sent under either of two names (Svix's SDKs send `eventTypes`
/// and `throttleRate` where Svix's older API said `filterTypes` and
/// `rateLimit`): whichever was given, or 422 naming the second when both
/// were given with different values.
pub(crate) fn either<T: PartialEq>(
    (name, value): (&str, Option<T>),
    (other_name, other): (&str, Option<T>),
) -> ApiResult<Option<T>> {
    match (value, other) {
        (Some(value), Some(other)) if value != other => Err(ApiError::invalid(
            other_name,
            format!(
                "`{other_name}` and `{name}` are the same field and differ here; send one of them"
            ),
        )),
        (Some(value), _) | (None, Some(value)) => Ok(Some(value)),
        (None, None) => Ok(None),
    }
}

/// RFC 3339 with milliseconds, in UTC.
pub fn timestamp(millis: Timestamp) -> String {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 query parameter into unix milliseconds.
pub fn parse_time(field: &'static str, text: &str) -> Result<Timestamp, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 time: {e}")))
}

/// For PATCH bodies: distinguishes an absent field (`None`) from an explicit
/// `null` (`Some(None)`).
pub fn patch_field<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
