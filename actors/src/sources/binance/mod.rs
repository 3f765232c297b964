//! The Binance source: one supervised [`connection::ConnectionActor`] per
//! WebSocket connection (at most 1024 streams each), the socket task each
//! runs, and, when books are on, one [`book::BookActor`] per connection.

pub mod book;
pub mod connection;
mod socket;

use crate::runtime::config::BinanceConfig;

/// The stream names of `symbols`, split into groups that fit one connection;
/// `depth` is the diff-depth stream's suffix when books are kept.
pub fn stream_groups(config: &BinanceConfig, depth: Option<&str>) -> Vec<Vec<String>> {
    let per_symbol = 1 + usize::from(config.book_ticker) + usize::from(depth.is_some());
    let symbols_per_connection = (config.max_streams_per_connection / per_symbol).max(1);
    config
        .symbols
        .chunks(symbols_per_connection)
        .map(|chunk| {
            chunk
                .iter()
                .flat_map(|s| {
                    let s = s.to_ascii_lowercase();
                    let mut streams = vec![format!("{s}@trade")];
                    if config.book_ticker {
                        streams.push(format!("{s}@bookTicker"));
                    }
                    if let Some(suffix) = depth {
                        streams.push(format!("{s}{suffix}"));
                    }
                    streams
                })
                .collect()
        })
        .collect()
}

/// The combined-stream URL for `streams` on `endpoint`.
pub fn stream_url(endpoint: &str, streams: &[String]) -> String {
    format!("{}/stream?streams={}", endpoint.trim_end_matches('/'), streams.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_split_at_the_per_connection_limit() {
        let mut c =
            crate::runtime::config::Config::load_from(None, figment::providers::Env::prefixed("K2_TEST_UNSET__"))
                .unwrap()
                .binance;
        c.symbols = (0..5).map(|i| format!("S{i}USDT")).collect();
        c.max_streams_per_connection = 4;
        let groups = stream_groups(&c, None);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0], ["s0usdt@trade", "s0usdt@bookTicker", "s1usdt@trade", "s1usdt@bookTicker"]);
        assert!(groups.iter().all(|g| g.len() <= 4));
        assert_eq!(
            stream_url("wss://x:9443/", &groups[2]),
            "wss://x:9443/stream?streams=s4usdt@trade/s4usdt@bookTicker"
        );
        // A symbol's streams stay on one connection, its book's with them.
        c.max_streams_per_connection = 7;
        let groups = stream_groups(&c, Some("@depth@100ms"));
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0][..3], ["s0usdt@trade", "s0usdt@bookTicker", "s0usdt@depth@100ms"]);
        assert!(groups.iter().all(|g| g.len() <= 7 && g.len() % 3 == 0));
    }
}
