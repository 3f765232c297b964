//! The gap recovery actor: fetches the trades of a confirmed gap from the
//! exchange's REST API and feeds them to the deduplicator (a recovered trade
//! that did arrive after all is a duplicate there, not a twin). Requests are
//! bounded in rate and retried a bounded number of times; every trade of a gap
//! ends up counted as recovered or unrecoverable.
//!
//! Besides the gaps the sequencer reports, it looks every few seconds at the
//! open gaps the tables record ([`TableGaps`]) and fetches those nobody is
//! fetching: in Kafka mode a producer killed with gaps pending leaves them in
//! records the table takes only later, after the next producer has started.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;
use compact_str::CompactString;
use k2_core::source::binance::rest::RestTrade;
use k2_core::source::binance::{self, BinanceParser};
use k2_core::{MarketEvent, Timestamp};

use crate::runtime::breaker::{BreakerState, CircuitBreaker};
use crate::runtime::config::{BinanceConfig, GapRecoveryConfig};
use crate::runtime::health::Link;
use crate::runtime::messages::EventBatch;
use crate::runtime::supervision::{Supervise, Supervision, supervised};
use crate::state::marks::{GivenUp, OpenGaps, Ranges, SequenceMarks, StreamKey};
use crate::transforms::dedup::DedupActor;
use crate::transforms::sequencer::GapDetected;

pub const NAME: &str = "gap_recovery";

/// How often the open gaps the tables record are looked at.
const REVISIT: Duration = Duration::from_secs(5);

/// Which of the tables' open gaps somebody is fetching.
#[derive(Debug, Default)]
struct Claims {
    /// Per stream, every number gap recovery was asked to fetch since it
    /// started and the tables do not hold yet.
    asked: BTreeMap<StreamKey, Ranges>,
    /// Open in the tables and not asked for at the last look.
    unclaimed: BTreeMap<StreamKey, Ranges>,
}

impl Claims {
    fn asked(&mut self, stream: &StreamKey, from: i64, to: i64) {
        self.asked.entry(stream.clone()).or_default().union(&Ranges(vec![(from, to)]));
    }

    /// The open gaps the tables record (`marks`, `open`) that gap recovery
    /// was never asked for and that were already open and unasked at the
    /// last look: the orphans to queue (counted as asked from now on).
    ///
    /// Such a gap was seen by another process, or by this one before a
    /// crash: in Kafka mode a producer killed with gaps pending leaves them
    /// in records the table takes only after the next producer has started
    /// (its start re-queues only what the table held then), and if no new
    /// trade comes on that stream nothing else would ever fetch them.
    /// Waiting for a second look leaves alone the gaps that close by
    /// themselves: reordered trades, and gaps the sequencer has not
    /// confirmed yet. A range fetched twice is harmless: dedup drops the
    /// second copy.
    fn look(&mut self, marks: &SequenceMarks, open: &OpenGaps) -> BTreeMap<StreamKey, Ranges> {
        // What the tables hold (at or below the mark, not open) needs no
        // remembering: `asked` stays as small as the open gaps.
        for (stream, asked) in self.asked.iter_mut() {
            if let Some(high) = marks.0.get(stream).and_then(|m| m.source_sequence) {
                let mut held = Ranges(vec![(i64::MIN, high)]);
                if let Some(o) = open.0.get(stream) {
                    held.subtract(o);
                }
                asked.subtract(&held);
            }
        }
        self.asked.retain(|_, r| !r.is_empty());
        let mut unclaimed = BTreeMap::new();
        let mut orphans = BTreeMap::new();
        for (stream, ranges) in &open.0 {
            if stream.0 != binance::EXCHANGE {
                continue;
            }
            let mut nobody = ranges.clone();
            if let Some(asked) = self.asked.get(stream) {
                nobody.subtract(asked);
            }
            let mut fresh = nobody.clone();
            if let Some(before) = self.unclaimed.get(stream) {
                fresh.subtract(before);
            }
            let mut again = nobody;
            again.subtract(&fresh);
            if !fresh.is_empty() {
                unclaimed.insert(stream.clone(), fresh);
            }
            if !again.is_empty() {
                self.asked.entry(stream.clone()).or_default().union(&again);
                orphans.insert(stream.clone(), again);
            }
        }
        self.unclaimed = unclaimed;
        orphans
    }
}

