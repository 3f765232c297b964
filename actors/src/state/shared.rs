//! Dedup and sequence state in Redis, shared by every K2 instance that names
//! the same `redis.url`: a restarted or second instance drops what another
//! already took and continues gap detection where it left off.
//!
//! Nothing here may run ahead of durability, or a crash loses data: an id
//! claimed by an instance that dies before its copy is durable would be
//! dropped by everyone else, and a high-water mark raised past rows that
//! were only in memory would hide them from gap recovery. So:
//!
//! - Dedup claims: `k2:dedup:{exchange}:{message_id}` holds the claiming
//!   instance's id while its copy is in flight and `d` once it is durable
//!   ([`SharedState::settle`]), for the dedup window. A batch answers, per
//!   id: mine (claimed now, or taken over from an instance whose liveness
//!   key `k2:alive:{instance}` has expired), taken (durable elsewhere, or
//!   already mine: a duplicate), or pending (a live instance holds it; the
//!   caller waits and asks again). One pipelined round trip of
//!   `SET … NX GET` settles all but the ids another instance holds; those
//!   go to a script that checks the owner's liveness atomically.
//! - Sequences: hash `k2:seq:{exchange}`, field = symbol, value = the highest
//!   source sequence that is durable, raised (never lowered) by a script at
//!   settlement, so a restart sees a gap over whatever a crash lost.
//!
//! Every call goes through the Redis circuit breaker and a timeout. When
//! Redis is down (or its breaker open) callers fall back to their in-memory
//! state: `None` here. The fallback is logged once per outage and shown as
//! `k2_state_fallback{store="redis"}`; settlements made meanwhile are kept
//! and written when Redis answers again.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use compact_str::CompactString;
use k2_core::MarketEvent;
use redis::aio::ConnectionManager;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::runtime::breaker::{BreakerState, CircuitBreaker};
use crate::runtime::config::RedisConfig;
use crate::state::marks::SequenceMarks;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is unavailable (circuit breaker open)")]
    Unavailable,
}

/// Raises each field of hash KEYS[1] to the value after it in ARGV, never
/// lowering one: two instances may write in any order.
const RAISE: &str = r"
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0";

/// KEYS[1]: the caller's liveness key, renewed here; KEYS[2..]: dedup keys.
/// ARGV: instance id, lease ms, window ms, liveness key prefix. Answers 1
/// (mine), 0 (taken) or 2 (pending with a live owner) per dedup key.
const CLAIM: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local out = {}
for i = 2, #KEYS do
  -- A new id, the common case, costs one call; GET only when it is not.
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[3]) then
    out[i - 1] = 1
  else
    local v = redis.call('GET', KEYS[i])
    if v == 'd' or v == ARGV[1] then
      out[i - 1] = 0
    elseif v and redis.call('EXISTS', ARGV[4] .. v) == 1 then
      out[i - 1] = 2
    elseif v then
      redis.call('SET', KEYS[i], ARGV[1], 'KEEPTTL')
      out[i - 1] = 1
    else
      -- Gone since the SET (an eviction): claim it afresh.
      redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3])
      out[i - 1] = 1
    end
  end
end
return out";

/// KEYS: dedup keys; ARGV[1]: instance id. Deletes each key that this
/// instance still holds (not durable, not taken over); answers how many.
const RELEASE: &str = r"
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n";

/// What Redis says about one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This instance owns it now.
    Mine,
    /// Durable elsewhere, or already this instance's: a duplicate.
    Taken,
    /// A live instance holds it and has not made it durable yet: ask again
    /// later (it may die before it does).
    Pending,
}

/// What became durable: the ids whose claims become final and the highest
/// source sequence per stream.
#[derive(Debug, Default)]
pub struct Settlement {
    ids: Vec<(CompactString, uuid::Uuid)>,
    marks: SequenceMarks,
}

impl Settlement {
    pub fn of(events: &[MarketEvent]) -> Self {
        let mut s = Self { ids: Vec::with_capacity(events.len()), marks: SequenceMarks::default() };
        for e in events {
            s.add(e);
        }
        s
    }

    pub fn add(&mut self, event: &MarketEvent) {
        self.ids.push((event.exchange().into(), event.message_id()));
        if let MarketEvent::Trade(t) = event
            && t.source_sequence.is_some()
        {
            self.marks.raise(&t.exchange, &t.symbol, t.source_sequence, None);
        }
    }

    pub fn push_id(&mut self, exchange: &str, id: uuid::Uuid) {
        self.ids.push((exchange.into(), id));
    }

