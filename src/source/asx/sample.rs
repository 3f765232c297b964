//! The headerless ASX sample format, one file per company:
//! trades `Date,Time,Price,Volume,Qualifiers,Venue,BuyerID` and
//! quotes `Date,Time,Bid,Ask,BidVolume,AskVolume`, dates MM/DD/YYYY and times
//! in exchange-local time.

use chrono::Datelike;
use chrono::NaiveDate;
use compact_str::{CompactString, format_compact};

use super::clock::{LocalClock, parse_time, parse_us_date};
use super::{CURRENCY, EXCHANGE};
use crate::model::decimal;
use crate::model::ids::{EventKind, message_id};
use crate::model::{AssetClass, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData};
use crate::source::book_side;

/// Parses the lines of one company's sample file.
#[derive(Debug)]
pub struct SampleParser {
    company_id: CompactString,
    symbol: CompactString,
    clock: LocalClock,
    is_sample_data: bool,
    /// Last date seen and its `YYYYMMDD` form, reused for the ids.
    day: Option<(NaiveDate, CompactString)>,
}

impl SampleParser {
    pub fn new(company_id: &str, symbol: &str, clock: LocalClock, is_sample_data: bool) -> Self {
        Self { company_id: company_id.into(), symbol: symbol.into(), clock, is_sample_data, day: None }
    }

    /// One trade line (`line_no` counts from 1). The error is the reason only;
    /// the caller knows the file and line.
    pub fn trade(&mut self, line: &str, line_no: u64, ingested: Timestamp) -> Result<TradeV2, String> {
        let mut f = line.split(',');
        let (date, time, price, volume, qualifiers, venue) = (
            next(&mut f, "Date")?,
            next(&mut f, "Time")?,
            next(&mut f, "Price")?,
            next(&mut f, "Volume")?,
            next(&mut f, "Qualifiers")?,
            next(&mut f, "Venue")?,
        );
        let buyer = f.next().unwrap_or("");
        if f.next().is_some() {
            return Err("more than 7 fields".into());
        }
        let (timestamp, day) = self.when(date, time)?;
        let price = decimal::parse("price", price).map_err(|e| e.to_string())?;
        let quantity = decimal::parse("quantity", volume).map_err(|e| e.to_string())?;
        let venue_id = format_compact!("{}-{}-{}", self.company_id, day, line_no);

        let mut vendor = VendorData::with_capacity(4);
        vendor.insert("company_id", self.company_id.clone());
        if !qualifiers.is_empty() {
            vendor.insert("qualifiers", qualifiers);
        }
        if !venue.is_empty() {
            vendor.insert("venue", venue);
        }
        if !buyer.is_empty() {
            vendor.insert("buyer_id", buyer);
        }
        Ok(TradeV2 {
            message_id: message_id(EXCHANGE, &self.symbol, EventKind::Trade, &venue_id),
            trade_id: format_compact!("{EXCHANGE}-{venue_id}"),
            symbol: self.symbol.clone(),
            exchange: CompactString::const_new(EXCHANGE),
            asset_class: AssetClass::Equities,
            timestamp,
            price,
            quantity,
            currency: CompactString::const_new(CURRENCY),
            // The files do not say who the aggressor was.
            side: TradeSide::Unknown,
            trade_conditions: Vec::new(),
            source_sequence: Some(line_no as i64),
            ingestion_timestamp: ingested,
            platform_sequence: None,
            vendor_data: Some(vendor),
            is_sample_data: self.is_sample_data,
        })
    }

