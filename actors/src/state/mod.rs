//! State that outlives a batch and is shared by the stages: the sequence
//! marks (what is durable, per stream) and, when `redis.url` names one, the
//! Redis store that several instances share (dedup claims, liveness, marks).

pub mod marks;
pub mod shared;
