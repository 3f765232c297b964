//! Circuit breakers, one per dependency (Kafka, the Iceberg catalog, ...):
//! closed → open after `failures` failures within `window` → half-open
//! after `cool_down` → closed after `successes` successes in a row (a failure
//! while half-open opens it again). A caller that meets an error no retry
//! can fix trips it open at once ([`CircuitBreaker::trip`]) with the error
//! as its cause, which `/health` shows until the breaker closes. State is
//! exported as
//! `k2_circuit_breaker_state{dependency}` (0 closed, 1 open, 2 half-open) and
//! in `/health`. Callers report outcomes; what to do while a breaker is open
//! is theirs (and the degradation ladder's) to decide.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::runtime::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: VecDeque<Instant>,
    opened_at: Instant,
    successes: u32,
    /// Why it was tripped open, until it closes again.
    cause: Option<String>,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    dependency: &'static str,
    policy: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(dependency: &'static str, policy: BreakerConfig) -> Self {
        metrics::gauge!("k2_circuit_breaker_state", "dependency" => dependency).set(0.0);
        Self {
            dependency,
            policy,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: VecDeque::new(),
                opened_at: Instant::now(),
                successes: 0,
                cause: None,
            }),
        }
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    pub fn success(&self) {
        self.success_at(Instant::now());
    }

    pub fn failure(&self) {
        self.failure_at(Instant::now());
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// Opens the breaker now, whatever its state and failure count: `cause`
    /// is an error retrying cannot fix, so waiting for `failures` of it
    /// would only repeat it. A probe goes through after the cool-down.
    pub fn trip(&self, cause: &str) {
        self.trip_at(Instant::now(), cause);
    }

    /// Why the breaker was tripped, while it is not closed.
    pub fn cause(&self) -> Option<String> {
        self.lock_at(Instant::now()).cause.clone()
    }

    /// How long until an open breaker lets a probe through (zero when it is
    /// not open).
    pub fn open_for(&self) -> Duration {
        self.open_for_at(Instant::now())
    }

    pub fn trip_at(&self, now: Instant, cause: &str) {
        let mut s = self.lock_at(now);
        s.opened_at = now;
        s.cause = Some(cause.to_owned());
        self.set(&mut s, BreakerState::Open);
    }

    pub fn open_for_at(&self, now: Instant) -> Duration {
        let s = self.lock_at(now);
        match s.state {
            BreakerState::Open => self.policy.cool_down.saturating_sub(now.saturating_duration_since(s.opened_at)),
            BreakerState::Closed | BreakerState::HalfOpen => Duration::ZERO,
        }
    }

    pub fn success_at(&self, now: Instant) {
        let mut s = self.lock_at(now);
        if s.state == BreakerState::HalfOpen {
            s.successes += 1;
            if s.successes >= self.policy.successes {
                s.failures.clear();
                s.cause = None;
                self.set(&mut s, BreakerState::Closed);
            }
        }
    }

    pub fn failure_at(&self, now: Instant) {
        let mut s = self.lock_at(now);
        match s.state {
            BreakerState::Closed => {
                s.failures.push_back(now);
                while s.failures.front().is_some_and(|t| now.duration_since(*t) > self.policy.window) {
                    s.failures.pop_front();
                }
                if s.failures.len() as u32 >= self.policy.failures {
                    s.opened_at = now;
                    self.set(&mut s, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => {
                s.opened_at = now;
                self.set(&mut s, BreakerState::Open);
            }
            BreakerState::Open => s.opened_at = now,
        }
    }

    pub fn state_at(&self, now: Instant) -> BreakerState {
        self.lock_at(now).state
    }

    /// The lock, with an open breaker whose cool-down has passed moved to
    /// half-open first.
    fn lock_at(&self, now: Instant) -> std::sync::MutexGuard<'_, Inner> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if s.state == BreakerState::Open && now.saturating_duration_since(s.opened_at) >= self.policy.cool_down {
            s.successes = 0;
            self.set(&mut s, BreakerState::HalfOpen);
        }
        s
    }

    fn set(&self, s: &mut Inner, state: BreakerState) {
        if s.state != state {
            tracing::warn!(dependency = self.dependency, from = ?s.state, to = ?state, "circuit breaker");
            metrics::counter!("k2_circuit_breaker_transitions_total", "dependency" => self.dependency).increment(1);
        }
        s.state = state;
        metrics::gauge!("k2_circuit_breaker_state", "dependency" => self.dependency).set(state.gauge());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new("test", BreakerConfig::new(3, Duration::from_secs(10), Duration::from_secs(5), 2))
    }

    #[test]
    fn opens_after_failures_within_the_window_only() {
        let b = breaker();
        let t = Instant::now();
        b.failure_at(t);
        b.failure_at(t + Duration::from_secs(11));
        b.failure_at(t + Duration::from_secs(12));
        assert_eq!(
            b.state_at(t + Duration::from_secs(12)),
            BreakerState::Closed,
            "the first failure has left the window"
        );
        b.failure_at(t + Duration::from_secs(13));
        assert_eq!(b.state_at(t + Duration::from_secs(13)), BreakerState::Open);
    }

    #[test]
    fn half_opens_after_the_cool_down_and_closes_after_successes() {
        let b = breaker();
        let t = Instant::now();
        for i in 0..3 {
            b.failure_at(t + Duration::from_millis(i));
        }
        assert_eq!(b.state_at(t + Duration::from_secs(4)), BreakerState::Open);
        assert_eq!(b.state_at(t + Duration::from_secs(6)), BreakerState::HalfOpen);
        // A failure while half-open opens it again, with a new cool-down.
        b.failure_at(t + Duration::from_secs(6));
        assert_eq!(b.state_at(t + Duration::from_secs(10)), BreakerState::Open);
        assert_eq!(b.state_at(t + Duration::from_secs(11)), BreakerState::HalfOpen);
        b.success_at(t + Duration::from_secs(11));
        assert_eq!(b.state_at(t + Duration::from_secs(11)), BreakerState::HalfOpen);
        b.success_at(t + Duration::from_secs(12));
        assert_eq!(b.state_at(t + Duration::from_secs(12)), BreakerState::Closed);
        // Closed again with a clean slate.
        b.failure_at(t + Duration::from_secs(13));
        assert_eq!(b.state_at(t + Duration::from_secs(13)), BreakerState::Closed);
    }

    #[test]
    fn a_trip_opens_at_once_with_its_cause_until_the_breaker_closes() {
        let b = breaker();
        let t = Instant::now();
        b.trip_at(t, "read-only file system");
        assert_eq!(b.state_at(t), BreakerState::Open, "one trip is enough");
        assert_eq!(b.cause().as_deref(), Some("read-only file system"));
        assert_eq!(b.open_for_at(t + Duration::from_secs(2)), Duration::from_secs(3));
        assert_eq!(b.open_for_at(t + Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(b.state_at(t + Duration::from_secs(5)), BreakerState::HalfOpen);
        // The probe fails for the same reason: open again, a new cool-down.
        b.trip_at(t + Duration::from_secs(5), "read-only file system");
        assert_eq!(b.open_for_at(t + Duration::from_secs(6)), Duration::from_secs(4));
        assert_eq!(b.state_at(t + Duration::from_secs(10)), BreakerState::HalfOpen);
        assert!(b.cause().is_some(), "half-open still says why it opened");
        b.success_at(t + Duration::from_secs(10));
        b.success_at(t + Duration::from_secs(10));
        assert_eq!(b.state_at(t + Duration::from_secs(10)), BreakerState::Closed);
        assert_eq!(b.cause(), None);
    }
}
