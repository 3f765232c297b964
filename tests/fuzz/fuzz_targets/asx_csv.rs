//! The headerless ASX sample files (trades, quotes), their company_info.csv,
//! and the first-line check that tells the formats apart. The first byte
//! picks the file kind and time zone; the rest is the file.

#![no_main]

use std::path::Path;

use k2_core::source::asx::company::CompanyInfo;
use k2_core::source::asx::{AsxFileKind, AsxOptions, AsxReader, SampleKind};
use libfuzzer_sys::fuzz_target;

/// Zones with daylight saving on either hemisphere, none, and a
/// quarter-hour offset, so the clock's per-hour offset cache is tried on
/// each kind of transition.
const ZONES: [chrono_tz::Tz; 4] =
    [chrono_tz::Australia::Sydney, chrono_tz::America::New_York, chrono_tz::UTC, chrono_tz::Pacific::Chatham];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let timezone = ZONES[usize::from(selector >> 4) % ZONES.len()];
    let reader = AsxReader::new(AsxOptions { timezone, ..AsxOptions::default() });
    let (mut calls, mut events) = (0u64, Vec::new());
    let mut on = |r: Result<k2_core::MarketEvent, _>| {
        calls += 1;
        if let Ok(e) = r {
            events.push(e);
        }
    };
    let stats = match selector & 0x3 {
        0 => reader.read_sample_from(file, Path::new("trades/7078.csv"), "7078", "BHP", SampleKind::Trades, &mut on),
        1 => reader.read_sample_from(file, Path::new("quotes/7078.csv"), "7078", "BHP", SampleKind::Quotes, &mut on),
        2 => {
            let _ = CompanyInfo::read_from(file, Path::new("company_info.csv"));
            return;
        }
        _ => {
            let first = String::from_utf8_lossy(file.split(|&b| b == b'\n').next().unwrap_or_default());
            for path in ["trades/7078.csv", "x/7078.csv", "x/data.csv"] {
                let _ = AsxFileKind::from_first_line(Path::new(path), &first);
            }
            return;
        }
    };
    // Reading from memory cannot fail on I/O, and each line is reported once.
    let stats = stats.expect("reading from memory");
    assert_eq!(stats.events + stats.rejected, calls);
    assert_eq!(stats.events, events.len() as u64);
    for event in &events {
        k2_fuzz::survives_the_wire(event);
    }
});
