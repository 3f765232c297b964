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

use std::time::Duration;

/// The HTTP client of an exchange's REST API (gap recovery, book
/// snapshots): a request that takes longer than 10 s has failed.
pub(crate) fn rest_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_else(|_| reqwest::Client::new())
}
