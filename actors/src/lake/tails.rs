//! Both tables' tails together, with what the flusher, the consumer and the
//! queries share about them: Kafka mode's partition claims, the commit
//! pressure drill, and where durable rows are settled (Redis).

use std::sync::{Arc, OnceLock};

use k2_core::{MarketEvent, QuoteV2, TradeV2};

use super::claims::Claims;
use super::pins::Pins;
use super::pressure::Pressure;
use super::summary::{Offsets, merge_offsets};
use super::tail::Tail;
use super::writing::WritingFiles;
use super::{Lake, LakeError, TableKind};
use crate::runtime::degradation::ShedLedger;
use crate::state::marks::{GivenUp, SequenceMarks};
use crate::state::shared::SharedState;

/// Both tables' tails.
#[derive(Clone)]
pub struct Tails {
    pub trades: Arc<Tail<TradeV2>>,
    pub quotes: Arc<Tail<QuoteV2>>,
    /// Kafka mode: the partitions this process may commit.
    pub claims: Arc<Claims>,
    /// Injected commit delays and failures (drills, tests).
    pub pressure: Arc<Pressure>,
    /// Redis, told what each commit made durable (embedded mode with shared
    /// state; in Kafka mode the producer settles at delivery).
    pub settle: Arc<OnceLock<Arc<SharedState>>>,
    /// What the degradation ladder shed: each flush records its table's
    /// share in the snapshot.
    pub shed: ShedLedger,
    /// Ranges gap recovery gave up on: the next trades flush closes them.
    pub given_up: GivenUp,
    /// The snapshots queries read: expiry keeps them.
    pub pins: Pins,
    /// Data files written and not committed yet: the orphan sweep leaves
    /// them.
    pub writing: WritingFiles,
    /// Held by each commit of this process (flushes, maintenance): a
    /// maintenance snapshot takes far longer to stage than a flush, and would
    /// lose every race to flushes committing every few milliseconds.
    pub commit_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Tails {
    /// Tails continuing after what each table's latest snapshot covers.
    pub async fn open(lake: &Lake) -> Result<Self, LakeError> {
        Ok(Self {
            trades: Arc::new(Tail::new(TableKind::Trades, lake.table(TableKind::Trades).await?).await?),
            quotes: Arc::new(Tail::new(TableKind::Quotes, lake.table(TableKind::Quotes).await?).await?),
            claims: Arc::new(Claims::default()),
            pressure: Arc::new(Pressure::default()),
            settle: Arc::new(OnceLock::new()),
            shed: ShedLedger::default(),
            given_up: GivenUp::default(),
            pins: Pins::default(),
            writing: WritingFiles::default(),
            commit_lock: Arc::default(),
        })
    }

    /// Throws away both tails' uncommitted rows (their partitions were
    /// revoked); returns how many.
    pub fn discard(&self) -> usize {
        self.trades.discard() + self.quotes.discard()
    }

    pub fn waiting_rows(&self) -> usize {
        self.trades.waiting_rows() + self.quotes.waiting_rows()
    }

    /// How long the oldest row not yet committed, of either table, has
    /// waited.
    pub fn oldest_waiting(&self) -> Option<std::time::Duration> {
        self.trades.oldest_waiting().max(self.quotes.oldest_waiting())
    }

    /// Both tables' committed flush generations (trades, quotes): rows
    /// that joined generations up to these are durable.
    pub fn committed_generations(&self) -> (u64, u64) {
        (self.trades.committed_generation(), self.quotes.committed_generation())
    }

    /// What both tables' latest snapshots cover, together: each stream's
    /// marks and each partition's next offset.
    pub fn committed(&self) -> (SequenceMarks, Offsets) {
        let (trades, quotes) = (self.trades.committed_covered(), self.quotes.committed_covered());
        let mut marks = trades.marks;
        marks.merge(&quotes.marks);
        let mut offsets = trades.offsets;
        merge_offsets(&mut offsets, &quotes.offsets);
        (marks, offsets)
    }

    /// Adds events to the tails (rows that cannot become Arrow are reported
    /// by the tail and dropped). Returns, per table, the generation the rows
    /// joined (0 when the table got none): once committed, they are durable.
    pub fn append(&self, events: Vec<MarketEvent>) -> (u64, u64) {
        let (mut trades, mut quotes) = (Vec::new(), Vec::new());
        for e in events {
            match e {
                MarketEvent::Trade(t) => trades.push(t),
                MarketEvent::Quote(q) => quotes.push(q),
            }
        }
        let (has_trades, has_quotes) = (!trades.is_empty(), !quotes.is_empty());
        if let Err(e) = self.trades.append(trades) {
            tracing::error!(error = %e, "rows not taken into the trades tail");
        }
        if let Err(e) = self.quotes.append(quotes) {
            tracing::error!(error = %e, "rows not taken into the quotes tail");
        }
        // Read after the append: at least the generation the rows joined.
        let generation = |has: bool, open: u64| if has { open } else { 0 };
        (generation(has_trades, self.trades.open_generation()), generation(has_quotes, self.quotes.open_generation()))
    }
}
