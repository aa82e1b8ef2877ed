//! Event type names and endpoint subscriptions (`filterTypes`) with
//! group wildcards such as `call.*`.

use std::fmt;

use serde::Serialize;

use crate::ParseError;

/// The name of a kind of event, e.g. `call.completed`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EventTypeName(String);

impl EventTypeName {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if input.contains("..") {
            // Empty segments (`a..b`) would make a group (`a.`) that no
            // subscription can name.
            return Err(ParseError::new(
                "eventType",
                "must not contain an empty segment (`..`)",
            ));
        }
        Self::stored(input)
    }

    /// A name read back from the database: checked as names were when it
    /// was written (before empty segments were refused), so that an
    /// upgrade never makes a stored name unreadable.
    pub fn stored(input: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "eventType";
        if input.is_empty() || input.len() > 256 {
            return Err(ParseError::new(FIELD, "must be 1 to 256 characters long"));
        }
        let valid = input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid || input.starts_with('.') || input.ends_with('.') {
            return Err(ParseError::new(
                FIELD,
                "may contain only letters, digits, `.`, `_` and `-`, and must not start or end with `.`",
            ));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The group is everything before the last dot: `call` for `call.completed`.
    pub fn group(&self) -> Option<&str> {
        self.0.rsplit_once('.').map(|(group, _)| group)
    }
}

impl fmt::Display for EventTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One entry of an endpoint's subscription list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterPattern {
    /// Exactly this event type.
    Exact(EventTypeName),
    /// Every event type whose name starts with `group.` (written `group.*`).
    Group(String),
}

impl FilterPattern {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        Self::parse_with(input, EventTypeName::parse)
    }

    fn parse_with(
        input: &str,
        name: fn(&str) -> Result<EventTypeName, ParseError>,
    ) -> Result<Self, ParseError> {
        match input.strip_suffix(".*") {
            Some(group) => {
                let group = name(group).map_err(|e| ParseError::new("filterTypes", e.reason))?;
                Ok(Self::Group(group.0))
            }
            None => name(input)
                .map(Self::Exact)
                .map_err(|e| ParseError::new("filterTypes", e.reason)),
        }
    }

    pub fn matches(&self, name: &EventTypeName) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Group(group) => name
                .as_str()
                .strip_prefix(group.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }
}

impl fmt::Display for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => write!(f, "{name}"),
            Self::Group(group) => write!(f, "{group}.*"),
        }
    }
}

/// An endpoint's subscriptions. Empty means "every event type".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterTypes(Vec<FilterPattern>);

impl FilterTypes {
    pub fn all() -> Self {
        Self(Vec::new())
    }

    pub fn parse<S: AsRef<str>>(inputs: &[S]) -> Result<Self, ParseError> {
        Self::parse_with(inputs, EventTypeName::parse)
    }

    /// Subscriptions read back from the database (see [`EventTypeName::stored`]).
    pub fn stored<S: AsRef<str>>(inputs: &[S]) -> Result<Self, ParseError> {
        Self::parse_with(inputs, EventTypeName::stored)
    }

    fn parse_with<S: AsRef<str>>(
        inputs: &[S],
        name: fn(&str) -> Result<EventTypeName, ParseError>,
    ) -> Result<Self, ParseError> {
        let mut patterns = Vec::with_capacity(inputs.len());
        for input in inputs {
            let pattern = FilterPattern::parse_with(input.as_ref(), name)?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        Ok(Self(patterns))
    }

    pub fn patterns(&self) -> &[FilterPattern] {
        &self.0
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, name: &EventTypeName) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(name))
    }

    /// The text form, as stored and as returned by the API (`None` = all).
    pub fn to_strings(&self) -> Option<Vec<String>> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.iter().map(ToString::to_string).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> EventTypeName {
        EventTypeName::parse(s).unwrap()
    }

    #[test]
    fn subscriptions_match_exact_names_and_group_wildcards() {
        let cases = [
            (vec![], "call.completed", true, "no filter means every type"),
            (vec!["call.completed"], "call.completed", true, "exact name"),
            (vec!["call.completed"], "call.failed", false, "other name"),
            (vec!["call.*"], "call.failed", true, "group wildcard"),
            (vec!["call.*"], "callback.x", false, "prefix is not a group"),
            (vec!["call.*"], "contact.created", false, "other group"),
            (
                vec!["contact.created", "call.*"],
                "call.started",
                true,
                "second pattern",
            ),
        ];
        for (filters, event, expected, why) in cases {
            let filter = FilterTypes::parse(&filters).unwrap();
            assert_eq!(filter.matches(&name(event)), expected, "{why}");
        }
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in [
            "",
            "has space",
            ".call",
            "call.",
            "a/b",
            "*",
            "a..b",
            "call..*",
        ] {
            assert!(EventTypeName::parse(bad).is_err(), "{bad:?} must fail");
        }
        assert!(FilterTypes::parse(&["*.call"]).is_err());
    }

    #[test]
    fn the_group_is_the_part_before_the_last_dot() {
        assert_eq!(name("call.completed").group(), Some("call"));
        assert_eq!(name("ping").group(), None);
    }

    #[test]
    fn filter_types_round_trip_through_text() {
        let filter = FilterTypes::parse(&["call.*", "contact.created"]).unwrap();
        assert_eq!(
            filter.to_strings().unwrap(),
            vec!["call.*".to_owned(), "contact.created".to_owned()]
        );
        assert_eq!(FilterTypes::all().to_strings(), None);
    }
}
