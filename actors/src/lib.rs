//! K2's actor pipeline and service runtime.
//!
//! # Layout
//!
//! - [`runtime`]: the actix system on a long-lived multi-threaded tokio runtime.
//! - [`config`]: the embedded profile, file and environment layers.
//! - [`supervision`]: restart policies, panic capture, the guardian.
//! - [`health`]: the actor health registry, probes and counted links.
//! - [`messages`]: the batch and control messages every stage handles.
//! - Stages, one file each with its messages: [`sequencer`] (sequence
//!   tracker), [`dedup`] (deduplicator), [`sink_actor`] (the last stage) over a
//!   [`sink::Sink`].
//! - [`pipeline`]: wires the stages together under supervision.
//! - [`loader`]: batch files into the pipeline.
//! - [`http`]: `/health`, `/metrics`, `/admin/faults`; [`telemetry`]: the
//!   Prometheus recorder.
//! - [`cost`]: the cost model behind `k2 cost-model` (pure arithmetic over a
//!   pricing file).

pub mod binance;
pub mod breaker;
pub mod config;
pub mod cost;
pub mod dedup;
pub mod degradation;
pub mod flusher;
pub mod gap_recovery;
pub mod health;
pub mod http;
pub mod kafka;
pub mod lake;
pub mod lakehouse;
pub mod loader;
pub mod messages;
pub mod pipeline;
pub mod pressure;
pub mod query;
pub mod registry;
pub mod runtime;
pub mod sequencer;
pub mod shared_state;
pub mod sim;
pub mod sink;
pub mod sink_actor;
pub mod spill;
pub mod supervision;
pub mod telemetry;
