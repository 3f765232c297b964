//! Aggregates over one symbol's trades: the daily summary (in the
//! exchange's trading day) and OHLCV bars.

use super::*;

impl QueryEngine {
    fn zone(&self, exchange: &str, tz: Option<Tz>) -> Tz {
        tz.or_else(|| self.timezones.get(exchange).copied()).unwrap_or(Tz::UTC)
    }

    /// Trades of one symbol in [start, end), streamed through `each`.
    async fn scan_trades(
        &self,
        symbol: &str,
        exchange: Option<&str>,
        (start, end): (i64, i64),
        pin: Pin,
        mut each: impl FnMut(&str, i64, i64, i64, i64) -> Result<(), QueryError>,
    ) -> Result<Option<i64>, QueryError> {
        let ctx = Self::context();
        let (df, snapshot_id) = self.frame(&ctx, TableKind::Trades, pin).await?;
        let tz = timestamp_tz(df.schema().as_arrow());
        let ts = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), tz.clone()));
        let mut f =
            col("symbol").eq(lit(symbol)).and(ident("timestamp").gt_eq(ts(start))).and(ident("timestamp").lt(ts(end)));
        if let Some(e) = exchange {
            f = f.and(col("exchange").eq(lit(e)));
        }
        let df = df
            .filter(f)
            .and_then(|d| {
                d.select_columns(&[
                    "exchange",
                    "timestamp",
                    "price",
                    "quantity",
                    "source_sequence",
                    "platform_sequence",
                ])
            })
            .map_err(internal)?;
        let mut stream = df.execute_stream().await.map_err(internal)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(internal)?;
            let exchanges = column::<Strings>(&batch, "exchange").map_err(internal)?;
            let times = column::<Timestamps>(&batch, "timestamp").map_err(internal)?;
            let prices = column::<Decimals>(&batch, "price").map_err(internal)?;
            let quantities = column::<Decimals>(&batch, "quantity").map_err(internal)?;
            let venue = column::<Longs>(&batch, "source_sequence").map_err(internal)?;
            let platform = column::<Longs>(&batch, "platform_sequence").map_err(internal)?;
            for i in 0..batch.num_rows() {
                // Trades at the same time are in the venue's order (its trade
                // ids: recovered trades have no platform sequence), else in
                // arrival order.
                let ord = if venue.is_valid(i) {
                    venue.value(i)
                } else if platform.is_valid(i) {
                    platform.value(i)
                } else {
                    i64::MAX
                };
                each(exchanges.value(i), times.value(i), ord, prices.value(i) as i64, quantities.value(i) as i64)?;
            }
        }
        Ok(snapshot_id)
    }

    /// `/v1/summary/{symbol}/{date}`: the trading date in the exchange's time
    /// zone, so a session that spans two UTC dates stays whole.
    pub async fn summary(&self, p: SummaryParams) -> Result<(Option<Summary>, Option<i64>), QueryError> {
        let exchange_hint = p.exchange.clone().unwrap_or_default();
        let tz = self.zone(&exchange_hint, p.tz);
        let start = local_midnight(tz, p.date);
        let end = local_midnight(tz, p.date.succ_opt().ok_or_else(|| bad("date", "out of range"))?);
        let mut acc: Option<Ohlcv> = None;
        let mut exchanges: BTreeSet<String> = BTreeSet::new();
        let mut overflow = false;
        // Without an exchange, the zone depends on where the symbol trades:
        // find that first, then summarise with the right zone.
        if p.exchange.is_none() && p.tz.is_none() {
            // ±1 day around the date: wide enough for any time zone.
            let from = local_midnight(Tz::UTC, p.date.pred_opt().unwrap_or(p.date));
            let to = local_midnight(Tz::UTC, p.date.succ_opt().and_then(|d| d.succ_opt()).unwrap_or(p.date));
            let (found, _) = self.exchanges_of(&p.symbol, (from, to), p.pin).await?;
            match found.len() {
                0 => return Ok((None, None)),
                1 => {
                    let only = found.into_iter().next().unwrap_or_default();
                    let p = SummaryParams { exchange: Some(only), ..p };
                    return Box::pin(self.summary(p)).await;
                }
                _ => {
                    return Err(bad(
                        "exchange",
                        format!(
                            "{} trades on several exchanges ({}): name one",
                            p.symbol,
                            Vec::from_iter(found).join(", ")
                        ),
                    ));
                }
            }
        }
        let snapshot = self
            .scan_trades(&p.symbol, p.exchange.as_deref(), (start, end), p.pin, |ex, ts, ord, price, qty| {
                if !exchanges.contains(ex) {
                    exchanges.insert(ex.to_owned());
                }
                match &mut acc {
                    None => acc = Some(Ohlcv::new(ts, ord, price, qty)),
                    Some(a) => overflow |= a.add(ts, ord, price, qty).is_err(),
                }
                Ok(())
            })
            .await?;
        if overflow {
            return Err(internal("volume or notional exceeds 38 digits"));
        }
        if exchanges.len() > 1 {
            return Err(bad("exchange", format!("{} trades on several exchanges: name one", p.symbol)));
        }
        let Some(a) = acc else { return Ok((None, snapshot)) };
        let s = Summary {
            symbol: p.symbol,
            exchange: exchanges.into_iter().next().unwrap_or_default(),
            date: p.date.to_string(),
            tz: tz.name().to_owned(),
            open: decimal_string(a.open() as i128, 8),
            high: decimal_string(a.high as i128, 8),
            low: decimal_string(a.low as i128, 8),
            close: decimal_string(a.close() as i128, 8),
            volume: decimal_string(a.volume, 8),
            vwap: a.vwap().map(|v| decimal_string(v, 8)),
            notional: decimal_string(a.notional, 16),
            trade_count: a.count,
            first_trade: crate::query::format::timestamp_string(a.first_timestamp()),
            last_trade: crate::query::format::timestamp_string(a.last_timestamp()),
        };
        Ok((Some(s), snapshot))
    }

    /// The exchanges a symbol has trades on in [start, end).
    async fn exchanges_of(
        &self,
        symbol: &str,
        (start, end): (i64, i64),
        pin: Pin,
    ) -> Result<(BTreeSet<String>, Option<i64>), QueryError> {
        let mut found = BTreeSet::new();
        let snapshot = self
            .scan_trades(symbol, None, (start, end), pin, |ex, _, _, _, _| {
                if !found.contains(ex) {
                    found.insert(ex.to_owned());
                }
                Ok(())
            })
            .await?;
        Ok((found, snapshot))
    }

    /// `/v1/bars`: OHLCV per interval. Intraday bars are aligned to UTC;
    /// daily bars to midnight in the exchange's time zone.
    pub async fn bars(&self, p: BarsParams) -> Result<Rows, QueryError> {
        // Bars never mix venues; without an exchange the symbol must trade on
        // one (whose time zone then applies).
        let mut p = p;
        if p.exchange.is_none() {
            let (found, _) = self.exchanges_of(&p.symbol, (p.start, p.end), p.pin).await?;
            if found.len() > 1 {
                return Err(bad(
                    "exchange",
                    format!(
                        "{} trades on several exchanges ({}): name one",
                        p.symbol,
                        Vec::from_iter(found).join(", ")
                    ),
                ));
            }
            p.exchange = found.into_iter().next();
        }
        let tz = self.zone(p.exchange.as_deref().unwrap_or_default(), p.tz);
        let width = p.interval.micros();
        let mut buckets: BTreeMap<i64, Ohlcv> = BTreeMap::new();
        let mut overflow = false;
        let mut day_starts: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
        let snapshot_id = self
            .scan_trades(&p.symbol, p.exchange.as_deref(), (p.start, p.end), p.pin, |_, ts, ord, price, qty| {
                let start = if p.interval == Interval::D1 {
                    let date = chrono::DateTime::from_timestamp_micros(ts)
                        .map(|t| t.with_timezone(&tz).date_naive())
                        .unwrap_or_default();
                    *day_starts.entry(date).or_insert_with(|| local_midnight(tz, date))
                } else {
                    ts.div_euclid(width) * width
                };
                match buckets.get_mut(&start) {
                    None => {
                        buckets.insert(start, Ohlcv::new(ts, ord, price, qty));
                    }
                    Some(a) => overflow |= a.add(ts, ord, price, qty).is_err(),
                }
                Ok(())
            })
            .await?;
        if overflow {
            return Err(internal("volume or notional exceeds 38 digits"));
        }
        let batch = bars_batch(&buckets, p.interval, tz, &day_starts).map_err(internal)?;
        Ok(Rows { schema: batch.schema(), batches: vec![batch], source: p.pin.source, snapshot_id, next_cursor: None })
    }
}