    pub fn raise_marks(&mut self, marks: &SequenceMarks) {
        for ((exchange, symbol), m) in &marks.0 {
            if m.source_sequence.is_some() {
                self.marks.raise(exchange, symbol, m.source_sequence, None);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.marks.0.is_empty()
    }

    /// Takes `other` in: its ids after these, its marks merged.
    fn absorb(&mut self, other: Settlement) {
        self.ids.extend(other.ids);
        self.marks.merge(&other.marks);
    }
}

const NX_GET_UNKNOWN: u8 = 0;
const NX_GET_YES: u8 = 1;
const NX_GET_NO: u8 = 2;

/// Settlements kept while Redis is away: past this many ids the oldest are
/// forgotten (another instance then waits for their owner's lease to run out
/// and takes them over, which may double them; it cannot lose them). Marks
/// are always kept.
const UNSETTLED_MAX_IDS: usize = 1_000_000;

pub struct SharedState {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    breaker: Arc<CircuitBreaker>,
    timeout: Duration,
    window_ms: u64,
    lease: Duration,
    prefix: String,
    /// This process's claims carry this id.
    instance: String,
    claim: redis::Script,
    release: redis::Script,
    /// Whether Redis takes `SET … NX GET`: unknown, yes or no.
    nx_get: AtomicU8,
    falling_back: AtomicBool,
    heartbeat: AtomicBool,
    /// Settlements Redis has not taken yet, merged; written by one task at a
    /// time.
    unsettled: std::sync::Mutex<Settlement>,
    settling: AtomicBool,
}

impl SharedState {
    /// A handle on `config.url`; connects on first use (and again after an
    /// outage), so a Redis that is down at start only means a fallback.
    pub fn new(config: &RedisConfig, window: Duration, breaker: Arc<CircuitBreaker>) -> Result<Arc<Self>, StateError> {
        Ok(Arc::new(Self {
            client: redis::Client::open(config.url.as_str())?,
            conn: Mutex::new(None),
            breaker,
            timeout: config.timeout,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            lease: config.lease.max(Duration::from_millis(30)),
            prefix: config.key_prefix.clone(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            nx_get: AtomicU8::new(NX_GET_UNKNOWN),
            falling_back: AtomicBool::new(false),
            heartbeat: AtomicBool::new(false),
            unsettled: std::sync::Mutex::new(Settlement::default()),
            settling: AtomicBool::new(false),
        }))
    }

    async fn connection(&self) -> Result<ConnectionManager, StateError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made =
            tokio::time::timeout(self.timeout * 2, ConnectionManager::new_with_config(self.client.clone(), config))
                .await
                .map_err(|_| StateError::Timeout(self.timeout * 2))??;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// Runs `call` unless the breaker is open, feeding the breaker and the
    /// fallback signal with the outcome.
    async fn guarded<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, StateError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        if self.breaker.state() == BreakerState::Open {
            self.fell_back(what, &StateError::Unavailable);
            return Err(StateError::Unavailable);
        }
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(self.timeout, call(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(StateError::Redis(e)),
                Err(_) => Err(StateError::Timeout(self.timeout)),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) => {
                self.breaker.success();
                if self.falling_back.swap(false, Ordering::AcqRel) {
                    tracing::info!("redis answers again: shared dedup and sequence state resumed");
                    metrics::gauge!("k2_state_fallback", "store" => "redis").set(0.0);
                }
            }
            Err(e) => {
                self.breaker.failure();
                self.fell_back(what, e);
            }
        }
        result
    }

    fn fell_back(&self, what: &'static str, error: &StateError) {
        metrics::counter!("k2_state_fallback_batches_total", "store" => "redis", "state" => what).increment(1);
        if !self.falling_back.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %error, "redis unavailable: dedup and sequence state fall back to this instance's memory");
            metrics::gauge!("k2_state_fallback", "store" => "redis").set(1.0);
        }
    }

    /// Whether the last call fell back to memory.
    pub fn is_falling_back(&self) -> bool {
        self.falling_back.load(Ordering::Acquire)
    }

    fn dedup_key(&self, key: &mut String, exchange: &str, id: uuid::Uuid) {
        let mut uuid_buf = uuid::Uuid::encode_buffer();
        key.clear();
        key.push_str(&self.prefix);
        key.push_str("dedup:");
        key.push_str(exchange);
        key.push(':');
        key.push_str(id.hyphenated().encode_lower(&mut uuid_buf));
    }

    fn alive_prefix(&self) -> String {
        format!("{}alive:", self.prefix)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Renews this instance's liveness key for one lease.
    fn liveness(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{}", self.alive_prefix(), self.instance)).arg(1).arg("PX").arg(self.lease_ms());
        cmd
    }

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
    async fn set_nx_get(&self) -> Result<bool, StateError> {
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
    async fn claim_scripted(self: &Arc<Self>, ids: &[(&str, uuid::Uuid)]) -> Result<Vec<Claim>, StateError> {
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
    fn keep_alive(self: &Arc<Self>) {
        if self.heartbeat.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.lease / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                let renew = me.liveness();
                let _ =
                    me.guarded("liveness", |mut conn| async move { renew.query_async::<()>(&mut conn).await }).await;
            }
        });
    }

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

    /// Ids in pipelines of at most this many commands: a commit may settle
    /// hundreds of thousands, and one reply that large would hold Redis.
    const SETTLE_CHUNK: usize = 10_000;

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
