//! Plans and runs queries with DataFusion over a consistent view: the
//! committed Iceberg snapshot (pinned) and the tail of rows after it. Every
//! filter value is a typed literal in the plan; no value is ever put into
//! SQL text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono_tz::Tz;
use datafusion::datasource::MemTable;
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, ident, lit};
use datafusion::scalar::ScalarValue;
use futures_util::StreamExt;
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;

use super::QueryError;
use super::aggregate::{Ohlcv, decimal_string};
use super::files::{PageCache, TimeIndexCache};
use super::format::{Decimals, Longs, Strings, Timestamps, column};
use super::params::{AsOf, BarsParams, Cursor, Interval, Pin, ReadParams, Source, SummaryParams, local_midnight};
use crate::lake::TableKind;
use crate::lake::Tails;
use crate::lake::tail::TailView;

/// Rows and what they were read from.
pub struct Rows {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub source: Source,
    pub snapshot_id: Option<i64>,
    pub next_cursor: Option<String>,
}

/// A trading day's summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub symbol: String,
    pub exchange: String,
    pub date: String,
    pub tz: String,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub vwap: Option<String>,
    pub notional: String,
    pub trade_count: u64,
    pub first_trade: String,
    pub last_trade: String,
}

pub struct QueryEngine {
    tails: Tails,
    timezones: BTreeMap<String, Tz>,
    time_index: TimeIndexCache,
    pages: PageCache,
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::Internal(e.to_string())
}

fn bad(parameter: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::BadParameter { parameter, reason: reason.into() }
}

impl QueryEngine {
    pub fn new(tails: Tails, timezones: BTreeMap<String, Tz>) -> Self {
        Self { tails, timezones, time_index: TimeIndexCache::default(), pages: PageCache::default() }
    }

    fn view(&self, kind: TableKind) -> Result<TailView, QueryError> {
        match kind {
            TableKind::Trades => self.tails.trades.view(),
            TableKind::Quotes => self.tails.quotes.view(),
        }
        .map_err(internal)
    }

