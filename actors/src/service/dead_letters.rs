//! Replaying dead letters (`k2 dead-letters replay`): each pending letter's
//! events (a refused frame is parsed again, with today's parser) go through
//! the pipeline from the start, as if they had just arrived, except those
//! whose message ids the tables already hold (a letter replayed before a
//! crash, or trades gap recovery fetched meanwhile): the tables are asked,
//! not the dedup window, which may no longer reach back that far. A letter
//! is marked replayed only once what it sent is durable; a crash before
//! that leaves it pending, and the next replay skips what landed.

use std::time::Duration;

use k2_core::MarketEvent;
use k2_core::source::binance::{BinanceParser, Frame};
use serde::Serialize;
use thiserror::Error;

use super::Service;
use crate::runtime::config::Mode;
use crate::state::dead_letters::{DeadLetterError, Kind, Replayed, Status};

/// How long a replay waits for its rows to be committed.
const DURABLE_WITHIN: Duration = Duration::from_secs(600);

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] DeadLetterError),
    #[error("asking the tables which events they hold: {0}")]
    Query(String),
    #[error("the pipeline is gone: {0}")]
    Pipeline(String),
    #[error("the replayed rows were not committed within {0:?}; the letters stay pending")]
    NotDurable(Duration),
    #[error("the dead-letter task failed: {0}")]
    Task(String),
}

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Pending letters looked at.
    pub letters: usize,
    /// Letters now marked replayed.
    pub replayed: usize,
    /// Events sent into the pipeline again.
    pub sent: u64,
    /// Events left out: the tables already held them.
    pub already_stored: u64,
    /// Frames the parser still refuses, by letter id: they stay pending.
    pub still_refused: Vec<(u64, String)>,
}

impl Service {
    /// Replays the pending dead letters (all, or those in `only`).
    pub async fn replay_dead_letters(&self, only: &[u64]) -> Result<ReplayReport, ReplayError> {
        let store = self.api.dead_letters.clone();
        let (listed, _) = tokio::task::spawn_blocking(move || store.list(Status::Pending, 0, usize::MAX))
            .await
            .map_err(|e| ReplayError::Task(e.to_string()))??;
        let mut report = ReplayReport::default();
        let mut parser = BinanceParser::default().sample_data(self.config.binance.sample_data);
        let mut done = Vec::new();
        for listed in listed.into_iter().filter(|l| only.is_empty() || only.contains(&l.letter.id)) {
            report.letters += 1;
            let letter = listed.letter;
            let events: Vec<MarketEvent> = match letter.kind {
                Kind::Events => letter.events,
                Kind::Frame => {
                    let bytes = letter.frame_bytes().unwrap_or_default();
                    match parser.parse(&bytes, k2_core::Timestamp::from_micros(letter.at)) {
                        Ok(Frame::Event(e)) => vec![e],
                        // A control frame carries no market data.
                        Ok(_) => Vec::new(),
                        Err(e) => {
                            report.still_refused.push((letter.id, e.to_string()));
                            continue;
                        }
                    }
                }
            };
            let stored = self.api.engine.stored(&events).await.map_err(|e| ReplayError::Query(e.to_string()))?;
            let fresh: Vec<MarketEvent> = events.into_iter().filter(|e| !stored.contains(&e.message_id())).collect();
            let sent = fresh.len() as u64;
            for chunk in fresh.chunks(self.config.pipeline.batch_size.max(1)) {
                self.pipeline.send(chunk.to_vec()).await.map_err(|e| ReplayError::Pipeline(e.to_string()))?;
            }
            report.sent += sent;
            report.already_stored += stored.len() as u64;
            done.push(Replayed {
                id: letter.id,
                at: k2_core::Timestamp::now().as_micros(),
                sent,
                already_stored: stored.len() as u64,
            });
        }
        if done.is_empty() {
            return Ok(report);
        }
        self.pipeline.drain().await.map_err(|e| ReplayError::Pipeline(e.to_string()))?;
        self.until_durable().await?;
        report.replayed = done.len();
        let store = self.api.dead_letters.clone();
        tokio::task::spawn_blocking(move || store.mark_replayed(&done))
            .await
            .map_err(|e| ReplayError::Task(e.to_string()))??;
        Ok(report)
    }

    /// Returns once every row the pipeline has passed on so far is durable:
    /// in Kafka mode the drain has waited for the broker's acknowledgements;
    /// in embedded mode a flush of everything accepted is asked for and
    /// waited on (spilled rows are on disk already).
    async fn until_durable(&self) -> Result<(), ReplayError> {
        if self.config.mode == Mode::Kafka {
            return Ok(());
        }
        match tokio::time::timeout(DURABLE_WITHIN, self.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ReplayError::Pipeline(e.to_string())),
            Err(_) => Err(ReplayError::NotDurable(DURABLE_WITHIN)),
        }
    }
}
