//! Transforms between sources and sinks: sequence checking and deduplication.
//! Pure state machines over batches; the actors in `actors/` drive them.

pub mod dedup;
pub mod sequence;
