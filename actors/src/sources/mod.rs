//! Where events come from. Each source sends batches into the pipeline's
//! [`Entrance`](crate::transforms::Entrance), waiting while it is full.
//!
//! - [`binance`]: live trades and book tickers over Binance's combined
//!   WebSocket streams, one supervised connection actor per connection.
//! - [`gap_recovery`]: trades the WebSocket missed, fetched over Binance's
//!   REST API and sent to the deduplicator.
//! - [`loader`]: batch files (ASX CSV, the original K2 CSV, Binance frames).

pub mod binance;
pub mod gap_recovery;
pub mod loader;