    fn context() -> SessionContext {
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2).with_batch_size(8192))
    }

    /// The data a pin selects, as one DataFrame.
    async fn frame(
        &self,
        ctx: &SessionContext,
        kind: TableKind,
        pin: Pin,
    ) -> Result<(DataFrame, Option<i64>), QueryError> {
        let view = self.view(kind)?;
        let empty = || -> Result<DataFrame, QueryError> {
            let t = MemTable::try_new(view.schema.clone(), vec![vec![]]).map_err(internal)?;
            ctx.read_table(Arc::new(t)).map_err(internal)
        };
        let (snapshot, with_tail) = resolve(&view, kind, pin)?;
        let hist = match snapshot {
            Some(id) => Some(historical(ctx, &view.table, id).await?),
            None => None,
        };
        let tail = if with_tail {
            // Two partitions: the two cores filter the tail in parallel.
            let t = MemTable::try_new(view.schema.clone(), two_partitions(&view.batches)).map_err(internal)?;
            Some(ctx.read_table(Arc::new(t)).map_err(internal)?)
        } else {
            None
        };
        let df = match (hist, tail) {
            (Some(h), Some(t)) => h.union(t).map_err(internal)?,
            (Some(h), None) => h,
            (None, Some(t)) => t,
            (None, None) => empty()?,
        };
        Ok((df, snapshot))
    }

    /// `/v1/trades` and `/v1/quotes`: filtered, ordered by (timestamp,
    /// message_id), one keyset page.
    ///
    /// The page is the first `limit` rows of the union of the pinned snapshot
    /// and the tail, so it is the first `limit` of (the snapshot's first
    /// `limit`) ∪ (the tail's first `limit`). The snapshot's part changes only
    /// with a commit and is cached per snapshot; the tail's part is computed
    /// every time, so the page is exact while rows arrive.
    pub async fn read(&self, kind: TableKind, p: ReadParams) -> Result<Rows, QueryError> {
        let view = self.view(kind)?;
        let (snapshot_id, with_tail) = resolve(&view, kind, p.pin)?;
        let schema = view.schema.clone();
        let mut parts: Vec<RecordBatch> = Vec::new();
        if let Some(id) = snapshot_id {
            let c = p.cursor.as_ref().map(Cursor::encode);
            let key = format!(
                "{}/{id}/{:?}/{:?}/{:?}/{:?}/{}/{c:?}",
                kind.name(),
                p.symbol,
                p.exchange,
                p.start,
                p.end,
                p.limit
            );
            let hist = match self.pages.get(&key) {
                Some(hit) => hit,
                None => {
                    let page = Arc::new(self.read_snapshot(&view.table, id, &p).await?);
                    self.pages.put(key, page.clone());
                    page
                }
            };
            parts.extend(hist.iter().cloned());
        }
        // Tail segments that cannot hold a row of the page are skipped by
        // their time span: before the lower bound, from the end on, or after
        // the last row of a full page from the snapshot.
        let lower = p.cursor.as_ref().map(|c| c.timestamp).max(p.start).unwrap_or(i64::MIN);
        let upper = p.end.unwrap_or(i64::MAX);
        let full_page_last = if parts.iter().map(RecordBatch::num_rows).sum::<usize>() == p.limit {
            last_timestamp(&parts)?
        } else {
            None
        };
        let tail: Vec<RecordBatch> = view
            .batches
            .iter()
            .zip(&view.spans)
            .filter(|(b, (lo, hi))| {
                b.num_rows() > 0 && *hi >= lower && *lo < upper && full_page_last.is_none_or(|last| *lo <= last)
            })
            .map(|(b, _)| b.clone())
            .collect();
        if with_tail && !tail.is_empty() {
            let ctx = Self::context();
            let t = MemTable::try_new(schema.clone(), two_partitions(&tail)).map_err(internal)?;
            let df = ctx.read_table(Arc::new(t)).map_err(internal)?;
            parts.extend(first_page(filtered(df, &p)?, p.limit)?.collect().await.map_err(internal)?);
        }
        let batches = vec![merge_first(&schema, &parts, p.limit)?];
        let rows = batches[0].num_rows();
        let next_cursor = if rows == p.limit { last_cursor(&batches)? } else { None };
        Ok(Rows { schema, batches, source: p.pin.source, snapshot_id, next_cursor })
    }

    /// One snapshot's first page. Rather than sort everything after the
    /// lower bound, this tries growing windows [.., end) taken from the data
    /// files' time spans: when a window already holds `limit` rows, every row
    /// outside it sorts after them, so they are the page. Only the files
    /// overlapping a window are read.
    async fn read_snapshot(&self, table: &Table, id: i64, p: &ReadParams) -> Result<Vec<RecordBatch>, QueryError> {
        let ctx = Self::context();
        let df = filtered(historical(&ctx, table, id).await?, p)?;
        let tz = timestamp_tz(df.schema().as_arrow());
        let from = p.cursor.as_ref().map(|c| c.timestamp).max(p.start);
        for end in self.time_index.get(table, id).await?.window_ends(from, p.end) {
            let window =
                df.clone().filter(ident("timestamp").lt(lit(ScalarValue::TimestampMicrosecond(Some(end), tz.clone()))));
            let batches = first_page(window.map_err(internal)?, p.limit)?.collect().await.map_err(internal)?;
            if batches.iter().map(RecordBatch::num_rows).sum::<usize>() == p.limit {
                return Ok(batches);
            }
        }
        first_page(df, p.limit)?.collect().await.map_err(internal)
    }

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
            first_trade: super::format::timestamp_string(a.first_timestamp()),
            last_trade: super::format::timestamp_string(a.last_timestamp()),
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

    /// `/v1/symbols`: every (exchange, symbol) with trade and quote counts and
    /// the time range covered.
    pub async fn symbols(&self, pin: Pin) -> Result<Rows, QueryError> {
        let mut out: BTreeMap<(String, String), (i64, i64, i64, i64)> = BTreeMap::new();
        let mut snapshot_id = None;
        for kind in TableKind::ALL {
            let ctx = Self::context();
            let (df, snap) = self.frame(&ctx, kind, pin).await?;
            if kind == TableKind::Trades {
                snapshot_id = snap;
            }
            let df = df
                .aggregate(
                    vec![col("exchange"), col("symbol")],
                    vec![
                        count(lit(1)).alias("n"),
                        min(ident("timestamp")).alias("first"),
                        max(ident("timestamp")).alias("last"),
                    ],
                )
                .map_err(internal)?;
            for batch in df.collect().await.map_err(internal)? {
                let ex = column::<Strings>(&batch, "exchange").map_err(internal)?;
                let sy = column::<Strings>(&batch, "symbol").map_err(internal)?;
                let n = column::<Longs>(&batch, "n").map_err(internal)?;
                let first = column::<Timestamps>(&batch, "first").map_err(internal)?;
                let last = column::<Timestamps>(&batch, "last").map_err(internal)?;
                for i in 0..batch.num_rows() {
                    let e = out.entry((ex.value(i).to_owned(), sy.value(i).to_owned())).or_insert((
                        0,
                        0,
                        i64::MAX,
                        i64::MIN,
                    ));
                    match kind {
                        TableKind::Trades => e.0 += n.value(i),
                        TableKind::Quotes => e.1 += n.value(i),
                    }
                    e.2 = e.2.min(first.value(i));
                    e.3 = e.3.max(last.value(i));
                }
            }
        }
        let utc: Option<Arc<str>> = Some("+00:00".into());
        let schema = Arc::new(Schema::new(vec![
            Field::new("exchange", DataType::Utf8, false),
            Field::new("symbol", DataType::Utf8, false),
            Field::new("trades", DataType::Int64, false),
            Field::new("quotes", DataType::Int64, false),
            Field::new("first_timestamp", DataType::Timestamp(TimeUnit::Microsecond, utc.clone()), false),
            Field::new("last_timestamp", DataType::Timestamp(TimeUnit::Microsecond, utc.clone()), false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(out.keys().map(|k| k.0.as_str()))),
            Arc::new(StringArray::from_iter_values(out.keys().map(|k| k.1.as_str()))),
            Arc::new(Int64Array::from_iter_values(out.values().map(|v| v.0))),
            Arc::new(Int64Array::from_iter_values(out.values().map(|v| v.1))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(out.values().map(|v| v.2)).with_timezone_opt(utc.clone()),
            ),
            Arc::new(TimestampMicrosecondArray::from_iter_values(out.values().map(|v| v.3)).with_timezone_opt(utc)),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(internal)?;
        Ok(Rows { schema, batches: vec![batch], source: pin.source, snapshot_id, next_cursor: None })
    }

    /// Message ids ingested at or after `since` (epoch µs), oldest first, from
    /// both tables (committed and tail): what the deduplicator must remember
    /// after a restart.
    pub async fn ingested_since(&self, since: i64) -> Result<Vec<uuid::Uuid>, QueryError> {
        let mut out: Vec<(i64, uuid::Uuid)> = Vec::new();
        for kind in TableKind::ALL {
            let ctx = Self::context();
            let pin = Pin { source: Source::Hybrid, as_of: None };
            let (df, _) = self.frame(&ctx, kind, pin).await?;
            let tz = timestamp_tz(df.schema().as_arrow());
            let df = df
                .filter(ident("ingestion_timestamp").gt_eq(lit(ScalarValue::TimestampMicrosecond(Some(since), tz))))
                .and_then(|d| d.select_columns(&["ingestion_timestamp", "message_id"]))
                .map_err(internal)?;
            let mut stream = df.execute_stream().await.map_err(internal)?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(internal)?;
                let at = column::<Timestamps>(&batch, "ingestion_timestamp").map_err(internal)?;
                let ids = column::<Strings>(&batch, "message_id").map_err(internal)?;
                for i in 0..batch.num_rows() {
                    let id = uuid::Uuid::parse_str(ids.value(i)).map_err(internal)?;
                    out.push((at.value(i), id));
                }
            }
        }
        out.sort_unstable();
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }

    /// `/v1/snapshots`: the table's snapshots, oldest first.
    pub fn snapshots(&self, kind: TableKind) -> Vec<serde_json::Value> {
        let table = match kind {
            TableKind::Trades => self.tails.trades.committed_table(),
            TableKind::Quotes => self.tails.quotes.committed_table(),
        };
        let mut snaps: Vec<_> = table.metadata().snapshots().cloned().collect();
        snaps.sort_by_key(|s| s.sequence_number());
        snaps
            .iter()
            .map(|s| {
                let summary = s.summary();
                let added = summary.additional_properties.get("added-records").and_then(|v| v.parse::<u64>().ok());
                serde_json::json!({
                    "snapshot_id": s.snapshot_id(),
                    "parent_id": s.parent_snapshot_id(),
                    "sequence_number": s.sequence_number(),
                    "timestamp": super::format::timestamp_string(s.timestamp_ms().saturating_mul(1000)),
                    "operation": format!("{:?}", summary.operation).to_lowercase(),
                    "rows_added": added,
                    "summary": summary.additional_properties,
                })
            })
            .collect()
    }
}

async fn historical(ctx: &SessionContext, table: &Table, snapshot: i64) -> Result<DataFrame, QueryError> {
    let provider =
        IcebergStaticTableProvider::try_new_from_table_snapshot(table.clone(), snapshot).await.map_err(internal)?;
    ctx.read_table(Arc::new(provider)).map_err(internal)
}

/// What a pin reads: the snapshot (if any) and whether the tail too.
fn resolve(view: &TailView, kind: TableKind, pin: Pin) -> Result<(Option<i64>, bool), QueryError> {
    Ok(match (pin.as_of, pin.source) {
        (Some(as_of), _) => (Some(pinned_snapshot(&view.table, kind, as_of)?), false),
        (None, Source::Realtime) => (None, true),
        (None, Source::Historical) => (view.snapshot_id, false),
        (None, Source::Hybrid) => (view.snapshot_id, true),
    })
}

fn pinned_snapshot(table: &Table, kind: TableKind, as_of: AsOf) -> Result<i64, QueryError> {
    let md = table.metadata();
    match as_of {
        AsOf::Snapshot(id) => md
            .snapshot_by_id(id)
            .map(|s| s.snapshot_id())
            .ok_or_else(|| bad("as_of_snapshot", format!("table {} has no snapshot {id}", kind.name()))),
        AsOf::Time(micros) => md
            .snapshots()
            .filter(|s| s.timestamp_ms().saturating_mul(1000) <= micros)
            .max_by_key(|s| (s.timestamp_ms(), s.sequence_number()))
            .map(|s| s.snapshot_id())
            .ok_or_else(|| bad("as_of", format!("is before the first snapshot of table {}", kind.name()))),
    }
}

fn timestamp_tz(schema: &Schema) -> Option<Arc<str>> {
    match schema.field_with_name("timestamp").map(|f| f.data_type()) {
        Ok(DataType::Timestamp(_, tz)) => tz.clone(),
        _ => None,
    }
}

fn last_cursor(batches: &[RecordBatch]) -> Result<Option<String>, QueryError> {
    let Some(last) = batches.iter().rev().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let i = last.num_rows() - 1;
    let ts = column::<Timestamps>(last, "timestamp").map_err(internal)?.value(i);
    let id = column::<Strings>(last, "message_id").map_err(internal)?.value(i);
    Ok(Some(Cursor { timestamp: ts, message_id: id.to_owned() }.encode()))
}

fn bars_batch(
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

/// The read endpoints' filters, as typed expressions.
fn filtered(df: DataFrame, p: &ReadParams) -> Result<DataFrame, QueryError> {
    let tz = timestamp_tz(df.schema().as_arrow());
    let ts = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), tz.clone()));
    let mut filters: Vec<Expr> = Vec::new();
    if let Some(s) = &p.symbol {
        filters.push(col("symbol").eq(lit(s.as_str())));
    }
    if let Some(e) = &p.exchange {
        filters.push(col("exchange").eq(lit(e.as_str())));
    }
    if let Some(s) = p.start {
        filters.push(ident("timestamp").gt_eq(ts(s)));
    }
    if let Some(e) = p.end {
        filters.push(ident("timestamp").lt(ts(e)));
    }
    if let Some(c) = &p.cursor {
        filters.push(
            ident("timestamp")
                .gt(ts(c.timestamp))
                .or(ident("timestamp").eq(ts(c.timestamp)).and(col("message_id").gt(lit(c.message_id.as_str())))),
        );
    }
    match filters.into_iter().reduce(Expr::and) {
        Some(f) => df.filter(f).map_err(internal),
        None => Ok(df),
    }
}

