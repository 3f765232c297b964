//! Confluent frames (magic byte, schema id, Avro datum) as a consumer reads
//! them off a topic: the fast decoder, and apache-avro's generic decoder as
//! the reference it must agree with.

#![no_main]

use k2_core::MarketEvent;
use k2_core::codec::generic;
use k2_core::codec::wire::split_frame;
use k2_core::codec::{DecodeError, WireCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = WireCodec::new(k2_fuzz::IDS);
    let fast = codec.decode(data);
    let Ok((id, datum)) = split_frame(data) else {
        assert!(fast.is_err());
        return;
    };
    // apache-avro on hostile bytes, whatever the fast decoder said.
    let reference = match id {
        1 => Some(generic::decode_trade(datum).map(MarketEvent::from)),
        2 => Some(generic::decode_quote(datum).map(MarketEvent::from)),
        _ => None,
    };
    let Ok(event) = fast else {
        return;
    };
    // What the fast decoder accepts, apache-avro reads alike (it is the
    // laxer of the two: it allows trailing bytes and any timestamp).
    match reference {
        Some(Ok(reference)) => assert_eq!(reference, event, "apache-avro reads this datum differently"),
        Some(Err(e)) => panic!("the fast decoder accepted a datum apache-avro refuses: {e}"),
        None => unreachable!("an unknown schema id decoded"),
    }
    // And it goes back out: the encoder writes it, and that decodes to it.
    let again = codec.encode(&event).expect("a decoded event encodes");
    let back: Result<MarketEvent, DecodeError> = codec.decode(&again);
    assert_eq!(back.as_ref().ok(), Some(&event), "re-encoded event decodes differently: {back:?}");
});
