//! Herald's delivery engine: it takes leased deliveries (fresh ones straight
//! from the API, due ones from the store), signs and POSTs them, records each
//! attempt and schedules the retry. The database is the truth; what this
//! crate holds in memory is only what it is sending right now.

mod alerts;
mod engine;
mod http;
mod metrics;
mod tasks;

pub use alerts::{effective_rate_rule, AlertConfig, EmailConfig};
pub use engine::{DispatchConfig, Dispatcher, StepOutcome};
pub use http::{
    build_body, classify, endpoint_body, transformed_body, HttpSender, Network, SendResult,
};
pub use metrics::{AttemptRecord, Metrics, StoreSnapshot};
pub use tasks::{run_recovery, RECOVERY_STEP};
