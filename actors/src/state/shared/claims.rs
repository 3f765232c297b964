//! Dedup claims: who owns an id while its copy is in flight, liveness,
//! and giving claims up.

use super::*;

impl SharedState {
    /// Claims each id for this instance. One round trip of plain commands
    /// (`SET key me NX GET PX window` answers "claimed" or who holds it);
    /// only ids another instance holds go on to the claim script (a second
    /// round trip), which checks that owner's liveness and takes dead
    /// owners' ids over atomically. A Redis older than 7.0 (no `NX` with
    /// `GET`) gets the script for every id.
    pub async fn claim(self: &Arc<Self>, ids: &[(&str, uuid::Uuid)]) -> Result<Vec<Claim>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.keep_alive();
        if !self.set_nx_get().await? {
            return self.claim_scripted(ids).await;
        }
        let mut pipe = redis::pipe();
        pipe.add_command(self.liveness()).ignore();
        let mut key = String::with_capacity(self.prefix.len() + 64);
        for (exchange, id) in ids {
            self.dedup_key(&mut key, exchange, *id);
            pipe.cmd("SET").arg(key.as_str()).arg(&self.instance).arg("NX").arg("GET").arg("PX").arg(self.window_ms);
        }
        let held: Vec<Option<Vec<u8>>> =
            self.guarded("dedup", |mut conn| async move { pipe.query_async(&mut conn).await }).await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut contested = Vec::new();
        for (i, owner) in held.iter().enumerate() {
            out.push(match owner.as_deref() {
                None => Claim::Mine,
                Some(b"d") => Claim::Taken,
                Some(o) if o == self.instance.as_bytes() => Claim::Taken,
                Some(_) => {
                    contested.push(i);
                    Claim::Pending
                }
            });
        }
        if !contested.is_empty() {
            let again: Vec<(&str, uuid::Uuid)> = contested.iter().filter_map(|&i| ids.get(i).copied()).collect();
            let answers = self.claim_scripted(&again).await?;
            for (&i, answer) in contested.iter().zip(answers) {
                out[i] = answer;
            }
        }
        Ok(out)
    }

    /// Whether this Redis takes `SET … NX GET` (7.0 and later), asked once
    /// it answers. A failure is the batch's: a second call would only fail
    /// again and count twice in the breaker.
    pub(super) async fn set_nx_get(&self) -> Result<bool, StateError> {
        match self.nx_get.load(Ordering::Acquire) {
            NX_GET_YES => return Ok(true),
            NX_GET_NO => return Ok(false),
            _ => {}
        }
        let key = format!("{}probe:{}", self.prefix, self.instance);
        let yes = self
            .guarded("dedup", |mut conn| async move {
                let answer: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await;
                match answer {
                    Ok(_) => Ok(true),
                    // A syntax error: an older server.
                    Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if !yes {
            tracing::info!("redis before 7.0: every dedup claim goes through the claim script");
        }
        self.nx_get.store(if yes { NX_GET_YES } else { NX_GET_NO }, Ordering::Release);
        Ok(yes)
    }

    /// The claim script for each id: one round trip.
    pub(super) async fn claim_scripted(self: &Arc<Self>, ids: &[(&str, uuid::Uuid)]) -> Result<Vec<Claim>, StateError> {
        let alive = self.alive_prefix();
        let mut invocation = self.claim.prepare_invoke();
        invocation.key(format!("{alive}{}", self.instance));
        let mut key = String::with_capacity(self.prefix.len() + 64);
        for (exchange, id) in ids {
            self.dedup_key(&mut key, exchange, *id);
            invocation.key(key.as_str());
        }
        invocation.arg(&self.instance).arg(self.lease_ms()).arg(self.window_ms).arg(&alive);
        let answers: Vec<i64> =
            self.guarded("dedup", |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        Ok(answers
            .into_iter()
            .map(|a| match a {
                1 => Claim::Mine,
                2 => Claim::Pending,
                _ => Claim::Taken,
            })
            .collect())
    }

    /// Renews this instance's liveness every lease/3 while it exists, so
    /// its pending claims stay its own between batches.
    pub(super) fn keep_alive(self: &Arc<Self>) {
        if self.heartbeat.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.lease / 3;
        tokio::spawn(async move {
            // Supervised in place: a panic in one renewal is recorded and the
            // loop goes on, since an instance whose lease lapses while it
            // lives would see its claims taken over.
            loop {
                let round = std::panic::AssertUnwindSafe(renew_while_alive(weak.clone(), every));
                match futures_util::FutureExt::catch_unwind(round).await {
                    Ok(()) => return,
                    Err(panic) => {
                        let why = crate::runtime::supervision::panic_message(panic.as_ref());
                        tracing::error!(reason = %why, "redis liveness renewal panicked; restarting it");
                        if let Some(me) = weak.upgrade()
                            && let Some(probe) = me.liveness_probe.get()
                        {
                            probe.restarted(&format!("panicked: {why}"));
                        }
                        tokio::time::sleep(every.min(Duration::from_secs(1))).await;
                    }
                }
            }
        });
    }

    /// Gives up this instance's claims on records it will not make durable
    /// (the producer could not deliver them), so that another instance
    /// holding the same records as pending takes them at its next look
    /// instead of when the window ends. Off the caller's path, best effort:
    /// when Redis does not answer, the claims stay until this instance dies
    /// (then its lease frees them) or the window ends.
    pub fn release(self: &Arc<Self>, ids: Vec<(CompactString, uuid::Uuid)>) {
        if ids.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.write_release(&ids).await {
                tracing::warn!(error = %e, ids = ids.len(), "claims of undelivered records not released");
            }
        });
    }

    /// Releases `ids` now (what [`SharedState::release`]'s task does);
    /// answers how many this instance still held.
    pub async fn write_release(&self, ids: &[(CompactString, uuid::Uuid)]) -> Result<u64, StateError> {
        let mut released = 0;
        let mut key = String::with_capacity(self.prefix.len() + 64);
        for chunk in ids.chunks(Self::SETTLE_CHUNK) {
            let mut invocation = self.release.prepare_invoke();
            for (exchange, id) in chunk {
                self.dedup_key(&mut key, exchange, *id);
                invocation.key(key.as_str());
            }
            invocation.arg(&self.instance);
            let n: u64 =
                self.guarded("dedup", |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
            released += n;
        }
        metrics::counter!("k2_state_released_ids_total", "store" => "redis").increment(released);
        Ok(released)
    }
}

/// Renews the liveness key every `every` until the state is dropped.
async fn renew_while_alive(weak: Weak<SharedState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(me) = weak.upgrade() else { return };
        let renew = me.liveness();
        let renewed = me.guarded("liveness", |mut conn| async move { renew.query_async::<()>(&mut conn).await }).await;
        if let Some(probe) = me.liveness_probe.get() {
            match renewed {
                Ok(()) => probe.handled(0),
                Err(e) => probe.error(&format!("liveness not renewed: {e}")),
            }
        }
    }
}
