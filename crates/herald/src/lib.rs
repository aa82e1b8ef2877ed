//! The `herald` binary's library half: configuration, wiring of store,
//! dispatcher and API into one running [`Application`], and `herald bench`.

pub mod application;
pub mod bench;
pub mod child;
pub mod client;
pub mod config;
pub mod listen;
pub mod tokens;
pub mod verify;

pub use application::Application;

/// `0.1.0 (commit 1a2b3c4d5e6f)`: the version and the commit built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HERALD_GIT_COMMIT"),
    ")"
);
pub use config::Settings;
