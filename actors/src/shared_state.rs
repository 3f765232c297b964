//! Dedup and sequence state in Redis, shared by every K2 instance that names
//! the same `redis.url`: a restarted or second instance drops what another
//! already took and continues gap detection where it left off.
//!
//! - Dedup: `SET k2:dedup:{exchange}:{message_id} 1 NX PX {window}`, one
//!   pipelined round trip per batch; the instance whose SET succeeds owns the
//!   event.
//! - Sequences: hash `k2:seq:{exchange}`, field = symbol, value = the highest
//!   source sequence seen, raised (never lowered) by a script, one round trip
//!   per batch.
//!
//! Every call goes through the Redis circuit breaker and a timeout. When
//! Redis is down (or its breaker open) callers fall back to their in-memory
//! state: `None` here. The fallback is logged once per outage and shown as
//! `k2_state_fallback{store="redis"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::config::RedisConfig;
use crate::lake::summary::Sources;

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

pub struct SharedState {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    breaker: Arc<CircuitBreaker>,
    timeout: Duration,
    window_ms: u64,
    prefix: String,
    falling_back: AtomicBool,
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
            prefix: config.key_prefix.clone(),
            falling_back: AtomicBool::new(false),
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

    /// Claims each id for this instance: true when it was not seen within the
    /// window (by any instance). One round trip.
    pub async fn claim(&self, ids: &[(&str, uuid::Uuid)]) -> Result<Vec<bool>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let mut key = String::with_capacity(self.prefix.len() + 64);
        let mut uuid_buf = uuid::Uuid::encode_buffer();
        for (exchange, id) in ids {
            key.clear();
            key.push_str(&self.prefix);
            key.push_str("dedup:");
            key.push_str(exchange);
            key.push(':');
            key.push_str(id.hyphenated().encode_lower(&mut uuid_buf));
            pipe.cmd("SET").arg(&key).arg(1).arg("NX").arg("PX").arg(self.window_ms);
        }
        let answers: Vec<Option<String>> =
            self.guarded("dedup", |mut conn| async move { pipe.query_async(&mut conn).await }).await?;
        Ok(answers.into_iter().map(|a| a.is_some()).collect())
    }

    /// Raises the stored high-water marks to `marks` (exchange, symbol,
    /// source sequence). One round trip.
    pub async fn raise_marks(&self, marks: &[(String, String, i64)]) -> Result<(), StateError> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut by_exchange: Vec<(&str, Vec<String>)> = Vec::new();
        for (exchange, symbol, high) in marks {
            let at = match by_exchange.iter().position(|(e, _)| e == exchange) {
                Some(i) => i,
                None => {
                    by_exchange.push((exchange, Vec::new()));
                    by_exchange.len() - 1
                }
            };
            by_exchange[at].1.push(symbol.clone());
            by_exchange[at].1.push(high.to_string());
        }
        let mut pipe = redis::pipe();
        for (exchange, args) in &by_exchange {
            // A pipeline cannot fall back from EVALSHA to EVAL, so the script
            // goes whole (it is short).
            pipe.cmd("EVAL").arg(RAISE).arg(1).arg(format!("{}seq:{exchange}", self.prefix)).arg(args);
        }
        self.guarded("sequence", |mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await
    }

    /// Every stored high-water mark, merged into `into` (the higher wins).
    pub async fn restore_into(&self, into: &mut Sources) -> Result<usize, StateError> {
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
