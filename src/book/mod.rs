//! Order books from a venue's diff-depth stream and REST snapshots: the
//! levels ([`levels`]) and the procedure that keeps them in sync with the
//! venue ([`sync`]). No I/O: the caller fetches snapshots when told to.

pub mod levels;
pub mod replay;
pub mod sync;
#[cfg(test)]
mod sync_tests;

pub use levels::{Level, OrderBook, Side};
pub use sync::{BookSync, DepthSnapshot, DepthUpdate, SnapshotStep, Step, UnsyncCause};
