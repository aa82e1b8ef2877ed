//! Schema enforcement: a message of an event type that requires it
//! (`enforceSchema`), or of any type when the server does
//! (`HERALD_ENFORCE_SCHEMAS`), must validate against the newest of its
//! type's JSON Schemas; else 422 naming each failing path. Off by default,
//! as in Svix.
//!
//! Validators are compiled once per event type and kept for a few
//! seconds: the catalog is read at most once per type per
//! [`FRESH`] by each process, and an update made through this process
//! applies at once (on PostgreSQL, another process's update within
//! [`FRESH`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use herald_domain::EventTypeName;
use herald_store::{Store, StoreError};

use crate::error::{ApiError, ApiResult};

/// How long a type's validator (or its absence) is trusted.
pub const FRESH: Duration = Duration::from_secs(5);
/// Failing paths named in one answer, at most.
const MAX_ERRORS: usize = 10;

type Compiled = Option<Arc<jsonschema::Validator>>;

#[derive(Debug)]
pub struct Schemas {
    server_wide: bool,
    cache: Mutex<HashMap<EventTypeName, (Instant, Compiled)>>,
}

impl Schemas {
    pub fn new(server_wide: bool) -> Self {
        Self {
            server_wide,
            cache: Mutex::default(),
        }
    }

    /// Drops what is known of `name` (it was just changed).
    pub(crate) fn forget(&self, name: &EventTypeName) {
        self.cache.lock().expect("schema cache").remove(name);
    }

    /// Checks `payload` against `event_type`'s schema when it is enforced.
    pub(crate) async fn check(
        &self,
        store: &dyn Store,
        event_type: &EventTypeName,
        payload: &str,
    ) -> ApiResult<()> {
        let known = self
            .cache
            .lock()
            .expect("schema cache")
            .get(event_type)
            .filter(|(read_at, _)| read_at.elapsed() < FRESH)
            .map(|(_, compiled)| compiled.clone());
        let compiled = match known {
            Some(compiled) => compiled,
            None => {
                let found = match store.get_event_type(event_type).await {
                    Ok(found) => found,
                    // The store refuses the message with its own words.
                    Err(StoreError::NotFound) => return Ok(()),
                    Err(error) => return Err(error.into()),
                };
                let compiled = if self.server_wide || found.enforce_schema {
                    newest_validator(found.schemas.as_ref()).unwrap_or_else(|why| {
                        tracing::warn!(event_type = %event_type, %why, "an event type's schema does not compile; not enforced");
                        None
                    })
                } else {
                    None
                };
                let mut cache = self.cache.lock().expect("schema cache");
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(event_type.clone(), (Instant::now(), compiled.clone()));
                compiled
            }
        };
        let Some(validator) = compiled else {
            return Ok(());
        };
        let value: Value = serde_json::from_str(payload)
            .map_err(|e| ApiError::invalid("payload", format!("is not JSON: {e}")))?;
        let failures: Vec<(Vec<String>, String)> = validator
            .iter_errors(&value)
            .take(MAX_ERRORS)
            .map(|error| {
                let mut loc = vec!["body".to_owned(), "payload".to_owned()];
                loc.extend(
                    error
                        .instance_path()
                        .as_str()
                        .split('/')
                        .skip(1)
                        .map(|segment| segment.replace("~1", "/").replace("~0", "~")),
                );
                (loc, error.to_string())
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Schema(failures))
        }
    }
}

/// The newest version's schema in an event type's `schemas`
/// (`{"1": {…}, "2": {…}}`: the highest number).
pub(crate) fn newest(schemas: Option<&Value>) -> Option<&Value> {
    schemas?
        .as_object()?
        .iter()
        .filter_map(|(version, schema)| Some((version.parse::<u32>().ok()?, schema)))
        .max_by_key(|(version, _)| *version)
        .map(|(_, schema)| schema)
}

/// The validator of the newest version in an event type's `schemas`
/// (`{"1": {…}, "2": {…}}`); `None` when there is none; `Err` when it is
/// not a valid JSON Schema.
pub(crate) fn newest_validator(schemas: Option<&Value>) -> Result<Compiled, String> {
    newest(schemas)
        .map(|schema| {
            jsonschema::validator_for(schema)
                .map(Arc::new)
                .map_err(|e| format!("the newest schema is not a valid JSON Schema: {e}"))
        })
        .transpose()
}
