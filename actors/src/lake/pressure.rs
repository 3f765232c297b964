//! Pressure on demand, for drills, demos and tests: for a while, Iceberg
//! commits are delayed or fail. Set through `POST /admin/pressure` (with
//! `http.admin`, loopback callers only) or in process.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What happens to each commit while the pressure lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The commit waits this long first.
    Delay { millis: u64 },
    /// The commit fails.
    Fail,
}

#[derive(Debug, Default)]
pub struct Pressure {
    until: Mutex<Option<(Instant, Effect)>>,
}

impl Pressure {
    /// Applies `effect` to every commit for `lasting` from now (replacing
    /// any earlier setting); a zero duration clears it.
    pub fn apply(&self, effect: Effect, lasting: Duration) {
        let mut until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *until = (!lasting.is_zero()).then(|| (Instant::now() + lasting, effect));
        tracing::warn!(?effect, ?lasting, "pressure applied to Iceberg commits");
    }

    fn current(&self) -> Option<Effect> {
        let until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        until.filter(|(t, _)| Instant::now() < *t).map(|(_, e)| e)
    }

    /// Called before each commit: waits or fails as set.
    pub async fn before_commit(&self) -> Result<(), String> {
        match self.current() {
            Some(Effect::Delay { millis }) => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok(())
            }
            Some(Effect::Fail) => Err("injected commit failure (pressure drill)".to_owned()),
            None => Ok(()),
        }
    }
}
