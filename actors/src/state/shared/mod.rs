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

mod claims;
mod durable;
mod scripts;
mod settlement;

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
use crate::runtime::health::{ActorState, Probe};
use crate::state::marks::SequenceMarks;
use scripts::{CLAIM, RAISE, RELEASE};
pub use settlement::Settlement;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is unavailable (circuit breaker open)")]
    Unavailable,
}

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
    /// The liveness renewal's probe in the health registry, when the
    /// service gave one.
    liveness_probe: std::sync::OnceLock<Probe>,
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
            liveness_probe: std::sync::OnceLock::new(),
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

    /// Ids in pipelines of at most this many commands: a commit may settle
    /// hundreds of thousands, and one reply that large would hold Redis.
    const SETTLE_CHUNK: usize = 10_000;
}

impl SharedState {
    /// Shows the liveness renewal in `/health` and `k2_actor_*` as
    /// `redis-liveness`: its last renewal, its failures and its restarts.
    pub fn watch_liveness(&self, probe: Probe) {
        probe.set_state(ActorState::Running);
        let _ = self.liveness_probe.set(probe);
    }
}