/// The first `limit` rows in (timestamp, message_id) order.
fn first_page(df: DataFrame, limit: usize) -> Result<DataFrame, QueryError> {
    df.sort(vec![ident("timestamp").sort(true, false), col("message_id").sort(true, false)])
        .and_then(|d| d.limit(0, Some(limit)))
        .map_err(internal)
}

/// The first `limit` rows of several pages, each already in order.
fn merge_first(schema: &SchemaRef, parts: &[RecordBatch], limit: usize) -> Result<RecordBatch, QueryError> {
    let all = arrow::compute::concat_batches(schema, parts).map_err(internal)?;
    if all.num_rows() == 0 {
        return Ok(all);
    }
    let keys = [
        arrow::compute::SortColumn {
            values: all.column_by_name("timestamp").cloned().ok_or_else(|| internal("no timestamp column"))?,
            options: None,
        },
        arrow::compute::SortColumn {
            values: all.column_by_name("message_id").cloned().ok_or_else(|| internal("no message_id column"))?,
            options: None,
        },
    ];
    let order = arrow::compute::lexsort_to_indices(&keys, Some(limit)).map_err(internal)?;
    arrow::compute::take_record_batch(&all, &order).map_err(internal)
}

/// The timestamp of the last row of a page.
fn last_timestamp(batches: &[RecordBatch]) -> Result<Option<i64>, QueryError> {
    let Some(last) = batches.iter().rev().find(|b| b.num_rows() > 0) else { return Ok(None) };
    Ok(Some(column::<Timestamps>(last, "timestamp").map_err(internal)?.value(last.num_rows() - 1)))
}

fn two_partitions(batches: &[RecordBatch]) -> Vec<Vec<RecordBatch>> {
    let mut parts = vec![Vec::new(), Vec::new()];
    for (i, b) in batches.iter().enumerate() {
        parts[i % 2].push(b.clone());
    }
    parts
}
