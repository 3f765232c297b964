//! The query API's parameters: parsed and checked in k2-core
//! ([`k2_core::query_params`]), where the fuzzer reaches them.

pub use k2_core::query_params::*;
