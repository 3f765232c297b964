//! The Rust types and schemas/*.avsc must describe the same records. The
//! byte-equality property tests in codec_roundtrip.rs hold the codec to the
//! schemas; these tests give a readable failure when a field is added,
//! removed, renamed, retyped or reordered on one side only.

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use k2_core::codec::generic;
use k2_core::schema::{BOOK_V2_NAME, QUOTE_V2_NAME, TRADE_V2_NAME, book_schema, quote_schema, trade_schema};
use k2_core::{AssetClass, BookEventKind, TradeSide};

fn record(schema: &Schema) -> &RecordSchema {
    match schema {
        Schema::Record(r) => r,
        other => panic!("not a record: {other:?}"),
    }
}

/// A compact description of each field: name and type.
fn layout(schema: &Schema) -> Vec<(String, String)> {
    record(schema).fields.iter().map(|f| (f.name.clone(), describe(&f.schema))).collect()
}

fn describe(s: &Schema) -> String {
    match s {
        Schema::String => "string".into(),
        Schema::Long => "long".into(),
        Schema::Int => "int".into(),
        Schema::Record(r) => format!(
            "record {}{{{}}}",
            r.name.name,
            r.fields.iter().map(|f| format!("{}:{}", f.name, describe(&f.schema))).collect::<Vec<_>>().join(",")
        ),
        Schema::Ref { name } => format!("ref {}", name.name),
        Schema::Boolean => "boolean".into(),
        Schema::Null => "null".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::Decimal(d) => format!("decimal({},{})", d.precision, d.scale),
        Schema::Enum(e) => format!("enum {}[{}]", e.name.name, e.symbols.join(",")),
        Schema::Array(a) => format!("array<{}>", describe(&a.items)),
        Schema::Map(m) => format!("map<{}>", describe(&m.types)),
        Schema::Union(u) => u.variants().iter().map(describe).collect::<Vec<_>>().join("|"),
        other => format!("{other:?}"),
    }
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
}

#[test]
fn trade_schema_is_the_v2_layout() {
    let asset = format!("enum AssetClass[{}]", AssetClass::SYMBOLS.join(","));
    let side = format!("enum TradeSide[{}]", TradeSide::SYMBOLS.join(","));
    assert_eq!(record(trade_schema()).name.fullname(None), TRADE_V2_NAME);
    assert_eq!(
        layout(trade_schema()),
        expect(&[
            ("message_id", "string"),
            ("trade_id", "string"),
            ("symbol", "string"),
            ("exchange", "string"),
            ("asset_class", &asset),
            ("timestamp", "timestamp-micros"),
            ("price", "decimal(18,8)"),
            ("quantity", "decimal(18,8)"),
            ("currency", "string"),
            ("side", &side),
            ("trade_conditions", "array<string>"),
            ("source_sequence", "null|long"),
            ("ingestion_timestamp", "timestamp-micros"),
            ("platform_sequence", "null|long"),
            ("vendor_data", "null|map<string>"),
            ("is_sample_data", "boolean"),
        ])
    );
}

#[test]
fn quote_schema_is_the_v2_layout() {
    let asset = format!("enum AssetClass[{}]", AssetClass::SYMBOLS.join(","));
    assert_eq!(record(quote_schema()).name.fullname(None), QUOTE_V2_NAME);
    assert_eq!(
        layout(quote_schema()),
        expect(&[
            ("message_id", "string"),
            ("quote_id", "string"),
            ("symbol", "string"),
            ("exchange", "string"),
            ("asset_class", &asset),
            ("timestamp", "timestamp-micros"),
            ("bid_price", "null|decimal(18,8)"),
            ("bid_quantity", "null|decimal(18,8)"),
            ("ask_price", "null|decimal(18,8)"),
            ("ask_quantity", "null|decimal(18,8)"),
            ("currency", "string"),
            ("source_sequence", "null|long"),
            ("ingestion_timestamp", "timestamp-micros"),
            ("platform_sequence", "null|long"),
            ("vendor_data", "null|map<string>"),
            ("is_sample_data", "boolean"),
        ])
    );
}

