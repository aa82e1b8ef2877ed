//! The axum extractor: a handler that takes [`Verified`] runs only for
//! requests whose signature verifies with the app state's [`Webhook`].

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::{Error, Headers, Webhook};

/// A request whose signature verified: its id, timestamp and raw body (parse
/// it yourself, e.g. `serde_json::from_slice(&verified.body)`).
#[derive(Debug, Clone)]
pub struct Verified {
    pub id: String,
    pub timestamp: i64,
    pub body: Bytes,
}

/// Why [`Verified`] refused a request: 400 when the body cannot be read,
/// 401 for anything about the signature (the reason is in the body, and in
/// [`WebhookRejection::error`] for logging).
#[derive(Debug)]
pub enum WebhookRejection {
    Body(String),
    Signature(Error),
}

impl WebhookRejection {
    /// The verification error, when that is what failed.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Self::Signature(error) => Some(error),
            Self::Body(_) => None,
        }
    }
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Body(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
            Self::Signature(error) => (StatusCode::UNAUTHORIZED, error.to_string()).into_response(),
        }
    }
}

impl<S> FromRequest<S> for Verified
where
    S: Send + Sync,
    Webhook: FromRef<S>,
{
    type Rejection = WebhookRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let webhook = Webhook::from_ref(state);
        let owned: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        // Within axum's body limit (`DefaultBodyLimit`, 2 MB unless set).
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| WebhookRejection::Body(e.body_text()))?;
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let headers =
            Headers::from_pairs(pairs.iter().copied()).map_err(WebhookRejection::Signature)?;
        webhook
            .verify(&headers, &body)
            .map_err(WebhookRejection::Signature)?;
        Ok(Self {
            id: headers.id.to_owned(),
            timestamp: headers.timestamp.trim().parse().unwrap_or_default(),
            body,
        })
    }
}
