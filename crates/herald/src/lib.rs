//! The `herald` binary's library half: configuration, wiring of store,
//! dispatcher and API into one running [`Application`], and `herald bench`.

pub mod application;
pub mod bench;
pub mod child;
pub mod config;
pub mod listen;
pub mod tokens;
pub mod verify;

pub use application::Application;
pub use config::Settings;
