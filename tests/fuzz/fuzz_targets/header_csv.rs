//! The original K2's CSV with a header line, trades or quotes.

#![no_main]

use std::path::Path;

use k2_core::source::asx::AsxReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = AsxReader::default();
    let (mut calls, mut events) = (0u64, Vec::new());
    let stats = reader.read_header_from(data, Path::new("trades.csv"), &mut |r| {
        calls += 1;
        if let Ok(e) = r {
            events.push(e);
        }
    });
    // A bad header refuses the whole file; otherwise every record is
    // reported once, as an event or a rejection.
    if let Ok(stats) = stats {
        assert_eq!(stats.events + stats.rejected, calls);
        assert_eq!(stats.events, events.len() as u64);
    }
    for event in &events {
        k2_fuzz::survives_the_wire(event);
    }
});