pub(super) fn bars_batch(
    buckets: &BTreeMap<i64, Ohlcv>,
    interval: Interval,
    tz: Tz,
    day_starts: &BTreeMap<chrono::NaiveDate, i64>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let utc: Option<Arc<str>> = Some("+00:00".into());
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, utc.clone());
    let schema = Arc::new(Schema::new(vec![
        Field::new("start", ts_type.clone(), false),
        Field::new("end", ts_type, false),
        Field::new("open", DataType::Decimal128(18, 8), false),
        Field::new("high", DataType::Decimal128(18, 8), false),
        Field::new("low", DataType::Decimal128(18, 8), false),
        Field::new("close", DataType::Decimal128(18, 8), false),
        Field::new("volume", DataType::Decimal128(38, 8), false),
        Field::new("vwap", DataType::Decimal128(18, 8), true),
        Field::new("trade_count", DataType::Int64, false),
    ]));
    let ends: Vec<i64> = buckets
        .keys()
        .map(|&start| match interval {
            Interval::D1 => day_starts
                .iter()
                .find(|(_, s)| **s == start)
                .and_then(|(d, _)| d.succ_opt())
                .map(|next| local_midnight(tz, next))
                .unwrap_or(start + interval.micros()),
            _ => start + interval.micros(),
        })
        .collect();
    let dec = |v: Vec<i128>, p: u8| Decimal128Array::from(v).with_precision_and_scale(p, 8);
    let opt_dec = |v: Vec<Option<i128>>| Decimal128Array::from(v).with_precision_and_scale(18, 8);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(buckets.keys().copied()).with_timezone_opt(utc.clone())),
        Arc::new(TimestampMicrosecondArray::from_iter_values(ends).with_timezone_opt(utc)),
        Arc::new(dec(buckets.values().map(|a| a.open() as i128).collect(), 18)?),
        Arc::new(dec(buckets.values().map(|a| a.high as i128).collect(), 18)?),
        Arc::new(dec(buckets.values().map(|a| a.low as i128).collect(), 18)?),
        Arc::new(dec(buckets.values().map(|a| a.close() as i128).collect(), 18)?),
        Arc::new(dec(buckets.values().map(|a| a.volume).collect(), 38)?),
        Arc::new(opt_dec(buckets.values().map(|a| a.vwap()).collect())?),
        Arc::new(Int64Array::from_iter_values(buckets.values().map(|a| a.count as i64))),
    ];
    RecordBatch::try_new(schema, cols)
}
