//! What the tables hold: symbols with their counts and spans, the ids
//! ingested since a time (the dedup window's restore), the snapshots, and
//! which snapshot a pin reads.

use std::collections::HashSet;

use k2_core::MarketEvent;

use crate::lake::pins::Pins;

use super::*;

impl QueryEngine {
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
            let (df, _) = self.frame_from(&ctx, kind, pin, true).await?;
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

    /// Which of `events` the tables (or the rows on their way in) already
    /// hold, by message id: a dead-letter replay sends only the others. The
    /// events' time span bounds the scan, so partitions outside it are
    /// skipped.
    pub async fn stored(&self, events: &[MarketEvent]) -> Result<HashSet<uuid::Uuid>, QueryError> {
        let mut found = HashSet::new();
        for kind in TableKind::ALL {
            let of_kind: Vec<&MarketEvent> = events
                .iter()
                .filter(|e| {
                    matches!(
                        (kind, e),
                        (TableKind::Trades, MarketEvent::Trade(_)) | (TableKind::Quotes, MarketEvent::Quote(_))
                    )
                })
                .collect();
            let (Some(from), Some(to)) = (
                of_kind.iter().map(|e| e.timestamp().as_micros()).min(),
                of_kind.iter().map(|e| e.timestamp().as_micros()).max(),
            ) else {
                continue;
            };
            for chunk in of_kind.chunks(1000) {
                let ctx = Self::context();
                let pin = Pin { source: Source::Hybrid, as_of: None };
                let (df, _) = self.frame_from(&ctx, kind, pin, true).await?;
                let tz = timestamp_tz(df.schema().as_arrow());
                let at = |micros: i64| lit(ScalarValue::TimestampMicrosecond(Some(micros), tz.clone()));
                let ids = chunk.iter().map(|e| lit(e.message_id().to_string())).collect();
                let df = df
                    .filter(ident("timestamp").gt_eq(at(from)).and(ident("timestamp").lt_eq(at(to))))
                    .and_then(|d| d.filter(ident("message_id").in_list(ids, false)))
                    .and_then(|d| d.select_columns(&["message_id"]))
                    .map_err(internal)?;
                let mut stream = df.execute_stream().await.map_err(internal)?;
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(internal)?;
                    let ids = column::<Strings>(&batch, "message_id").map_err(internal)?;
                    for i in 0..batch.num_rows() {
                        found.insert(uuid::Uuid::parse_str(ids.value(i)).map_err(internal)?);
                    }
                }
            }
        }
        Ok(found)
    }

    /// `/v1/snapshots`: the table's snapshots, oldest first.
    pub async fn snapshots(&self, kind: TableKind) -> Vec<serde_json::Value> {
        if let Some(follow) = &self.follow {
            follow.catch_up(kind, &self.tails).await;
        }
        let table = match kind {
            TableKind::Trades => self.tails.trades.committed_table(),
            TableKind::Quotes => self.tails.quotes.committed_table(),
        };
        let mut snaps: Vec<_> = table.metadata().snapshots().cloned().collect();
        snaps.sort_by_key(|s| s.sequence_number());
        // K2's larger keys are shown as if inline, read from the state file
        // each names (a file no longer there, after expiry, shows the path).
        let props: Vec<std::collections::HashMap<String, String>> = futures_util::stream::iter(&snaps)
            .map(|s| {
                let table = &table;
                async move {
                    let own = &s.summary().additional_properties;
                    crate::lake::summary_file::read(table, own).await.unwrap_or_else(|_| own.clone())
                }
            })
            .buffered(16)
            .collect()
            .await;
        snaps
            .iter()
            .zip(props)
            .map(|(s, props)| {
                let summary = s.summary();
                let added = summary.additional_properties.get("added-records").and_then(|v| v.parse::<u64>().ok());
                serde_json::json!({
                    "snapshot_id": s.snapshot_id(),
                    "parent_id": s.parent_snapshot_id(),
                    "sequence_number": s.sequence_number(),
                    "timestamp": crate::query::format::timestamp_string(s.timestamp_ms().saturating_mul(1000)),
                    "operation": format!("{:?}", summary.operation).to_lowercase(),
                    "rows_added": added,
                    "summary": props,
                })
            })
            .collect()
    }
}

/// What a pin reads of `kind`: see [`resolve_in`].
pub(super) fn resolve(
    view: &TailView,
    kind: TableKind,
    pin: Pin,
    pins: &Pins,
) -> Result<(Option<i64>, bool), QueryError> {
    resolve_in(&view.table, view.snapshot_id, kind.name(), pin, pins)
}

/// What a pin reads of `table` (named `name`, its snapshot `current`): the
/// snapshot (if any) and whether the rows after it too. The snapshot is
/// noted in `pins`, so that expiry leaves it to the query (and, asked for
/// by time travel, to the next ones).
pub(super) fn resolve_in(
    table: &Table,
    current: Option<i64>,
    name: &'static str,
    pin: Pin,
    pins: &Pins,
) -> Result<(Option<i64>, bool), QueryError> {
    let resolved = match (pin.as_of, pin.source) {
        (Some(as_of), _) => {
            let id = pinned_snapshot(table, name, as_of)?;
            pins.asked(name, id);
            (Some(id), false)
        }
        (None, Source::Realtime) => (None, true),
        (None, Source::Historical) => (current, false),
        (None, Source::Hybrid) => (current, true),
    };
    if let (Some(id), None) = (resolved.0, pin.as_of) {
        pins.read(name, id);
    }
    Ok(resolved)
}

pub(super) fn pinned_snapshot(table: &Table, name: &str, as_of: AsOf) -> Result<i64, QueryError> {
    let md = table.metadata();
    match as_of {
        AsOf::Snapshot(id) => md.snapshot_by_id(id).map(|s| s.snapshot_id()).ok_or_else(|| QueryError::NoSnapshot {
            parameter: "as_of_snapshot",
            reason: format!("table {name} has no snapshot {id}"),
        }),
        AsOf::Time(micros) => md
            .snapshots()
            .filter(|s| s.timestamp_ms().saturating_mul(1000) <= micros)
            .max_by_key(|s| (s.timestamp_ms(), s.sequence_number()))
            .map(|s| s.snapshot_id())
            .ok_or_else(|| QueryError::NoSnapshot {
                parameter: "as_of",
                reason: format!("is before the first snapshot of table {name}"),
            }),
    }
}
