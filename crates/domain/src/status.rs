//! The states and classifications shared by deliveries and attempts, with
//! the integer codes of the Svix API.

use serde::Serialize;

/// The state of a (message, endpoint) delivery, and the outcome of an attempt.
/// Codes follow Svix's `MessageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Succeeded,
    Pending,
    Failed,
    Sending,
}

impl DeliveryStatus {
    pub fn code(self) -> i64 {
        match self {
            Self::Succeeded => 0,
            Self::Pending => 1,
            Self::Failed => 2,
            Self::Sending => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Succeeded,
            1 => Self::Pending,
            2 => Self::Failed,
            3 => Self::Sending,
            _ => return None,
        })
    }

    /// The lowercase word Svix uses in `statusText`.
    pub fn text(self) -> &'static str {
        match self {
            Self::Succeeded => "success",
            Self::Pending => "pending",
            Self::Failed => "fail",
            Self::Sending => "sending",
        }
    }
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    Scheduled,
    Manual,
}

impl Trigger {
    pub fn code(self) -> i64 {
        match self {
            Self::Scheduled => 0,
            Self::Manual => 1,
        }
    }

    pub fn from_code(code: i64) -> Self {
        if code == 1 {
            Self::Manual
        } else {
            Self::Scheduled
        }
    }
}

/// What went wrong with a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The name did not resolve.
    Dns,
    /// TCP connection refused, reset or unreachable.
    Connect,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// No complete answer within the timeout.
    Timeout,
    /// An answer came but its status was not 2xx (3xx included: redirects are not followed).
    HttpStatus,
    /// Every resolved address was refused by the address policy.
    ForbiddenAddress,
    /// Herald itself ran out of a local resource (file descriptors,
    /// socket buffers, memory, ephemeral ports) before the request left:
    /// not the receiver's failure, so it is not charged to the delivery's
    /// retry policy, its endpoint's health or auto-disable.
    Local,
    /// Anything else (malformed response).
    Other,
    /// Never sent: the message's content was removed while the delivery
    /// was pending.
    ContentRemoved,
    /// Never sent: the endpoint's transformation failed on the message
    /// (an error, or it spent its cost budget).
    Transformation,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::HttpStatus => "http_status",
            Self::ForbiddenAddress => "forbidden_address",
            Self::Local => "local",
            Self::Other => "other",
            Self::ContentRemoved => "content_removed",
            Self::Transformation => "transformation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "dns" => Self::Dns,
            "connect" => Self::Connect,
            "tls" => Self::Tls,
            "timeout" => Self::Timeout,
            "http_status" => Self::HttpStatus,
            "forbidden_address" => Self::ForbiddenAddress,
            "local" => Self::Local,
            "other" => Self::Other,
            "content_removed" => Self::ContentRemoved,
            "transformation" => Self::Transformation,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for status in [
            DeliveryStatus::Succeeded,
            DeliveryStatus::Pending,
            DeliveryStatus::Failed,
            DeliveryStatus::Sending,
        ] {
            assert_eq!(DeliveryStatus::from_code(status.code()), Some(status));
        }
    }

    #[test]
    fn error_classes_round_trip() {
        for class in [
            ErrorClass::Dns,
            ErrorClass::Connect,
            ErrorClass::Tls,
            ErrorClass::Timeout,
            ErrorClass::HttpStatus,
            ErrorClass::ForbiddenAddress,
            ErrorClass::Local,
            ErrorClass::Other,
        ] {
            assert_eq!(ErrorClass::parse(class.as_str()), Some(class));
        }
    }
}
