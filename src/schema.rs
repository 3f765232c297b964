//! The v2 Avro schemas, embedded from schemas/ at compile time.
//!
//! These files are the one definition of the v2 records: the hand-written codec
//! writes exactly their layout (tests compare its bytes with apache-avro's over
//! these schemas), and later the Iceberg table schema is derived from them.

use std::sync::OnceLock;

use apache_avro::Schema;

/// schemas/trade_v2.avsc as shipped in the binary.
pub const TRADE_V2_AVSC: &str = include_str!("../schemas/trade_v2.avsc");
/// schemas/quote_v2.avsc as shipped in the binary.
pub const QUOTE_V2_AVSC: &str = include_str!("../schemas/quote_v2.avsc");

/// schemas/book_v2.avsc as shipped in the binary.
pub const BOOK_V2_AVSC: &str = include_str!("../schemas/book_v2.avsc");

/// Full name of the trade record.
pub const TRADE_V2_NAME: &str = "com.k2.marketdata.TradeV2";
/// Full name of the quote record.
pub const QUOTE_V2_NAME: &str = "com.k2.marketdata.QuoteV2";
/// Full name of the order-book record.
pub const BOOK_V2_NAME: &str = "com.k2.marketdata.BookEventV2";

fn parse(text: &str) -> Schema {
    // The text is a compile-time constant checked by the tests, not input.
    Schema::parse_str(text).expect("embedded v2 schema is valid Avro")
}

/// The parsed trade schema.
pub fn trade_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(TRADE_V2_AVSC))
}

/// The parsed quote schema.
pub fn quote_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(QUOTE_V2_AVSC))
}

/// The parsed order-book schema.
pub fn book_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(BOOK_V2_AVSC))
}
