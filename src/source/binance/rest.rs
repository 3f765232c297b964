//! Binance REST trades (`GET /api/v3/historicalTrades`) → v2 trades, for gap
//! recovery. The same trade gets the same message id as from the WebSocket,
//! so a recovered trade that did arrive after all is a duplicate, not a twin.

use serde::Deserialize;

use super::{BinanceError, BinanceParser, Fields, bool_str};
use crate::model::decimal;
use crate::model::{Timestamp, TradeV2, VendorData};

/// One element of the historicalTrades answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestTrade {
    pub id: u64,
    pub price: String,
    pub qty: String,
    #[serde(default)]
    pub quote_qty: Option<String>,
    pub time: i64,
    pub is_buyer_maker: bool,
    #[serde(default)]
    pub is_best_match: Option<bool>,
}

impl BinanceParser {
    /// A REST trade of `symbol` as a v2 trade, received at `received`.
    pub fn rest_trade(&mut self, symbol: &str, t: &RestTrade, received: Timestamp) -> Result<TradeV2, BinanceError> {
        let (symbol, currency) = self.symbol(symbol)?;
        let sequence = i64::try_from(t.id).map_err(|_| super::invalid("id", t.id))?;
        let timestamp = Timestamp::from_millis(t.time).ok_or_else(|| super::invalid("time", t.time))?;
        let mut vendor = VendorData::with_capacity(4);
        if let Some(best) = t.is_best_match {
            vendor.insert("is_best_match", bool_str(best));
        }
        vendor.insert("is_buyer_maker", bool_str(t.is_buyer_maker));
        vendor.insert("recovered", "rest");
        vendor.insert("trade_time", itoa::Buffer::new().format(t.time));
        Ok(self.build_trade(Fields {
            symbol,
            currency,
            id: t.id,
            sequence,
            timestamp,
            price: decimal::parse("price", &t.price)?,
            quantity: decimal::parse("quantity", &t.qty)?,
            buyer_is_maker: t.is_buyer_maker,
            vendor,
            received,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MarketEvent;
    use crate::source::binance::Frame;

    #[test]
    fn a_rest_trade_has_the_websocket_trades_id() {
        let mut p = BinanceParser::default();
        let ws = r#"{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}"#;
        let Ok(Frame::Event(MarketEvent::Trade(from_ws))) = p.parse(ws.as_bytes(), Timestamp::from_micros(1)) else {
            panic!()
        };
        let rest: Vec<RestTrade> = serde_json::from_str(
            r#"[{"id":3718209179,"price":"60610.00000000","qty":"0.00154000","quoteQty":"93.339","time":1722766102789,"isBuyerMaker":true,"isBestMatch":true}]"#,
        )
        .unwrap();
        let from_rest = p.rest_trade("BTCUSDT", &rest[0], Timestamp::from_micros(2)).unwrap();
        assert_eq!(from_rest.message_id, from_ws.message_id);
        assert_eq!(
            (from_rest.price, from_rest.quantity, from_rest.side),
            (from_ws.price, from_ws.quantity, from_ws.side)
        );
        assert_eq!((from_rest.timestamp, from_rest.source_sequence), (from_ws.timestamp, from_ws.source_sequence));
    }
}
