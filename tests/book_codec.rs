//! The order-book record (schemas/book_v2.avsc): the fast codec against
//! apache-avro over random events, its refusals, and fastavro (a reader K2
//! did not write) decoding K2's bytes to the same values.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use k2_core::codec::{DecodeError, EncodeError, book, generic};
use k2_core::model::decimal::DecimalFault;
use k2_core::{AssetClass, BookEventKind, BookEventV2, Timestamp};
use proptest::prelude::*;
use rust_decimal::Decimal;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_fast_codec_agrees_with_apache_avro_byte_for_byte(event in common::book()) {
        let mut fast = Vec::new();
        book::encode_book(&event, &mut fast).unwrap();
        let reference = generic::encode_book(&event).unwrap();
        prop_assert_eq!(&fast, &reference);
        prop_assert_eq!(book::decode_book(&reference).unwrap(), event.clone());
        prop_assert_eq!(generic::decode_book(&fast).unwrap(), event);
    }

    #[test]
    fn truncated_datums_are_errors_not_panics(event in common::book(), cut in 0usize..600) {
        let mut datum = Vec::new();
        book::encode_book(&event, &mut datum).unwrap();
        if cut < datum.len() {
            prop_assert!(book::decode_book(&datum[..cut]).is_err());
            prop_assert!(generic::decode_book(&datum[..cut]).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = book::decode_book(&bytes);
        let _ = generic::decode_book(&bytes);
    }
}

fn level(price: &str, quantity: &str) -> (Decimal, Decimal) {
    (price.parse().unwrap(), quantity.parse().unwrap())
}

/// A snapshot as K2 records one: Binance's documented example levels.
fn snapshot() -> BookEventV2 {
    let at = Timestamp::from_micros(1_722_766_102_789_123);
    BookEventV2 {
        message_id: BookEventV2::id("BINANCE", "BNBBTC", BookEventKind::Snapshot, (1027024, 1027024), Some("rest"), at),
        symbol: "BNBBTC".into(),
        exchange: "BINANCE".into(),
        asset_class: AssetClass::Crypto,
        kind: BookEventKind::Snapshot,
        timestamp: at,
        first_update_id: 1027024,
        final_update_id: 1027024,
        bids: vec![level("4.00000000", "431.00000000"), level("3.99000000", "0.00000001")],
        asks: vec![level("4.00000200", "12.00000000")],
        depth: Some(5000),
        cause: Some("rest".into()),
        ingestion_timestamp: at,
        platform_sequence: Some(1),
        is_sample_data: false,
    }
}

#[test]
fn a_level_that_does_not_fit_is_refused_and_nothing_is_written() {
    let mut too_fine = snapshot();
    too_fine.asks.push(level("4.000000001", "1"));
    let mut too_big = snapshot();
    too_big.bids[1].1 = Decimal::new(10_000_000_000, 0);
    for (event, field, fault) in
        [(too_fine, "asks", DecimalFault::TooManyFractionDigits), (too_big, "bids", DecimalFault::TooManyIntegerDigits)]
    {
        let mut out = vec![1, 2, 3];
        match book::encode_book(&event, &mut out) {
            Err(EncodeError::Decimal(e)) => assert_eq!((e.field, e.fault), (field, fault)),
            other => panic!("{field}: not refused: {other:?}"),
        }
        assert_eq!(out, [1, 2, 3], "a refused event leaves the buffer as it was");
    }
}

#[test]
fn a_bad_kind_or_trailing_bytes_are_typed_errors() {
    let mut datum = Vec::new();
    book::encode_book(&snapshot(), &mut datum).unwrap();
    let mut longer = datum.clone();
    longer.push(0);
    assert_eq!(book::decode_book(&longer), Err(DecodeError::TrailingBytes { count: 1 }));
    // kind sits after the 36-byte id (and its length), two 6- and 7-byte
    // strings and the asset class: index 4 does not exist.
    let at = 1 + 36 + 1 + 6 + 1 + 7 + 1;
    assert_eq!(datum[at], 2, "snapshot is kind index 1, zig-zag 2");
    datum[at] = 8;
    assert!(matches!(book::decode_book(&datum), Err(DecodeError::Corrupt { field: "kind", .. })));
}

/// Ids are deterministic: a second copy of one venue event gets the same
/// id; a different range, kind or state-change instant does not.
#[test]
fn message_ids_name_the_event() {
    let at = Timestamp::from_micros(5);
    let id = |kind, range, cause, at| BookEventV2::id("BINANCE", "BTCUSDT", kind, range, cause, at);
    let update = id(BookEventKind::Update, (10, 12), None, at);
    assert_eq!(update, id(BookEventKind::Update, (10, 12), None, Timestamp::from_micros(9)));
    assert_ne!(update, id(BookEventKind::Update, (10, 13), None, at));
    assert_ne!(update, BookEventV2::id("BINANCE", "ETHUSDT", BookEventKind::Update, (10, 12), None, at));
    let unsynced = id(BookEventKind::Unsynced, (12, 12), Some("gap"), at);
    assert_ne!(unsynced, id(BookEventKind::Unsynced, (12, 12), Some("gap"), Timestamp::from_micros(6)));
    assert_ne!(unsynced, id(BookEventKind::Unsynced, (12, 12), Some("crossed"), at));
    assert_ne!(unsynced, id(BookEventKind::Synced, (12, 12), Some("gap"), at));
}

/// fastavro reads K2's book frames with only schemas/book_v2.avsc and gets
/// the same values: exact decimals, microseconds, enum symbols, the named
/// level record on both sides.
#[test]
fn fastavro_reads_k2_book_records_with_the_same_values() {
    let mut update = snapshot();
    update.kind = BookEventKind::Update;
    update.first_update_id = 1027025;
    update.final_update_id = 1027030;
    update.bids = vec![level("4.00000000", "0")];
    update.asks = vec![];
    update.depth = None;
    update.cause = None;
    update.platform_sequence = None;
    let mut unsynced = snapshot();
    unsynced.kind = BookEventKind::Unsynced;
    unsynced.bids.clear();
    unsynced.asks.clear();
    unsynced.depth = None;
    unsynced.cause = Some("gap".into());
    let events = [snapshot(), update, unsynced];

    let mut file = tempfile::NamedTempFile::new().unwrap();
    for event in &events {
        let mut frame = vec![0, 0, 0, 0, 9];
        book::encode_book(event, &mut frame).unwrap();
        file.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        file.write_all(&frame).unwrap();
    }
    file.flush().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/python/decode_frames.py"))
        .arg(file.path())
        .arg("--schema")
        .arg(format!("9={}", root.join("schemas/book_v2.avsc").display()))
        .output()
        .expect("python3 runs (python3 -m pip install -r tests/python/requirements.txt)");
    assert!(out.status.success(), "decode_frames.py: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), events.len());
    let levels = |ls: &[(Decimal, Decimal)]| -> serde_json::Value {
        ls.iter().map(|(p, q)| serde_json::json!({"price": format!("{p:.8}"), "quantity": format!("{q:.8}")})).collect()
    };
    for (line, e) in lines.iter().zip(&events) {
        assert_eq!(line["schema"], "com.k2.marketdata.BookEventV2");
        let expected = serde_json::json!({
            "message_id": e.message_id.to_string(),
            "symbol": e.symbol.as_str(),
            "exchange": e.exchange.as_str(),
            "asset_class": e.asset_class.as_str(),
            "kind": e.kind.as_str(),
            "timestamp": e.timestamp.as_micros(),
            "first_update_id": e.first_update_id,
            "final_update_id": e.final_update_id,
            "bids": levels(&e.bids),
            "asks": levels(&e.asks),
            "depth": e.depth,
            "cause": e.cause.as_deref(),
            "ingestion_timestamp": e.ingestion_timestamp.as_micros(),
            "platform_sequence": e.platform_sequence,
            "is_sample_data": e.is_sample_data,
        });
        assert_eq!(line["record"], expected);
    }
}