/// Reads what the tables hold now: the marks and the open gaps of their
/// latest K2 snapshot.
pub type TableGaps =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(SequenceMarks, OpenGaps), String>> + Send + Sync>;

#[derive(Debug, Clone)]
struct Job {
    symbol: CompactString,
    from: i64,
    to: i64,
    attempts: u32,
}

impl Job {
    fn size(&self) -> u64 {
        (self.to - self.from + 1).max(0) as u64
    }
}

pub struct GapRecoveryActor {
    client: reqwest::Client,
    rest: String,
    api_key: String,
    config: GapRecoveryConfig,
    parser: BinanceParser,
    next: Link<DedupActor>,
    supervision: Supervision,
    queue: VecDeque<Job>,
    busy: bool,
    /// The exchange REST API's breaker: while open, jobs wait instead of
    /// spending their attempts.
    breaker: Option<Arc<CircuitBreaker>>,
    /// Where ranges the exchange no longer has are recorded, so that the
    /// tables stop counting them as open gaps.
    given_up: GivenUp,
    /// Where the tables' open gaps are read (none: only the sequencer's
    /// gaps are fetched).
    tables: Option<TableGaps>,
    /// What was asked for, and the tables' gaps nobody asked for.
    claims: Claims,
    /// A look at the tables is under way.
    looking: bool,
}

impl GapRecoveryActor {
    pub fn new(
        binance: &BinanceConfig,
        config: GapRecoveryConfig,
        next: Link<DedupActor>,
        supervision: Supervision,
    ) -> Self {
        let client = crate::sources::rest_client();
        Self {
            client,
            rest: binance.rest_endpoint.trim_end_matches('/').to_owned(),
            api_key: binance.api_key.expose().to_owned(),
            config,
            parser: BinanceParser::default().sample_data(binance.sample_data),
            next,
            supervision,
            queue: VecDeque::new(),
            busy: false,
            breaker: None,
            given_up: GivenUp::default(),
            tables: None,
            claims: Claims::default(),
            looking: false,
        }
    }

    /// Also fetches the open gaps the tables record that nobody is fetching
    /// (see [`GapRecoveryActor::revisit`]).
    pub fn with_tables(mut self, tables: TableGaps) -> Self {
        self.tables = Some(tables);
        self
    }

    pub fn with_given_up(mut self, given_up: GivenUp) -> Self {
        self.given_up = given_up;
        self
    }

    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Counts, logs with their numbers and records trades the exchange
    /// cannot give: never silently skipped.
    fn unrecoverable(&self, symbol: &str, missing: &Ranges) {
        let n = missing.count();
        if n == 0 {
            return;
        }
        metrics::counter!("k2_gap_recovery_trades_total", "result" => "unrecoverable").increment(n);
        tracing::error!(symbol, trades = n, ranges = ?missing.0, "trades unrecoverable: the exchange no longer has them");
        for &(from, to) in &missing.0 {
            self.given_up.record(binance::EXCHANGE, symbol, from, to);
        }
    }

    /// Queues a range of a Binance stream and remembers it was asked for.
    fn ask(&mut self, symbol: CompactString, from: i64, to: i64) {
        self.claims.asked(&(binance::EXCHANGE.into(), symbol.clone()), from, to);
        self.queue.push_back(Job { symbol, from, to, attempts: 0 });
    }

    /// Reads the tables' open gaps, then [`GapRecoveryActor::claim_orphans`].
    fn revisit(&mut self, ctx: &mut Context<Self>) {
        let Some(read) = &self.tables else { return };
        if self.looking {
            return;
        }
        self.looking = true;
        ctx.spawn(wrap_future::<_, Self>(read()).map(|result, act, _| {
            act.looking = false;
            match result {
                Ok((marks, open)) => act.claim_orphans(&marks, &open),
                Err(e) => tracing::warn!(error = %e, "open gaps not read from the tables; looking again later"),
            }
        }));
    }

