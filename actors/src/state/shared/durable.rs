//! Settlement: ids become final (`d`) and marks rise once rows are
//! durable; marks are read back at start.

use super::*;

impl SharedState {
    /// Makes `durable` final in Redis: its ids are marked durable (no other
    /// instance takes them over) and its marks raised. Off the caller's path;
    /// what Redis cannot take now is kept and written with the next
    /// settlement.
    pub fn settle(self: &Arc<Self>, durable: Settlement) {
        {
            let mut pending = self.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
            pending.absorb(durable);
            if pending.ids.len() > UNSETTLED_MAX_IDS {
                let excess = pending.ids.len() - UNSETTLED_MAX_IDS;
                pending.ids.drain(..excess);
            }
        }
        if self.settling.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let batch = std::mem::take(&mut *me.unsettled.lock().unwrap_or_else(PoisonError::into_inner));
                if batch.is_empty() {
                    me.settling.store(false, Ordering::Release);
                    // A settlement may have arrived between the take and the
                    // store; whoever sees `settling` false starts the next.
                    let more = !me.unsettled.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
                    if more && !me.settling.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    return;
                }
                if let Err(e) = me.write_settlement(&batch).await {
                    tracing::debug!(error = %e, ids = batch.ids.len(), "settlement kept until redis answers");
                    let mut pending = me.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
                    let newer = std::mem::replace(&mut *pending, batch);
                    pending.absorb(newer);
                    drop(pending);
                    me.settling.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// Waits until every settlement so far is in Redis, at most `within`;
    /// false if some is not (Redis away). A stopping instance calls it:
    /// otherwise its last durable rows would look unsettled, and a restart
    /// would take them over and pass them on twice.
    pub async fn settled(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = !self.settling.load(Ordering::Acquire)
                && self.unsettled.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
            if idle {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes one settlement now (what [`SharedState::settle`]'s task does).
    pub async fn write_settlement(&self, batch: &Settlement) -> Result<(), StateError> {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        for chunk in batch.ids.chunks(Self::SETTLE_CHUNK) {
            let mut pipe = redis::pipe();
            for (exchange, id) in chunk {
                self.dedup_key(&mut key, exchange, *id);
                pipe.cmd("SET").arg(&key).arg("d").arg("XX").arg("KEEPTTL").ignore();
            }
            self.guarded("settle", |mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await?;
            metrics::counter!("k2_state_settled_ids_total", "store" => "redis").increment(chunk.len() as u64);
        }
        let mut by_exchange: Vec<(&str, Vec<String>)> = Vec::new();
        for ((exchange, symbol), m) in &batch.marks.0 {
            let Some(high) = m.source_sequence else { continue };
            let at = match by_exchange.iter().position(|(e, _)| e == exchange) {
                Some(i) => i,
                None => {
                    by_exchange.push((exchange, Vec::new()));
                    by_exchange.len() - 1
                }
            };
            by_exchange[at].1.push(symbol.to_string());
            by_exchange[at].1.push(high.to_string());
        }
        if by_exchange.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (exchange, args) in &by_exchange {
            // A pipeline cannot fall back from EVALSHA to EVAL, so the script
            // goes whole (it is short).
            pipe.cmd("EVAL").arg(RAISE).arg(1).arg(format!("{}seq:{exchange}", self.prefix)).arg(args).ignore();
        }
        self.guarded("sequence", |mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await
    }

    /// Every stored high-water mark, merged into `into` (the higher wins).
    pub async fn restore_into(&self, into: &mut SequenceMarks) -> Result<usize, StateError> {
        let pattern = format!("{}seq:*", self.prefix);
        let prefix_len = self.prefix.len() + "seq:".len();
        let found: Vec<(String, Vec<(String, i64)>)> = self
            .guarded("sequence", |mut conn| async move {
                let mut keys: Vec<String> = Vec::new();
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    let fields: Vec<(String, i64)> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await?;
                    out.push((key, fields));
                }
                Ok(out)
            })
            .await?;
        let mut n = 0;
        for (key, fields) in found {
            let exchange = &key[prefix_len.min(key.len())..];
            for (symbol, high) in fields {
                into.raise(exchange, &symbol, Some(high), None);
                n += 1;
            }
        }
        Ok(n)
    }
}
