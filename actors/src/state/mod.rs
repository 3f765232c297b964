//! State that outlives a batch and is shared by the stages: the sequence
//! marks (what is durable, per stream) and, when `redis.url` names one, the
//! Redis store that several instances share (dedup claims, liveness, marks),
//! and the dead letters (input a stage failed on, kept to be replayed).

pub mod books;
pub mod dead_letters;

pub mod marks;
pub mod shared;
