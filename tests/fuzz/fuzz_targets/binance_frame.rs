//! Binance WebSocket frames and REST trade answers, as bytes off the network.

#![no_main]

use k2_core::Timestamp;
use k2_core::source::binance::rest::RestTrade;
use k2_core::source::binance::{BinanceParser, Frame, fast_path_agrees};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A parser per input: its symbol cache must not carry one input's state
    // into the next, or a crash would not reproduce from its file alone.
    let mut parser = BinanceParser::default();
    let received = Timestamp::from_micros(1_722_766_102_790_000);
    if let Ok(Frame::Event(event)) = parser.parse(data, received) {
        k2_fuzz::survives_the_wire(&event);
    }
    if let Err(why) = fast_path_agrees(data) {
        panic!("{why}\nframe: {:?}", String::from_utf8_lossy(data));
    }
    // Gap recovery reads `GET /api/v3/historicalTrades` answers: an array of
    // trades of the symbol it asked for.
    if let Ok(trades) = serde_json::from_slice::<Vec<RestTrade>>(data) {
        for trade in &trades {
            if let Ok(t) = parser.rest_trade("BTCUSDT", trade, received) {
                k2_fuzz::survives_the_wire(&t.into());
            }
        }
    }
});
