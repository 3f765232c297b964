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
    /// An order-book event (schemas/book_v2.avsc).
    Book,
}

impl EventKind {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Trade => b"trade",
            Self::Quote => b"quote",
            Self::Book => b"book",
        }
    }
}

/// The message id of the event `venue_id` of `symbol` on `exchange`: the
/// RFC 4122 UUIDv5 of the name `exchange␟symbol␟kind␟venue_id` in
/// [`MESSAGE_ID_NAMESPACE`], so anyone can recompute it (Python:
/// `uuid.uuid5(ns, "BINANCE\x1fBTCUSDT\x1ftrade\x1f3718209179")`).
///
/// Fields are joined with the ASCII unit separator, which no exchange code,
/// symbol or venue id contains, so distinct inputs never join to one name.
/// Computed with the `sha1` crate rather than `Uuid::new_v5`: it uses the
/// CPU's SHA instructions where present, and this runs once per event.
pub fn message_id(exchange: &str, symbol: &str, kind: EventKind, venue_id: &str) -> Uuid {
    use sha1::{Digest, Sha1};
    const SEP: &[u8] = &[0x1f];
    let mut hasher = Sha1::new();
    hasher.update(MESSAGE_ID_NAMESPACE.as_bytes());
    hasher.update(exchange.as_bytes());
    hasher.update(SEP);
    hasher.update(symbol.as_bytes());
    hasher.update(SEP);
    hasher.update(kind.tag());
    hasher.update(SEP);
    hasher.update(venue_id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
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
        // The standard UUIDv5 construction, computed the slow way.
        assert_eq!(a, Uuid::new_v5(&MESSAGE_ID_NAMESPACE, b"BINANCE\x1fBTCUSDT\x1ftrade\x1f3718209179"));
        let long = "X".repeat(500);
        assert_eq!(message_id("ASX", &long, EventKind::Trade, "1"), message_id("ASX", &long, EventKind::Trade, "1"));
    }
}
