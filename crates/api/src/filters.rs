//! Endpoint filters run before a message is stored, off the store's
//! writer: the writer that stores every app's messages then only reads the
//! decisions, and no tenant's filter runs where another tenant's messages
//! wait. An app's filtered endpoints are read at most once a minute per
//! process (at once again after this process changes one): a decision
//! counts only for the filter source it was made with, so a stale list
//! never decides wrongly, it only leaves work to the writer, which runs
//! any filter it finds undecided (an endpoint made or changed since by
//! another process, a filter reading `timestamp`) within the same budget
//! and deadline. (Read once a second, an app sending less often than that
//! paid a listing of its endpoints with every message.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_domain::{expr, AppId, EndpointId, FilterTypes};
use herald_store::{FilterDecisions, MessageInput, Store, StoreResult};

/// How long an app's filtered endpoints are reused before being read again.
const FRESH: Duration = Duration::from_secs(60);
/// Apps remembered before the cache starts over.
const APPS: usize = 10_000;

/// One enabled endpoint with a filter, as the decision needs it.
#[derive(Debug)]
struct Filtered {
    endpoint: EndpointId,
    source: Arc<str>,
    subscriptions: FilterTypes,
    channels: Option<Vec<String>>,
}

/// Each app's enabled endpoints that have a filter, read from the store at
/// most once per [`FRESH`].
#[derive(Debug, Default)]
pub struct FilterCache {
    apps: Mutex<HashMap<AppId, ReadAt>>,
}

/// An app's filtered endpoints and when they were read.
type ReadAt = (Instant, Arc<[Filtered]>);

impl FilterCache {
    /// Forgets `app`'s filters (one of its endpoints changed here).
    pub(crate) fn forget(&self, app: AppId) {
        self.apps.lock().expect("filter cache").remove(&app);
    }

    async fn of(&self, store: &dyn Store, app: AppId) -> StoreResult<Arc<[Filtered]>> {
        if let Some((read, filters)) = self.apps.lock().expect("filter cache").get(&app) {
            if read.elapsed() < FRESH {
                return Ok(filters.clone());
            }
        }
        let read = Instant::now();
        let endpoints = crate::extract::every(|page| store.list_endpoints(app, page)).await?;
        let filtered: Arc<[Filtered]> = endpoints
            .into_iter()
            .filter(|endpoint| !endpoint.disabled)
            .filter_map(|endpoint| {
                // One whose subscriptions do not read is left to the writer.
                let subscriptions = crate::endpoints::subscriptions(&endpoint)?;
                Some(Filtered {
                    endpoint: endpoint.id,
                    source: Arc::from(endpoint.options.filter?.as_str()),
                    subscriptions,
                    channels: endpoint.channels,
                })
            })
            .collect();
        let mut apps = self.apps.lock().expect("filter cache");
        if apps.len() >= APPS {
            apps.clear();
        }
        apps.insert(app, (read, filtered.clone()));
        Ok(filtered)
    }

    /// Runs `app`'s filters on `input` on the blocking pool and puts the
    /// decisions in it. An app without filters costs a map lookup.
    pub(crate) async fn decide(
        &self,
        store: &dyn Store,
        app: AppId,
        input: &mut MessageInput,
    ) -> StoreResult<()> {
        let filters = self.of(store, app).await?;
        if filters.is_empty() || input.to_endpoint.is_some() {
            return Ok(());
        }
        let message = (
            input.event_type.clone(),
            input.payload.clone(),
            input.channels.clone(),
            input.event_id.as_ref().map(ToString::to_string),
        );
        let decided = tokio::task::spawn_blocking(move || decisions(&filters, message))
            .await
            .unwrap_or_default();
        input.filters = decided;
        Ok(())
    }
}

/// What a filter reads of a message: its type, payload, channels, eventId.
type MessageFields = (
    herald_domain::EventTypeName,
    String,
    Option<Vec<String>>,
    Option<String>,
);

/// The decisions of `filters` on a message (type, payload, channels,
/// eventId), sharing one fan-out budget and deadline as the writer would.
fn decisions(
    filters: &[Filtered],
    (event_type, payload, channels, event_id): MessageFields,
) -> FilterDecisions {
    let now = chrono::Utc::now().timestamp_millis();
    let Ok(subject) = expr::Subject::new(
        event_type.as_str(),
        &payload,
        channels.as_deref(),
        event_id.as_deref(),
        now,
    ) else {
        return FilterDecisions::default(); // the writer reports it
    };
    let mut budget = expr::FANOUT_BUDGET;
    let deadline = Instant::now() + expr::FANOUT_DEADLINE;
    let mut decided = Vec::new();
    for filter in filters {
        if !herald_store::subscribes_to(
            &filter.subscriptions,
            filter.channels.as_deref(),
            &event_type,
            channels.as_deref(),
        ) {
            continue;
        }
        let Ok(program) = expr::cached(&filter.source) else {
            continue; // the writer reports it
        };
        if program.reads_timestamp() {
            continue; // the time is the stored message's
        }
        let outcome = program.matches_within(&subject.input(), &mut budget, deadline);
        expr::count_filter(&outcome);
        if let Err(error) = &outcome {
            expr::note_filter_failure(&filter.endpoint.to_string(), error, now);
        }
        decided.push((
            filter.endpoint,
            filter.source.clone(),
            outcome.unwrap_or(false),
        ));
    }
    FilterDecisions(decided)
}
