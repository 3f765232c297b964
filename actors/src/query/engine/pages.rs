//! `/v1/trades` and `/v1/quotes` pages: the first `limit` rows of (pinned
//! snapshot ∪ tail), keyset-ordered by (timestamp, message_id).

use super::*;

impl QueryEngine {
    /// `/v1/trades` and `/v1/quotes`: filtered, ordered by (timestamp,
    /// message_id), one keyset page.
    ///
    /// The page is the first `limit` rows of the union of the pinned snapshot
    /// and the tail, so it is the first `limit` of (the snapshot's first
    /// `limit`) ∪ (the tail's first `limit`). The snapshot's part changes only
    /// with a commit and is cached per snapshot; the tail's part is computed
    /// every time, so the page is exact while rows arrive.
    pub async fn read(&self, kind: TableKind, p: ReadParams) -> Result<Rows, QueryError> {
        let view = self.view(kind).await?;
        let (snapshot_id, with_tail) = resolve(&view, kind, p.pin, &self.tails.pins)?;
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
        let after =
            if with_tail { self.after(kind, &view, false).await? } else { After { batches: vec![], spans: vec![] } };
        let tail: Vec<RecordBatch> = after
            .batches
            .iter()
            .zip(&after.spans)
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

    /// Every row of `symbol` in `kind` with a timestamp in `[from, until)`
    /// as the hybrid view holds it now (the snapshot and the rows after
    /// it), in (timestamp, message_id) order; `None` when there are more
    /// than `limit`. What a replay reads, a span of time at a time: spans
    /// that partition the time range read each row once, without the
    /// overlapping re-reads of keyset pages.
    pub async fn read_span(
        &self,
        kind: TableKind,
        symbol: &str,
        (from, until): (i64, i64),
        limit: usize,
    ) -> Result<Option<Vec<RecordBatch>>, QueryError> {
        let ctx = Self::context();
        let pin = Pin { source: Source::Hybrid, as_of: None };
        let (df, _) = self.frame(&ctx, kind, pin).await?;
        let p = ReadParams {
            symbol: Some(symbol.to_owned()),
            exchange: None,
            start: Some(from),
            end: Some(until),
            limit,
            cursor: None,
            pin,
        };
        // Read as it comes and sorted here: the span is wanted whole, so a
        // sort with a limit (a heap of `limit` rows) would only cost more;
        // the read stops as soon as it passes `limit`.
        let mut stream = filtered(df, &p)?.execute_stream().await.map_err(internal)?;
        let (mut parts, mut rows) = (Vec::new(), 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(internal)?;
            rows += batch.num_rows();
            if rows > limit {
                return Ok(None);
            }
            parts.push(batch);
        }
        match parts.first() {
            Some(first) => Ok(Some(vec![merge_first(&first.schema(), &parts, rows)?])),
            None => Ok(Some(parts)),
        }
    }

    /// Where spans of `kind` over `[from, until)` may end: just past each
    /// data file's last timestamp in the current snapshot (a hint: any
    /// partition of the range reads every row once).
    pub async fn span_ends(&self, kind: TableKind, (from, until): (i64, i64)) -> Result<Vec<i64>, QueryError> {
        let view = self.view(kind).await?;
        let pin = Pin { source: Source::Hybrid, as_of: None };
        let (snapshot, _) = resolve(&view, kind, pin, &self.tails.pins)?;
        match snapshot {
            Some(id) => Ok(self.time_index.get(&view.table, id).await?.ends(from, until)),
            None => Ok(Vec::new()),
        }
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
}

/// The read endpoints' filters, as typed expressions.
pub(super) fn filtered(df: DataFrame, p: &ReadParams) -> Result<DataFrame, QueryError> {
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
pub(super) fn first_page(df: DataFrame, limit: usize) -> Result<DataFrame, QueryError> {
    df.sort(vec![ident("timestamp").sort(true, false), col("message_id").sort(true, false)])
        .and_then(|d| d.limit(0, Some(limit)))
        .map_err(internal)
}

/// The first `limit` rows of several pages, each already in order.
pub(super) fn merge_first(schema: &SchemaRef, parts: &[RecordBatch], limit: usize) -> Result<RecordBatch, QueryError> {
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

pub(super) fn last_cursor(batches: &[RecordBatch]) -> Result<Option<String>, QueryError> {
    let Some(last) = batches.iter().rev().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let i = last.num_rows() - 1;
    let ts = column::<Timestamps>(last, "timestamp").map_err(internal)?.value(i);
    let id = column::<Strings>(last, "message_id").map_err(internal)?.value(i);
    Ok(Some(Cursor { timestamp: ts, message_id: id.to_owned() }.encode()))
}

/// The timestamp of the last row of a page.
pub(super) fn last_timestamp(batches: &[RecordBatch]) -> Result<Option<i64>, QueryError> {
    let Some(last) = batches.iter().rev().find(|b| b.num_rows() > 0) else { return Ok(None) };
    Ok(Some(column::<Timestamps>(last, "timestamp").map_err(internal)?.value(last.num_rows() - 1)))
}

pub(super) fn two_partitions(batches: &[RecordBatch]) -> Vec<Vec<RecordBatch>> {
    let mut parts = vec![Vec::new(), Vec::new()];
    for (i, b) in batches.iter().enumerate() {
        parts[i % 2].push(b.clone());
    }
    parts
}