    /// Queues the orphaned open gaps of the tables (see [`Claims::look`]).
    fn claim_orphans(&mut self, marks: &SequenceMarks, open: &OpenGaps) {
        let orphans = self.claims.look(marks, open);
        for ((_, symbol), ranges) in orphans {
            tracing::info!(%symbol, ranges = ?ranges.0, "open gaps in the tables nobody was fetching queued for recovery");
            for &(from, to) in &ranges.0 {
                self.ask(symbol.clone(), from, to);
            }
        }
        metrics::gauge!("k2_gap_recovery_queue").set(self.queue.len() as f64);
    }

    /// Starts the next request if none is running.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!("k2_gap_recovery_queue").set(self.queue.len() as f64);
        if self.busy {
            return;
        }
        if self.queue.is_empty() {
            return;
        }
        if self.breaker.as_ref().is_some_and(|b| b.state() == BreakerState::Open) {
            ctx.run_later(Duration::from_millis(500), |act, ctx| act.pump(ctx));
            return;
        }
        let Some(job) = self.queue.pop_front() else { return };
        self.busy = true;
        let limit = job.size().min(u64::from(self.config.page_size));
        let url =
            format!("{}/api/v3/historicalTrades?symbol={}&fromId={}&limit={limit}", self.rest, job.symbol, job.from);
        let mut request = self.client.get(url);
        if !self.api_key.is_empty() {
            request = request.header("X-MBX-APIKEY", &self.api_key);
        }
        let fetch = async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            response.json::<Vec<RestTrade>>().await.map_err(|e| e.to_string())
        };
        ctx.spawn(
            wrap_future::<_, Self>(fetch)
                .map(move |result, act, _| act.take_page(job, result))
                .then(|events, act, _| {
                    let next = act.next.clone();
                    wrap_future(async move {
                        if !events.is_empty() {
                            let _ = next.send(EventBatch { events }).await;
                        }
                    })
                })
                .map(|(), act, _| act.busy = false),
        );
    }

    /// Turns one answer into events, and queues what is left of the job.
    fn take_page(&mut self, mut job: Job, result: Result<Vec<RestTrade>, String>) -> Vec<MarketEvent> {
        let trades = match result {
            Ok(t) => {
                metrics::counter!("k2_gap_recovery_requests_total", "result" => "ok").increment(1);
                if let Some(b) = &self.breaker {
                    b.success();
                }
                t
            }
            Err(e) => {
                metrics::counter!("k2_gap_recovery_requests_total", "result" => "error").increment(1);
                if let Some(b) = &self.breaker {
                    b.failure();
                }
                job.attempts += 1;
                if job.attempts < self.config.max_attempts {
                    tracing::warn!(symbol = %job.symbol, from = job.from, to = job.to, error = %e, "gap recovery request failed; will retry");
                    self.queue.push_back(job);
                } else {
                    tracing::error!(symbol = %job.symbol, from = job.from, to = job.to, error = %e, "gap unrecoverable");
                    self.unrecoverable(&job.symbol, &Ranges(vec![(job.from, job.to)]));
                }
                return Vec::new();
            }
        };
        let now = Timestamp::now();
        let mut events = Vec::new();
        let mut last = job.from - 1;
        let mut got = Vec::with_capacity(trades.len());
        for t in &trades {
            let id = t.id as i64;
            if id < job.from || id > job.to {
                continue;
            }
            match self.parser.rest_trade(&job.symbol, t, now) {
                Ok(trade) => {
                    events.push(MarketEvent::Trade(trade));
                    got.push(id);
                }
                Err(e) => tracing::warn!(id, error = %e, "recovered trade refused"),
            }
            last = last.max(id);
        }
        metrics::counter!("k2_gap_recovery_trades_total", "result" => "recovered").increment(events.len() as u64);
        if last >= job.from {
            let mut missing = Ranges(vec![(job.from, last)]);
            missing.subtract(&Ranges::of(got));
            self.unrecoverable(&job.symbol, &missing);
        }
        if last < job.to {
            if trades.is_empty() || last < job.from {
                // The exchange has nothing more for this range.
                self.unrecoverable(&job.symbol, &Ranges(vec![(last.max(job.from - 1) + 1, job.to)]));
            } else {
                self.queue.push_front(Job { from: last + 1, attempts: 0, ..job });
            }
        }
        events
    }
}

