//! Herald's domain: the vocabulary every other crate speaks, with no I/O.
//!
//! Values here are parsed once at the edge (`parse` constructors) and carried
//! inward already valid, so inner layers never re-check strings.

pub mod alerts;
pub mod catalog;
pub mod delivery;
pub mod event_type;
pub mod expr;
pub mod headers;
pub mod health;
pub mod ids;
pub mod net;
pub mod payload;
pub mod retry;
pub mod sealing;
pub mod signing;
pub mod status;
pub mod token;

pub use alerts::{AlertRules, AlertRulesSpec};
pub use delivery::DeliveryOptions;
pub use event_type::{EventTypeName, FilterTypes};
pub use ids::{AppId, AttemptId, AuditId, EndpointId, MessageId, TaskId, TokenId, Uid};
pub use net::{AddressPolicy, Cidr, EndpointUrl};
pub use retry::{parse_duration, RetryKind, RetryPolicy, RetryPolicySpec, RetrySchedule};
pub use signing::{Secret, SigningKeys};
pub use status::{DeliveryStatus, ErrorClass, Trigger};

/// A value failed to parse; `field` names the input that was wrong so the API
/// can report it to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl ParseError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
