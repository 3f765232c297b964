//! The fast Avro codec against itself and against apache-avro, over random
//! valid events (proptest), plus the wire format's error cases.

mod common;

use k2_core::codec::{DecodeError, EncodeError, SchemaIds, WireCodec, datum, generic};
use k2_core::model::decimal::DecimalFault;
use k2_core::{MarketEvent, TradeV2};
use proptest::prelude::*;
use rust_decimal::Decimal;

const IDS: SchemaIds = SchemaIds { trade: 11, quote: 12 };

fn vendor_len(e: &MarketEvent) -> usize {
    let v = match e {
        MarketEvent::Trade(t) => &t.vendor_data,
        MarketEvent::Quote(q) => &q.vendor_data,
    };
    v.as_ref().map_or(0, |m| m.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fast_codec_round_trips(event in common::event()) {
        let codec = WireCodec::new(IDS);
        let frame = codec.encode(&event).unwrap();
        prop_assert_eq!(codec.decode(&frame).unwrap(), event);
    }

    #[test]
    fn fast_codec_agrees_with_apache_avro(event in common::event()) {
        let mut fast = Vec::new();
        let (reference, back) = match &event {
            MarketEvent::Trade(t) => {
                datum::encode_trade(t, &mut fast).unwrap();
                (generic::encode_trade(t).unwrap(), MarketEvent::Trade(generic::decode_trade(&fast).unwrap()))
            }
            MarketEvent::Quote(q) => {
                datum::encode_quote(q, &mut fast).unwrap();
                (generic::encode_quote(q).unwrap(), MarketEvent::Quote(generic::decode_quote(&fast).unwrap()))
            }
        };
        // apache-avro reads what the fast codec wrote...
        prop_assert_eq!(&back, &event);
        // ...and the fast codec reads what apache-avro wrote.
        let decoded = match &event {
            MarketEvent::Trade(_) => MarketEvent::Trade(datum::decode_trade(&reference).unwrap()),
            MarketEvent::Quote(_) => MarketEvent::Quote(datum::decode_quote(&reference).unwrap()),
        };
        prop_assert_eq!(&decoded, &event);
        // Byte for byte equal, except that apache-avro writes a map in hash
        // order, so maps of two or more entries may be laid out differently.
        if vendor_len(&event) <= 1 {
            prop_assert_eq!(fast, reference);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_batch_keeps_order_and_every_frame(events in proptest::collection::vec(common::event(), 0..40)) {
        let codec = WireCodec::new(IDS);
        let batch = codec.encode_batch(&events);
        prop_assert!(batch.rejected().is_empty());
        let decoded: Vec<_> = codec.decode_batch(batch.frames()).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(decoded, events);
    }

    #[test]
    fn truncated_frames_are_errors_not_panics(event in common::event(), cut in 0usize..400) {
        let codec = WireCodec::new(IDS);
        let frame = codec.encode(&event).unwrap();
        let cut = cut.min(frame.len().saturating_sub(1));
        prop_assert!(codec.decode(&frame[..cut]).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let codec = WireCodec::new(IDS);
        let mut frame = vec![0, 0, 0, 0, 11];
        frame.extend_from_slice(&bytes);
        let _ = codec.decode(&frame);
    }
}

fn sample_trade() -> TradeV2 {
    let frame = br#"{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}"#;
    match k2_core::source::binance::BinanceParser::default().parse(frame, k2_core::Timestamp::from_micros(1)).unwrap() {
        k2_core::source::binance::Frame::Event(MarketEvent::Trade(t)) => t,
        other => panic!("not a trade: {other:?}"),
    }
}

#[test]
fn frame_header_is_confluent() {
    let codec = WireCodec::new(SchemaIds { trade: 0x01020304, quote: 9 });
    let frame = codec.encode(&MarketEvent::Trade(sample_trade())).unwrap();
    assert_eq!(&frame[..5], &[0, 1, 2, 3, 4]);
}

#[test]
fn wire_errors_are_typed() {
    let codec = WireCodec::new(IDS);
    let good = codec.encode(&MarketEvent::Trade(sample_trade())).unwrap();

    assert_eq!(codec.decode(&good[..3]), Err(DecodeError::FrameTooShort { len: 3 }));
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 1;
    assert_eq!(codec.decode(&wrong_magic), Err(DecodeError::WrongMagic { found: 1 }));
    let mut unknown = good.clone();
    unknown[4] = 99;
    assert_eq!(codec.decode(&unknown), Err(DecodeError::UnknownSchemaId { id: 99 }));
    assert!(matches!(codec.decode(&good[..good.len() - 1]), Err(DecodeError::Truncated { .. })));
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(codec.decode(&trailing), Err(DecodeError::TrailingBytes { count: 1 }));
    // The boolean at the very end must be 0 or 1.
    let mut corrupt = good.clone();
    *corrupt.last_mut().unwrap() = 7;
    assert!(matches!(codec.decode(&corrupt), Err(DecodeError::Corrupt { field: "is_sample_data", .. })));
    // A message id that is not a UUID: overwrite its first character.
    let mut not_uuid = good.clone();
    not_uuid[6] = b'z';
    assert!(matches!(codec.decode(&not_uuid), Err(DecodeError::Corrupt { field: "message_id", .. })));
}

#[test]
fn a_decimal_that_does_not_fit_is_refused_and_the_batch_goes_on() {
    let codec = WireCodec::new(IDS);
    let good = sample_trade();
    let mut too_fine = good.clone();
    too_fine.price = Decimal::new(1, 9); // 0.000000001
    let mut too_big = good.clone();
    too_big.quantity = Decimal::new(10_000_000_000, 0);
    let mut negative = good.clone();
    negative.price = Decimal::new(-1, 0);
    let events: Vec<MarketEvent> = [good.clone(), too_fine, good.clone(), too_big, negative, good.clone()]
        .into_iter()
        .map(MarketEvent::Trade)
        .collect();
    let batch = codec.encode_batch(&events);
    assert_eq!(batch.len(), 3);
    let faults: Vec<(usize, &str, DecimalFault)> = batch
        .rejected()
        .iter()
        .map(|(i, e)| match e {
            EncodeError::Decimal(e) => (*i, e.field, e.fault),
            other => panic!("not a decimal refusal: {other}"),
        })
        .collect();
    assert_eq!(
        faults,
        [
            (1, "price", DecimalFault::TooManyFractionDigits),
            (3, "quantity", DecimalFault::TooManyIntegerDigits),
            (4, "price", DecimalFault::Negative),
        ]
    );
    for frame in batch.frames() {
        assert_eq!(codec.decode(frame).unwrap(), MarketEvent::Trade(good.clone()));
    }
}

#[test]
fn a_decoded_decimal_outside_the_rule_is_refused() {
    // Hand-write a trade whose price bytes hold -1 (0xff): valid Avro, invalid K2.
    let good = sample_trade();
    let mut datum_bytes = Vec::new();
    datum::encode_trade(&good, &mut datum_bytes).unwrap();
    let mut neg = good.clone();
    neg.price = Decimal::ZERO;
    let mut zero_bytes = Vec::new();
    datum::encode_trade(&neg, &mut zero_bytes).unwrap();
    // The zero price is encoded as length 1 (zig-zag 2), byte 0x00; find the
    // first difference from the good encoding and patch that datum.
    let at = zero_bytes.iter().zip(&datum_bytes).position(|(a, b)| a != b).unwrap();
    assert_eq!(zero_bytes[at..at + 2], [2, 0x00]);
    zero_bytes[at + 1] = 0xff;
    match datum::decode_trade(&zero_bytes) {
        Err(DecodeError::Decimal(e)) => assert_eq!((e.field, e.fault), ("price", DecimalFault::Negative)),
        other => panic!("expected a refused decimal, got {other:?}"),
    }
}

#[test]
fn timestamps_other_readers_cannot_hold_are_refused() {
    let codec = WireCodec::new(IDS);
    let mut t = sample_trade();
    t.timestamp = k2_core::Timestamp::from_micros(k2_core::Timestamp::MAX.as_micros() + 1);
    assert_eq!(
        codec.encode(&MarketEvent::Trade(t.clone())),
        Err(EncodeError::TimestampOutOfRange { field: "timestamp", micros: k2_core::Timestamp::MAX.as_micros() + 1 })
    );
    t.timestamp = k2_core::Timestamp::MIN;
    t.ingestion_timestamp = k2_core::Timestamp::from_micros(i64::MIN);
    assert!(matches!(
        codec.encode(&MarketEvent::Trade(t)),
        Err(EncodeError::TimestampOutOfRange { field: "ingestion_timestamp", .. })
    ));
}