    /// One quote line (`line_no` counts from 1).
    pub fn quote(&mut self, line: &str, line_no: u64, ingested: Timestamp) -> Result<QuoteV2, String> {
        let mut f = line.split(',');
        let (date, time, bid, ask, bid_vol, ask_vol) = (
            next(&mut f, "Date")?,
            next(&mut f, "Time")?,
            next(&mut f, "Bid")?,
            next(&mut f, "Ask")?,
            next(&mut f, "BidVolume")?,
            next(&mut f, "AskVolume")?,
        );
        if f.next().is_some() {
            return Err("more than 6 fields".into());
        }
        let (timestamp, day) = self.when(date, time)?;
        let (bid_price, bid_quantity) =
            book_side(("bid_price", bid), ("bid_quantity", bid_vol)).map_err(|e| e.to_string())?;
        let (ask_price, ask_quantity) =
            book_side(("ask_price", ask), ("ask_quantity", ask_vol)).map_err(|e| e.to_string())?;
        let venue_id = format_compact!("{}-{}-{}", self.company_id, day, line_no);
        let mut vendor = VendorData::with_capacity(1);
        vendor.insert("company_id", self.company_id.clone());
        Ok(QuoteV2 {
            message_id: message_id(EXCHANGE, &self.symbol, EventKind::Quote, &venue_id),
            quote_id: format_compact!("{EXCHANGE}-{venue_id}"),
            symbol: self.symbol.clone(),
            exchange: CompactString::const_new(EXCHANGE),
            asset_class: AssetClass::Equities,
            timestamp,
            bid_price,
            bid_quantity,
            ask_price,
            ask_quantity,
            currency: CompactString::const_new(CURRENCY),
            source_sequence: Some(line_no as i64),
            ingestion_timestamp: ingested,
            platform_sequence: None,
            vendor_data: Some(vendor),
            is_sample_data: self.is_sample_data,
        })
    }

    /// The UTC instant of a local date and time, and the date as `YYYYMMDD`.
    fn when(&mut self, date: &str, time: &str) -> Result<(Timestamp, CompactString), String> {
        let date = parse_us_date(date)?;
        let time = parse_time(time)?;
        let ts = self.clock.to_utc(date.and_time(time))?;
        let day = match &self.day {
            Some((d, text)) if *d == date => text.clone(),
            _ => {
                let text = format_compact!("{:04}{:02}{:02}", date.year(), date.month(), date.day());
                self.day = Some((date, text.clone()));
                text
            }
        };
        Ok((ts, day))
    }
}

fn next<'a>(fields: &mut std::str::Split<'a, char>, name: &str) -> Result<&'a str, String> {
    fields.next().ok_or_else(|| format!("missing field {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Australia::Sydney;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn parser() -> SampleParser {
        SampleParser::new("7078", "BHP", LocalClock::new(Sydney), true)
    }

    #[test]
    fn trade_line_to_v2() {
        let t = parser().trade("03/10/2014,10:00:01.250,36.667,20000,3,X,", 5, Timestamp::from_micros(1)).unwrap();
        assert_eq!(t.symbol, "BHP");
        assert_eq!(t.trade_id, "ASX-7078-20140310-5");
        assert_eq!(t.timestamp.to_string(), "2014-03-09T23:00:01.250000Z");
        assert_eq!(t.price, Decimal::from_str("36.667").unwrap());
        assert_eq!(t.quantity, Decimal::from(20000));
        assert_eq!(t.currency, "AUD");
        assert_eq!(t.side, TradeSide::Unknown);
        assert_eq!(t.source_sequence, Some(5));
        let v = t.vendor_data.as_ref().unwrap();
        assert_eq!(
            (v.get("company_id"), v.get("qualifiers"), v.get("venue"), v.get("buyer_id")),
            (Some("7078"), Some("3"), Some("X"), None)
        );
        // Same line, same id: a second load is caught by dedup.
        let again = parser().trade("03/10/2014,10:00:01.250,36.667,20000,3,X,", 5, Timestamp::from_micros(2)).unwrap();
        assert_eq!(t.message_id, again.message_id);
    }

    #[test]
    fn quote_with_empty_side_is_null() {
        let q = parser().quote("03/10/2014,05:43:45.676,37.7,0.0,300,0", 1, Timestamp::from_micros(1)).unwrap();
        assert_eq!(q.bid_price, Some(Decimal::from_str("37.7").unwrap()));
        assert_eq!(q.bid_quantity, Some(Decimal::from(300)));
        assert_eq!((q.ask_price, q.ask_quantity), (None, None));
    }

    #[test]
    fn bad_lines_name_their_problem() {
        let mut p = parser();
        let now = Timestamp::from_micros(1);
        assert!(p.trade("03/10/2014,10:00:01.250,36.667", 1, now).unwrap_err().contains("Volume"));
        assert!(p.trade("03/10/2014,10:00:01.250,-36.667,1,3,X,", 1, now).unwrap_err().contains("price"));
        assert!(p.trade("2014-03-10,10:00:01.250,36.667,1,3,X,", 1, now).unwrap_err().contains("MM/DD/YYYY"));
        assert!(p.quote("03/10/2014,05:43:45.676,0.0,37.7,300,5", 1, now).unwrap_err().contains("bid_price is 0"));
    }
}