impl Actor for GapRecoveryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let every = Duration::from_secs_f64(1.0 / f64::from(self.config.requests_per_second));
        ctx.run_interval(every, |act, ctx| act.pump(ctx));
        if self.tables.is_some() {
            ctx.run_interval(REVISIT, |act, ctx| act.revisit(ctx));
        }
    }
}

supervised!(GapRecoveryActor);

impl Supervise for GapRecoveryActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// Keeps the queue (it is owed work), forgets the request in flight,
    /// which is queued again.
    fn reset(&mut self) {
        self.busy = false;
    }
}

impl Handler<GapDetected> for GapRecoveryActor {
    type Result = ();

    fn handle(&mut self, GapDetected(gap): GapDetected, _: &mut Context<Self>) {
        self.supervision.probe().handled(0);
        if gap.exchange != binance::EXCHANGE {
            let job = Job { symbol: gap.symbol.clone(), from: gap.from, to: gap.to, attempts: 0 };
            // Only Binance has a recovery endpoint so far (and only its
            // numbers are tracked as open gaps in the tables).
            let n = job.size();
            metrics::counter!("k2_gap_recovery_trades_total", "result" => "unrecoverable").increment(n);
            tracing::warn!(exchange = %gap.exchange, symbol = %gap.symbol, from = gap.from, to = gap.to, "no recovery for this exchange");
            return;
        }
        // Started by the rate-limited interval, not here.
        self.ask(gap.symbol, gap.from, gap.to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(high: i64, open: &[(i64, i64)]) -> (SequenceMarks, OpenGaps) {
        let mut marks = SequenceMarks::default();
        marks.raise(binance::EXCHANGE, "BTCUSDT", Some(high), None);
        let mut gaps = OpenGaps::default();
        if !open.is_empty() {
            gaps.0.insert(key(), Ranges(open.to_vec()));
        }
        (marks, gaps)
    }

    fn key() -> StreamKey {
        (binance::EXCHANGE.into(), "BTCUSDT".into())
    }

    #[test]
    fn an_open_gap_nobody_asked_for_is_claimed_at_the_second_look() {
        let mut claims = Claims::default();
        // Asked for by the sequencer: never an orphan.
        claims.asked(&key(), 10, 11);
        let (marks, open) = state(100, &[(10, 11), (40, 42)]);
        assert!(claims.look(&marks, &open).is_empty(), "the first look only notes 40-42");
        // 40-42 still open and unasked: claimed. 60 is new: noted.
        let (marks, open) = state(200, &[(10, 11), (40, 42), (60, 60)]);
        let orphans = claims.look(&marks, &open);
        assert_eq!(orphans[&key()].0, vec![(40, 42)]);
        // Claimed once: asked from now on. 60 closed by itself meanwhile.
        let (marks, open) = state(200, &[(10, 11), (40, 42)]);
        assert!(claims.look(&marks, &open).is_empty());
        // What the tables hold is forgotten; what is still open is kept.
        let (marks, open) = state(300, &[(41, 41)]);
        assert!(claims.look(&marks, &open).is_empty());
        assert_eq!(claims.asked[&key()].0, vec![(41, 41)]);
        // Numbers above the mark stay asked until the tables reach them.
        claims.asked(&key(), 310, 312);
        let (marks, open) = state(305, &[]);
        assert!(claims.look(&marks, &open).is_empty());
        assert_eq!(claims.asked[&key()].0, vec![(310, 312)]);
    }
}