#[test]
fn book_schema_is_the_v2_layout() {
    let asset = format!("enum AssetClass[{}]", AssetClass::SYMBOLS.join(","));
    let kind = format!("enum BookEventKind[{}]", BookEventKind::SYMBOLS.join(","));
    assert_eq!(record(book_schema()).name.fullname(None), BOOK_V2_NAME);
    assert_eq!(
        layout(book_schema()),
        expect(&[
            ("message_id", "string"),
            ("symbol", "string"),
            ("exchange", "string"),
            ("asset_class", &asset),
            ("kind", &kind),
            ("timestamp", "timestamp-micros"),
            ("first_update_id", "long"),
            ("final_update_id", "long"),
            ("bids", "array<record BookLevel{price:decimal(18,8),quantity:decimal(18,8)}>"),
            ("asks", "array<ref BookLevel>"),
            ("depth", "null|int"),
            ("cause", "null|string"),
            ("ingestion_timestamp", "timestamp-micros"),
            ("platform_sequence", "null|long"),
            ("is_sample_data", "boolean"),
        ])
    );
}

/// The Rust struct's fields, via serde, in declaration order, must be the
/// schema's fields in schema order.
#[test]
fn rust_struct_fields_match_schema_fields() {
    let trade = serde_json::to_value(sample_trade()).unwrap();
    let quote = serde_json::to_value(sample_quote()).unwrap();
    let names = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let schema_names = |s: &Schema| record(s).fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    // serde_json's map is sorted unless preserve_order is on, so compare sorted.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(names(&trade)), sorted(schema_names(trade_schema())));
    assert_eq!(sorted(names(&quote)), sorted(schema_names(quote_schema())));
    let book = serde_json::to_value(sample_book()).unwrap();
    assert_eq!(sorted(names(&book)), sorted(schema_names(book_schema())));
}

#[test]
fn generic_values_validate_against_the_schemas() {
    let t = generic::trade_to_value(&sample_trade()).unwrap();
    assert!(t.validate(trade_schema()), "trade value does not validate");
    let q = generic::quote_to_value(&sample_quote()).unwrap();
    assert!(q.validate(quote_schema()), "quote value does not validate");
    let b = generic::book_to_value(&sample_book()).unwrap();
    assert!(b.validate(book_schema()), "book value does not validate");
}

#[test]
fn embedded_schemas_are_the_files_on_disk() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    assert_eq!(std::fs::read_to_string(dir.join("trade_v2.avsc")).unwrap(), k2_core::schema::TRADE_V2_AVSC);
    assert_eq!(std::fs::read_to_string(dir.join("quote_v2.avsc")).unwrap(), k2_core::schema::QUOTE_V2_AVSC);
    assert_eq!(std::fs::read_to_string(dir.join("book_v2.avsc")).unwrap(), k2_core::schema::BOOK_V2_AVSC);
}

fn sample_book() -> k2_core::BookEventV2 {
    let at = k2_core::Timestamp::from_micros(1_722_766_102_789_000);
    let level = |p: i64, q: i64| (rust_decimal::Decimal::new(p, 2), rust_decimal::Decimal::new(q, 3));
    k2_core::BookEventV2 {
        message_id: k2_core::BookEventV2::id("BINANCE", "BTCUSDT", BookEventKind::Update, (160, 162), None, at),
        symbol: "BTCUSDT".into(),
        exchange: "BINANCE".into(),
        asset_class: AssetClass::Crypto,
        kind: BookEventKind::Update,
        timestamp: at,
        first_update_id: 160,
        final_update_id: 162,
        bids: vec![level(6_400_012, 1_500), level(6_400_011, 0)],
        asks: vec![level(6_400_013, 250)],
        depth: None,
        cause: None,
        ingestion_timestamp: at,
        platform_sequence: Some(7),
        is_sample_data: false,
    }
}

fn sample_trade() -> k2_core::TradeV2 {
    let frame = br#"{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.5","q":"2","T":1,"m":false,"M":true}"#;
    match k2_core::source::binance::BinanceParser::default().parse(frame, k2_core::Timestamp::from_micros(1)).unwrap() {
        k2_core::source::binance::Frame::Event(k2_core::MarketEvent::Trade(t)) => t,
        other => panic!("{other:?}"),
    }
}

fn sample_quote() -> k2_core::QuoteV2 {
    let frame = br#"{"u":5,"s":"BTCUSDT","b":"1.5","B":"2","a":"0","A":"0"}"#;
    match k2_core::source::binance::BinanceParser::default().parse(frame, k2_core::Timestamp::from_micros(1)).unwrap() {
        k2_core::source::binance::Frame::Event(k2_core::MarketEvent::Quote(q)) => q,
        other => panic!("{other:?}"),
    }
}
