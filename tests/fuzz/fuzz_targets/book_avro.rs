//! Order-book datums (schemas/book_v2.avsc) as a consumer of a book topic
//! would read them: the fast decoder, and apache-avro's generic decoder as
//! the reference it must agree with.

#![no_main]

use k2_core::codec::{book, generic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fast = book::decode_book(data);
    // apache-avro on hostile bytes, whatever the fast decoder said.
    let reference = generic::decode_book(data);
    let Ok(event) = fast else {
        return;
    };
    // What the fast decoder accepts, apache-avro reads alike (it is the
    // laxer of the two: it allows trailing bytes).
    match reference {
        Ok(reference) => assert_eq!(reference, event, "apache-avro reads this datum differently"),
        Err(e) => panic!("the fast decoder accepted a datum apache-avro refuses: {e}"),
    }
    // And it goes back out: both encoders write the same bytes, which
    // decode to it.
    let mut again = Vec::new();
    book::encode_book(&event, &mut again).expect("a decoded book record encodes");
    let reference = generic::encode_book(&event).expect("apache-avro encodes a decoded book record");
    assert_eq!(again, reference, "the encoders disagree");
    let back = book::decode_book(&again);
    assert_eq!(back.as_ref().ok(), Some(&event), "the re-encoded record decodes differently: {back:?}");
});
