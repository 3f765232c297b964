//! The stages between the sources and the sinks, each a supervised actor
//! over a pure state machine of `k2-core`:
//!
//! - [`sequencer`]: per-stream sequence tracking, gap detection, the
//!   degradation ladder's shedding at the first stage.
//! - [`dedup`]: the dedup window (in memory, or shared through Redis).
//!
//! [`Entrance`] is where every source sends its batches.

pub mod dedup;
pub mod sequencer;

use actix::MailboxError;
use k2_core::MarketEvent;

use crate::runtime::health::Link;
use crate::runtime::messages::{Drain, EventBatch};
use sequencer::SequenceActor;

/// The pipeline's way in: the first stage, with back-pressure (a send waits
/// while its mailbox is full).
#[derive(Clone)]
pub struct Entrance {
    link: Link<SequenceActor>,
    batch_size: usize,
}

impl Entrance {
    pub fn new(link: Link<SequenceActor>, batch_size: usize) -> Self {
        Self { link, batch_size }
    }

    /// Sends a batch in, waiting while the first stage is full.
    pub async fn send(&self, events: Vec<MarketEvent>) -> Result<(), MailboxError> {
        self.link.send(EventBatch { events }).await
    }

    /// Returns once everything sent before has reached the sink.
    pub async fn drain(&self) -> Result<(), MailboxError> {
        self.drain_with(None).await
    }

    /// As [`Entrance::drain`], and at a stop: events held for another
    /// instance's claims go on once settled, or at `settle` at the latest.
    pub async fn drain_with(&self, settle: Option<std::time::Instant>) -> Result<(), MailboxError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.link.send(Drain { done, settle }).await?;
        rx.await.map_err(|_| MailboxError::Closed)
    }

    /// The first stage's link, for sources that send themselves.
    pub fn link(&self) -> &Link<SequenceActor> {
        &self.link
    }

    /// Most events per batch, as configured.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}
