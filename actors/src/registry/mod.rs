//! K2's built-in schema registry: the part of the Confluent Schema Registry
//! REST API that producers and consumers use, so a user needs no extra
//! server. Schemas live in K2's catalog database (SQLite, tables
//! `k2_registry_*`), so they survive restarts with the tables they describe.
//!
//! - [`store`]: subjects, versions, ids and compatibility levels.
//! - `k2_core::registry_wire`: what requests carry (bodies, subject names)
//!   and the compatibility rules, pure and fuzzed (tests/fuzz).
//! - [`routes`]: the HTTP API (`/subjects`, `/schemas/ids`, `/config`,
//!   `/compatibility`), with Confluent's error codes.

pub mod routes;
pub mod store;

pub use k2_core::registry_wire::Compatibility;
pub use store::{Registry, RegistryError};
