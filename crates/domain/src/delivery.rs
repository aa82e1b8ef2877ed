//! Herald's per-endpoint delivery options: what an endpoint receives
//! (`filter`) and in what shape (`transformation`, `rawPayload`), and how
//! long its receiver is given (`timeout`). Stored as one JSON column.

use serde::{Deserialize, Serialize};

use crate::expr;
use crate::ParseError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOptions {
    /// A CEL expression over the message; the endpoint gets the messages
    /// for which it is `true` (decided when the message is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A CEL expression yielding the JSON body sent instead of the
    /// envelope (evaluated at each attempt, signed like any body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<String>,
    /// Send the payload (`data`) alone, without the envelope.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_payload: bool,
    /// Seconds the receiver has to answer; `None`: the server's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

impl DeliveryOptions {
    /// The column's text: `None` when every option has its default.
    pub fn encode(&self) -> Option<String> {
        (*self != Self::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// From the column (unknown or unreadable text: the defaults).
    pub fn decode(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// Checks the options a client sent: both expressions compile, the
    /// transformation is not combined with `rawPayload`, and the timeout
    /// is between 1 s and `max_timeout` seconds.
    pub fn check(&self, max_timeout: u32) -> Result<(), ParseError> {
        for (field, source) in [
            ("filter", &self.filter),
            ("transformation", &self.transformation),
        ] {
            if let Some(source) = source {
                expr::compile(source).map_err(|e| ParseError::new(field, e.0))?;
            }
        }
        if self.raw_payload && self.transformation.is_some() {
            return Err(ParseError::new(
                "rawPayload",
                "cannot be combined with a transformation (which yields the whole body)",
            ));
        }
        if let Some(timeout) = self.timeout {
            if timeout == 0 || timeout > max_timeout {
                return Err(ParseError::new(
                    "timeout",
                    format!("must be between 1 and {max_timeout} seconds (this server's request timeout)"),
                ));
            }
        }
        Ok(())
    }
}
