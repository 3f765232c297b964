//! K2 core: the v2 market-data model and everything that turns bytes into it
//! and back. No actors and no I/O beyond reading input files live here.
//!
//! # Layout
//!
//! - [`book`]: order books kept in sync from a diff-depth stream and REST
//!   snapshots, by the venue's documented procedure.
//! - [`model`]: `TradeV2`, `QuoteV2`, `MarketEvent`, the decimal(18,8) rule,
//!   deterministic message ids.
//! - [`schema`]: schemas/trade_v2.avsc and quote_v2.avsc, embedded at compile
//!   time; the one definition of the v2 records.
//! - [`codec`]: the fast schema-specific Avro codec, the Confluent wire format,
//!   and apache-avro's generic path as the reference it is tested against.
//! - [`source`]: parsers for what venues send: Binance WebSocket JSON, ASX CSV
//!   files, and input-file discovery.
//! - [`query_params`]: the query API's parameters, checked (each problem
//!   names its parameter).
//! - [`registry_wire`]: what the Confluent schema registry's API carries:
//!   request bodies, subject names, compatibility rules.

pub mod book;
pub mod codec;
pub mod model;
pub mod query_params;
pub mod registry_wire;
pub mod schema;
pub mod source;
pub mod transform;

pub use model::{
    AssetClass, BookEventKind, BookEventV2, BookLevel, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData,
};
