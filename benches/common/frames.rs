//! Binance trade frames for the benchmarks, shared by `parse` and `codec`.

/// The payload of a real Binance spot trade (BTCUSDT, 2024-08-04), varied by `i`:
/// trade id, event and trade time, price, quantity and maker flag.
pub fn binance_trade_payload(i: usize) -> String {
    let id = 3_718_209_179 + i as u64;
    let trade_time = 1_722_766_102_789 + 7 * i as i64;
    let event_time = trade_time + 1;
    let cents = 6_061_000 + (i * 37) % 20_000;
    let price = format!("{}.{:02}000000", cents / 100, cents % 100);
    let quantity = format!("0.{:08}", 154_000 + (i * 7_919) % 990_000);
    let maker = !i.is_multiple_of(3);
    format!(
        r#"{{"e":"trade","E":{event_time},"s":"BTCUSDT","t":{id},"p":"{price}","q":"{quantity}","T":{trade_time},"m":{maker},"M":true}}"#
    )
}

/// The same payload inside the combined-stream envelope (`/stream?streams=`).
pub fn binance_trade_frame(i: usize) -> String {
    format!(r#"{{"stream":"btcusdt@trade","data":{}}}"#, binance_trade_payload(i))
}
