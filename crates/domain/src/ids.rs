//! Prefixed, time-sortable identifiers (`app_…`, `ep_…`, `msg_…`, `atmpt_…`)
//! and the caller-chosen `uid`s that may stand in for them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::ParseError;

/// ULIDs in creation order: within one millisecond the random part counts
/// up, so ids (and with them messages) sort in the order they were made —
/// which strict per-endpoint ordering relies on.
fn monotonic() -> Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    generator
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        // The random part ran out within one millisecond (2^80 ids): fall
        // back to an unordered id rather than fail.
        .unwrap_or_else(|_| Ulid::new())
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $field:literal) => {
        /// A prefixed ULID: the prefix names the kind, the ULID sorts by creation time.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id whose order follows the creation order (within
            /// this process, even inside one millisecond).
            pub fn generate() -> Self {
                Self(monotonic())
            }

            /// An id as if created at `millis` (unix ms): for records whose
            /// time is not now (benchmark seeds, imports).
            pub fn generate_at(millis: i64) -> Self {
                Self(Ulid::from_parts(
                    millis.max(0) as u64,
                    rand::random::<u128>(),
                ))
            }

            /// The smallest id created at `millis` (unix ms), for time-bounded range scans.
            pub fn lowest_at(millis: i64) -> Self {
                Self(Ulid::from_parts(millis.max(0) as u64, 0))
            }

            pub fn parse(input: &str) -> Result<Self, ParseError> {
                let rest = input.strip_prefix($prefix).ok_or_else(|| {
                    ParseError::new($field, format!("must start with `{}`", $prefix))
                })?;
                Ulid::from_string(rest)
                    .map(Self)
                    .map_err(|_| ParseError::new($field, "is not a valid id"))
            }

            /// Creation time of the id, in unix milliseconds.
            pub fn timestamp_ms(&self) -> i64 {
                self.0.timestamp_ms() as i64
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(AppId, "app_", "appId");
prefixed_id!(EndpointId, "ep_", "endpointId");
prefixed_id!(MessageId, "msg_", "msgId");
prefixed_id!(AttemptId, "atmpt_", "attemptId");
prefixed_id!(TaskId, "qtask_", "taskId");
prefixed_id!(TokenId, "tok_", "tokenId");
prefixed_id!(AuditId, "audit_", "auditId");

/// A caller-chosen identifier (`uid` of an app or endpoint, `eventId` of a
/// message): 1–256 characters of `[A-Za-z0-9._-]`, as in Svix.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Uid(String);

impl Uid {
    pub fn parse(field: &'static str, input: &str) -> Result<Self, ParseError> {
        if input.is_empty() || input.len() > 256 {
            return Err(ParseError::new(field, "must be 1 to 256 characters long"));
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(ParseError::new(
                field,
                "may contain only letters, digits, `.`, `_` and `-`",
            ));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A path segment that names a resource either by its id or by its uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrUid<I> {
    Id(I),
    Uid(Uid),
}

impl IdOrUid<AppId> {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match AppId::parse(input) {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => Uid::parse("appId", input).map(Self::Uid),
        }
    }
}

impl IdOrUid<EndpointId> {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match EndpointId::parse(input) {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => Uid::parse("endpointId", input).map(Self::Uid),
        }
    }
}

impl IdOrUid<MessageId> {
    /// A message is named by its id or by its `eventId`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match MessageId::parse(input) {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => Uid::parse("msgId", input).map(Self::Uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = MessageId::generate();
        assert_eq!(MessageId::parse(&id.to_string()).unwrap(), id);
        assert!(id.to_string().starts_with("msg_"));
    }

    #[test]
    fn ids_made_in_one_millisecond_still_sort_in_creation_order() {
        let ids: Vec<MessageId> = (0..10_000).map(|_| MessageId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.windows(2).all(|w| w[0].to_string() < w[1].to_string()));
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let early = AppId::lowest_at(1_000);
        let late = AppId::lowest_at(2_000);
        assert!(early.to_string() < late.to_string());
        assert!(early < late);
    }

    #[test]
    fn an_id_with_the_wrong_prefix_is_rejected() {
        let id = EndpointId::generate().to_string();
        assert!(AppId::parse(&id).is_err());
        assert!(AppId::parse("app_nonsense").is_err());
    }

    #[test]
    fn uids_accept_only_safe_characters() {
        assert!(Uid::parse("uid", "crm-prod_1.a").is_ok());
        assert!(Uid::parse("uid", "").is_err());
        assert!(Uid::parse("uid", "has space").is_err());
        assert!(Uid::parse("uid", &"x".repeat(257)).is_err());
    }

    #[test]
    fn a_path_segment_is_an_id_when_it_parses_as_one() {
        let id = AppId::generate();
        assert_eq!(
            IdOrUid::<AppId>::parse(&id.to_string()).unwrap(),
            IdOrUid::Id(id)
        );
        assert!(matches!(
            IdOrUid::<AppId>::parse("acme").unwrap(),
            IdOrUid::Uid(_)
        ));
    }
}
