//! K2's supervised actor pipeline and service runtime.
//!
//! Folders follow the data: an event comes in through a source, passes the
//! transforms, leaves through a sink into the lake (or Kafka), and is read
//! back by the queries. What every part runs on is in `runtime`; the
//! lifecycle that wires them together is in `service`.
//!
//! ```text
//! sources ──► transforms ──► sinks ──► lake ◄── query ◄── service::http
//!   binance     sequencer      actor     tails     engine
//!   loader      dedup          tails     flusher   routes
//!   gap_recovery               spill     claims
//!                              kafka ──► kafka::consumer ──► lake
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`sources`] | where events come from: [`sources::binance`] (one supervised connection actor per WebSocket), [`sources::gap_recovery`] (REST backfill of gaps), [`sources::loader`] (batch files) |
//! | [`transforms`] | the stages between sources and sinks: [`transforms::sequencer`] (sequence tracking, gaps, shedding), [`transforms::dedup`] (the dedup window); [`transforms::Entrance`], where sources send |
//! | [`sinks`] | where the pipeline ends: the [`sinks::Sink`] trait, [`sinks::actor`] (the last stage), [`sinks::tails`] (into the lake's tails), [`sinks::spill`] and [`sinks::spill_replay`] (level 3's disk spill), [`sinks::kafka`] (the producer) |
//! | [`lake`] | the Iceberg tables: catalog, schemas, Arrow batches, Parquet writer and commits, snapshot summaries, [`lake::tail`]/[`lake::tails`] (rows not yet committed), [`lake::flusher`] (the actor that commits them), [`lake::claims`] (Kafka partitions this process may commit), [`lake::pressure`] (commit drills) |
//! | [`kafka`] | Kafka mode's plumbing: topics, schema ids, the consumer group actor landing topics in the lake, the duplicate window, the order books' producer and lander |
//! | [`query`] | DataFusion over (pinned snapshot ∪ tail): the query actor, engine, parameters, formats, the `/v1` routes and the replay port |
//! | [`registry`] | the built-in Confluent-compatible schema registry |
//! | [`state`] | [`state::marks`] (sequence marks: what is durable per stream) and [`state::shared`] (Redis, shared by instances) |
//! | [`runtime`] | what everything runs on: the actix system, config, supervision, health, breakers, the degradation ladder, telemetry, messages, the error model |
//! | [`service`] | the lifecycle: [`service::Service`]'s builder (restore, sinks, actors, HTTP) and shutdown, [`service::pipeline`] (the stage chain), [`service::http`] (the HTTP server) |
//! | [`sim`] | a local exchange speaking Binance's WebSocket and REST protocols (tests, demo, benchmarks) |
//! | [`cost`] | the cost model behind `k2 cost-model` |
//!
//! The `k2` binary's subcommands are in `src/commands/`, one file each.
//!
//! Dependencies point one way: `runtime` and `state` know no other folder;
//! `lake` knows only those two; `sinks` and `kafka` build on `lake`;
//! `transforms` and `sources` know nothing of sinks' internals; `service`
//! knows everyone and nobody knows `service`.

pub mod cost;
pub mod kafka;
pub mod lake;
pub mod query;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod transforms;
