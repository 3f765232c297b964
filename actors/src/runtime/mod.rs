//! What every part of K2 runs on: the actix system on a long-lived tokio
//! runtime, the configuration, supervision, health, breakers, the
//! degradation ladder, telemetry, the messages every stage understands and
//! the error model. Nothing here knows about a source, a sink or a table.

pub mod auth;
pub mod breaker;
pub mod config;
pub mod degradation;
pub mod errors;
pub mod health;
pub mod messages;
pub mod resource;
pub mod supervision;
pub mod system;
pub mod telemetry;

pub use system::{run, shutdown_signal};
