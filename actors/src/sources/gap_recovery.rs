//! The gap recovery actor: fetches the trades of a confirmed gap from the
//! exchange's REST API and feeds them to the deduplicator (a recovered trade
//! that did arrive after all is a duplicate there, not a twin). Requests are
//! bounded in rate and retried a bounded number of times; every trade of a gap
//! ends up counted as recovered or unrecoverable.

use std::collections::VecDeque;
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
use crate::state::marks::{GivenUp, Ranges};
use crate::transforms::dedup::DedupActor;
use crate::transforms::sequencer::GapDetected;

pub const NAME: &str = "gap_recovery";

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
}

impl GapRecoveryActor {
    pub fn new(
        binance: &BinanceConfig,
        config: GapRecoveryConfig,
        next: Link<DedupActor>,
        supervision: Supervision,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            client,
            rest: binance.rest_endpoint.trim_end_matches('/').to_owned(),
            api_key: binance.api_key.clone(),
            config,
            parser: BinanceParser::default().sample_data(binance.sample_data),
            next,
            supervision,
            queue: VecDeque::new(),
            busy: false,
            breaker: None,
            given_up: GivenUp::default(),
        }
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
        let job = Job { symbol: gap.symbol.clone(), from: gap.from, to: gap.to, attempts: 0 };
        if gap.exchange != binance::EXCHANGE {
            // Only Binance has a recovery endpoint so far (and only its
            // numbers are tracked as open gaps in the tables).
            let n = job.size();
            metrics::counter!("k2_gap_recovery_trades_total", "result" => "unrecoverable").increment(n);
            tracing::warn!(exchange = %gap.exchange, symbol = %gap.symbol, from = gap.from, to = gap.to, "no recovery for this exchange");
            return;
        }
        // Started by the rate-limited interval, not here.
        self.queue.push_back(job);
    }
}
