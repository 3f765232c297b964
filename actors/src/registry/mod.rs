//! K2's built-in schema registry: the part of the Confluent Schema Registry
//! REST API that producers and consumers use, so a user needs no extra
//! server. Schemas live in K2's catalog database (SQLite, tables
//! `k2_registry_*`), so they survive restarts with the tables they describe.
//!
//! - [`store`]: subjects, versions, ids and compatibility levels.
//! - [`routes`]: the HTTP API (`/subjects`, `/schemas/ids`, `/config`,
//!   `/compatibility`), with Confluent's error codes.

pub mod routes;
pub mod store;

pub use store::{Compatibility, Registry, RegistryError};
