//! The historical replay stream: trades, quotes and book updates for a set
//! of symbols and a time range, from the tables and the tail (the same
//! hybrid view as `/v1`),
//! sent over a WebSocket in Binance's own wire format, so a client written
//! against Binance's stream only changes its base URL.
//!
//! - [`params`]: the request (`/stream?streams=` for the combined format,
//!   `/ws/<stream>` for raw frames; `start`, `end`, `speed`, `timeUnit`).
//! - [`frames`]: stored rows as Binance payloads.
//! - [`depth`]: the depth streams, and the replay port's `GET /api/v3/depth`
//!   answering with the book as the replay has played it.
//! - [`play`]: one replay, read, merged, paced and written to its socket.
//! - [`server`]: the replay port, a supervised actor owning the accept loop.
//! - `/v1/replay` on the API port (`query/routes.rs`) plays the same way.
//!
//! Rows come in spans of time of one symbol each (`QueryEngine::read_span`,
//! each row read once), read ahead by a task per stream and merged across
//! symbols by (time, symbol, kind, id); `speed` paces
//! them against the clock (`0`: as fast as the client reads: a slow reader
//! holds the stream, nothing is dropped). The end of the range closes the
//! stream with a normal close frame.

pub mod depth;
pub mod endpoint;
pub mod frames;
pub mod gate;
pub mod params;
pub mod play;
pub mod server;
