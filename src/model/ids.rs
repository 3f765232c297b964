//! Deterministic message ids.
//!
//! The original K2 gave every message a random UUIDv4, which made deduplication
//! across restarts impossible. Here the id is a UUIDv5 of what identifies the
//! event at its venue, so a replay, a reconnect overlap or a second load of the
//! same file produces the same id and the deduplicator catches it.

use uuid::Uuid;

/// Namespace of every K2 message id (a fixed, K2-specific UUID).
pub const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b32_6d64_2d76_4332_9a1e_5c0d_7f3b_2a10);

/// What kind of event an id names; part of the id so that a trade and a quote
/// carrying the same venue number never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Trade,
    Quote,
}

impl EventKind {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Trade => b"trade",
            Self::Quote => b"quote",
        }
    }
}

/// The message id of the event `venue_id` of `symbol` on `exchange`.
///
/// Fields are joined with the ASCII unit separator, which no exchange code,
/// symbol or venue id contains, so distinct inputs never join to one name.
pub fn message_id(exchange: &str, symbol: &str, kind: EventKind, venue_id: &str) -> Uuid {
    const SEP: u8 = 0x1f;
    let parts: [&[u8]; 4] = [exchange.as_bytes(), symbol.as_bytes(), kind.tag(), venue_id.as_bytes()];
    let len: usize = parts.iter().map(|p| p.len() + 1).sum();
    // The name is assembled on the stack: this runs once per event.
    let mut stack = [0u8; 192];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for part in parts {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
        buf[at] = SEP;
        at += 1;
    }
    Uuid::new_v5(&MESSAGE_ID_NAMESPACE, &buf[..len - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_input_same_id_and_fields_do_not_run_together() {
        let a = message_id("BINANCE", "BTCUSDT", EventKind::Trade, "3718209179");
        assert_eq!(a, message_id("BINANCE", "BTCUSDT", EventKind::Trade, "3718209179"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, message_id("BINANCE", "BTCUSDT", EventKind::Quote, "3718209179"));
        assert_ne!(a, message_id("BINANCE", "BTCUSD", EventKind::Trade, "T3718209179"));
        let long = "X".repeat(500);
        assert_eq!(message_id("ASX", &long, EventKind::Trade, "1"), message_id("ASX", &long, EventKind::Trade, "1"));
    }
}
