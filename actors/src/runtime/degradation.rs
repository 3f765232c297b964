//! The degradation ladder: one controller that reads the pressure on the
//! service (rows accepted but not durable, process memory against a budget,
//! open breakers, mailbox depth) and sets a level that the stages act on,
//! instead of letting the process fall over.
//!
//! | level | name          | effect                                             |
//! |-------|---------------|----------------------------------------------------|
//! | 0     | NORMAL        | everything                                         |
//! | 1     | SOFT          | optional work skipped: `vendor_data` is not kept,  |
//! |       |               | order books of non-critical symbols shed           |
//! | 2     | GRACEFUL      | quotes of symbols not in the critical list dropped |
//! | 3     | AGGRESSIVE    | (as 2), every order book shed, and a warning: rows |
//! |       |               | pile up unflushed                                  |
//! | 4     | CIRCUIT_BREAK | sources paused; queries still served               |
//!
//! A level rises as soon as an input crosses its trigger; it falls only when
//! every input is below half the trigger of the current level and the level
//! has held for the cool-down. Trades are never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::runtime::breaker::BreakerState;
use crate::runtime::config::DegradationConfig;
use crate::runtime::health::HealthRegistry;
use crate::runtime::supervision::{Supervise, Supervision, supervised};

pub const NAME: &str = "degradation";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Normal = 0,
    Soft = 1,
    Graceful = 2,
    Aggressive = 3,
    CircuitBreak = 4,
}

impl Level {
    pub fn from_u8(n: u8) -> Self {
        match n {
            0 => Level::Normal,
            1 => Level::Soft,
            2 => Level::Graceful,
            3 => Level::Aggressive,
            _ => Level::CircuitBreak,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Normal => "NORMAL",
            Level::Soft => "SOFT",
            Level::Graceful => "GRACEFUL",
            Level::Aggressive => "AGGRESSIVE",
            Level::CircuitBreak => "CIRCUIT_BREAK",
        }
    }
}

/// The current level, read by the stages on every batch.
#[derive(Clone, Default)]
pub struct LevelHandle(Arc<AtomicU8>);

impl LevelHandle {
    pub fn get(&self) -> Level {
        Level::from_u8(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, level: Level) {
        self.0.store(level as u8, Ordering::Relaxed);
    }

    /// Sets the level without a controller (unit tests of the stages).
    #[doc(hidden)]
    pub fn set_for_test(&self, level: Level) {
        self.set(level);
    }
}

/// Row triggers when neither `degradation.lag` nor the service sets them
/// (the default `flush.max_rows` times 3, 6, 12, 24).
const DEFAULT_LAG: [u64; 4] = [1_500_000, 3_000_000, 6_000_000, 12_000_000];

/// What is accepted but not yet durable, as the controller reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lag {
    pub rows: u64,
    /// The oldest such row's age, in units of `flush.max_age`.
    pub age: f64,
}

/// One look at the inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    pub lag: u64,
    /// The oldest row not yet durable, in units of `flush.max_age`.
    pub age: f64,
    /// Resident memory as a fraction of the budget (None: not watched).
    pub memory: Option<f64>,
    pub open_breakers: usize,
    /// The fullest mailbox, as a fraction of its capacity.
    pub mailbox: f64,
}

/// The ladder's rule, apart from time and I/O.
pub struct Ladder {
    config: DegradationConfig,
    level: Level,
    since: Option<Instant>,
}

fn rung<T: PartialOrd + Copy>(value: T, triggers: &[T]) -> u8 {
    triggers.iter().take_while(|t| value >= **t).count() as u8
}

impl Ladder {
    pub fn new(config: DegradationConfig) -> Self {
        Self { config, level: Level::Normal, since: None }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// The level the inputs call for, with every trigger scaled by `scale`
    /// (1 to rise, 0.5 to fall), and the input that decided it.
    fn target(&self, r: &Readings, scale: f64) -> (u8, String) {
        let c = &self.config;
        let lag: Vec<u64> = c.lag.unwrap_or(DEFAULT_LAG).iter().map(|t| (*t as f64 * scale) as u64).collect();
        let mut best = (rung(r.lag, &lag), format!("{} rows not yet durable", r.lag));
        let age: Vec<f64> = c.age.iter().map(|t| t * scale).collect();
        let level = rung(r.age, &age);
        if level > best.0 {
            best = (level, format!("the oldest row not yet durable is {:.1} flush intervals old", r.age));
        }
        if let Some(m) = r.memory {
            let mem: Vec<f64> = c.memory.iter().map(|t| t * scale).collect();
            let level = rung(m, &mem);
            if level > best.0 {
                best = (level, format!("memory at {:.0}% of the budget", m * 100.0));
            }
        }
        let mailbox: Vec<f64> = c.mailbox.iter().map(|t| t * scale).collect();
        let level = rung(r.mailbox, &mailbox);
        if level > best.0 {
            best = (level, format!("a mailbox {:.0}% full", r.mailbox * 100.0));
        }
        if r.open_breakers > 0 && best.0 == 0 {
            best = (1, format!("{} circuit breaker(s) open", r.open_breakers));
        }
        best
    }

    /// Takes `r` at `now`: the new level and its cause when it changes.
    pub fn step(&mut self, r: &Readings, now: Instant) -> Option<(Level, Level, String)> {
        let from = self.level;
        let (up, cause) = self.target(r, 1.0);
        let to = if up > from as u8 {
            Level::from_u8(up)
        } else {
            let (down, _) = self.target(r, 0.5);
            let held = self.since.is_none_or(|t| now.duration_since(t) >= self.config.cool_down);
            if down < from as u8 && held { Level::from_u8(down.max(up)) } else { from }
        };
        if to == from {
            return None;
        }
        self.level = to;
        self.since = Some(now);
        let cause = if to > from { cause } else { format!("pressure fell ({cause})") };
        Some((from, to, cause))
    }
}

/// The lowest of the values seen over a span: how high a reading has
/// stayed, so that a moment's peak is not taken for pressure.
pub struct Sustained {
    span: Duration,
    looks: std::collections::VecDeque<(Instant, f64)>,
}

impl Sustained {
    pub fn new(span: Duration) -> Self {
        Self { span, looks: std::collections::VecDeque::new() }
    }

    /// Takes `value` at `now`; the lowest value over the last `span`, or 0
    /// while the looks do not span that long yet.
    pub fn look(&mut self, now: Instant, value: f64) -> f64 {
        self.looks.push_back((now, value));
        // Keep one look at or before the span's start, so the rest covers it.
        while self.looks.get(1).is_some_and(|(t, _)| now.duration_since(*t) >= self.span) {
            self.looks.pop_front();
        }
        match self.looks.front() {
            Some((first, _)) if now.duration_since(*first) >= self.span => {
                self.looks.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min)
            }
            _ => 0.0,
        }
    }
}

/// What the ladder took away from a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shed {
    /// Its `vendor_data` (SOFT and above).
    VendorData,
    /// The whole quote (GRACEFUL and above, non-critical symbols).
    Quote,
}

impl Shed {
    pub fn name(self) -> &'static str {
        match self {
            Shed::VendorData => "vendor_data",
            Shed::Quote => "quote",
        }
    }
}

/// Key of the ledger: the level, the symbol, what was shed, and whether the
/// row is a trade (whose table the count goes to).
type ShedKey = (Level, compact_str::CompactString, Shed, bool);

/// Every row the ladder shed, by level, symbol and what: counted in
/// `k2_shed_total{level,symbol,kind}`, shown in `/health`, and handed to the
/// next snapshot of the row's table (`k2.shed` in its summary), so a reader
/// of the table can tell which span is degraded.
#[derive(Clone, Default)]
pub struct ShedLedger(Arc<std::sync::Mutex<ShedBooks>>);

#[derive(Default)]
struct ShedBooks {
    total: std::collections::BTreeMap<ShedKey, u64>,
    /// Not yet in a snapshot: trades' and quotes' counts.
    unflushed: [std::collections::BTreeMap<ShedKey, u64>; 2],
}

impl ShedLedger {
    fn books(&self) -> std::sync::MutexGuard<'_, ShedBooks> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `n` rows of `symbol` lost `what` at `level`.
    pub fn record(&self, level: Level, symbol: &str, what: Shed, trade: bool, n: u64) {
        if n == 0 {
            return;
        }
        let key = (level, compact_str::CompactString::from(symbol), what, trade);
        metrics::counter!("k2_shed_total", "level" => level.name(), "symbol" => symbol.to_owned(), "kind" => what.name())
            .increment(n);
        let mut books = self.books();
        *books.total.entry(key.clone()).or_default() += n;
        *books.unflushed[usize::from(!trade)].entry(key).or_default() += n;
    }

    /// `LEVEL/SYMBOL/kind` → rows shed since start (`/health`).
    pub fn totals(&self) -> std::collections::BTreeMap<String, u64> {
        self.books().total.iter().map(|(k, n)| (label(k), *n)).collect()
    }

    /// What was shed of the trades' (or quotes') rows since the last call:
    /// for the snapshot the flusher is about to commit.
    pub fn take_unflushed(&self, trades: bool) -> std::collections::BTreeMap<String, u64> {
        let taken = std::mem::take(&mut self.books().unflushed[usize::from(!trades)]);
        taken.iter().map(|(k, n)| (label(k), *n)).collect()
    }
}

fn label((level, symbol, what, _): &ShedKey) -> String {
    format!("{}/{symbol}/{}", level.name(), what.name())
}

/// Pauses (true) or resumes (false) a source.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct PauseSource(pub bool);

/// The sources level 4 pauses, filled as they start.
pub type SourceList = Arc<std::sync::Mutex<Vec<Recipient<PauseSource>>>>;

/// The controller.
pub struct DegradationActor {
    ladder: Ladder,
    handle: LevelHandle,
    registry: HealthRegistry,
    lag: Box<dyn Fn() -> Lag + Send>,
    mailbox_capacity: usize,
    /// How full the fullest mailbox has stayed over `mailbox_for`.
    mailboxes: Sustained,
    sources: SourceList,
    supervision: Supervision,
}

impl DegradationActor {
    pub fn new(
        config: DegradationConfig,
        handle: LevelHandle,
        registry: HealthRegistry,
        lag: Box<dyn Fn() -> Lag + Send>,
        mailbox_capacity: usize,
        sources: SourceList,
        supervision: Supervision,
    ) -> Self {
        let mailboxes = Sustained::new(config.mailbox_for);
        Self { ladder: Ladder::new(config), handle, registry, lag, mailbox_capacity, mailboxes, sources, supervision }
    }

    fn readings(&mut self) -> Readings {
        let budget = self.ladder.config.memory_budget_mb;
        let memory = (budget > 0).then(|| resident_bytes() as f64 / (budget as f64 * 1024.0 * 1024.0));
        let open_breakers = self.registry.breakers().values().filter(|s| **s == BreakerState::Open).count();
        let deepest = self.registry.report().values().map(|r| r.mailbox_depth).max().unwrap_or(0).max(0);
        let fullest = deepest as f64 / self.mailbox_capacity.max(1) as f64;
        let mailbox = self.mailboxes.look(Instant::now(), fullest);
        let lag = (self.lag)();
        Readings { lag: lag.rows, age: lag.age, memory, open_breakers, mailbox }
    }

    fn look(&mut self) {
        self.supervision.probe().handled(0);
        let r = self.readings();
        let Some((from, to, cause)) = self.ladder.step(&r, Instant::now()) else { return };
        self.handle.set(to);
        self.registry.set_degradation(to as u8, to.name(), &cause);
        metrics::gauge!("k2_degradation_level").set(to as u8 as f64);
        metrics::counter!("k2_degradation_transitions_total", "from" => from.name(), "to" => to.name()).increment(1);
        if to > from {
            tracing::warn!(from = from.name(), to = to.name(), %cause, "degradation level raised");
        } else {
            tracing::info!(from = from.name(), to = to.name(), %cause, "degradation level lowered");
        }
        let pause = match (from >= Level::CircuitBreak, to >= Level::CircuitBreak) {
            (false, true) => Some(true),
            (true, false) => Some(false),
            _ => None,
        };
        if let Some(pause) = pause {
            let sources = self.sources.lock().map(|s| s.clone()).unwrap_or_default();
            for s in sources {
                s.do_send(PauseSource(pause));
            }
        }
    }
}

/// Resident set size of this process (Linux), 0 when unknown.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

impl Actor for DegradationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        // A restart keeps the ladder's level: the stages act on it still.
        let level = self.ladder.level();
        metrics::gauge!("k2_degradation_level").set(level as u8 as f64);
        self.registry.set_degradation(level as u8, level.name(), "start");
        ctx.run_interval(self.ladder.config.interval, |act, _| act.look());
    }
}

supervised!(DegradationActor);

impl Supervise for DegradationActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    /// The ladder's state is a few numbers read afresh every look.
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DegradationConfig {
        DegradationConfig {
            interval: Duration::from_millis(100),
            lag: Some([100, 500, 1000, 5000]),
            age: [3.0, 6.0, 12.0, 24.0],
            memory: [0.7, 0.8, 0.9, 0.95],
            memory_budget_mb: 0,
            mailbox: [0.5, 0.9],
            mailbox_for: Duration::from_secs(2),
            cool_down: Duration::from_secs(30),
            critical_symbols: Vec::new(),
        }
    }

    fn lag(n: u64) -> Readings {
        Readings { lag: n, ..Readings::default() }
    }

    #[test]
    fn rises_at_once_and_falls_only_below_half_after_the_cool_down() {
        let mut l = Ladder::new(config());
        let t0 = Instant::now();
        assert_eq!(l.step(&lag(99), t0), None);
        assert_eq!(l.step(&lag(1200), t0).map(|(f, t, _)| (f, t)), Some((Level::Normal, Level::Aggressive)));
        // Below the trigger but not below half of it: held.
        assert_eq!(l.step(&lag(600), t0 + Duration::from_secs(60)), None);
        // Below half, but within the cool-down: held.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.step(&lag(400), t1), None);
        // After the cool-down: down to what half the triggers give (400 is
        // above 250, half of level 2's trigger).
        let t2 = t0 + Duration::from_secs(31);
        assert_eq!(l.step(&lag(400), t2).map(|(f, t, _)| (f, t)), Some((Level::Aggressive, Level::Graceful)));
        let t3 = t2 + Duration::from_secs(31);
        assert_eq!(l.step(&lag(0), t3).map(|(f, t, _)| (f, t)), Some((Level::Graceful, Level::Normal)));
    }

    #[test]
    fn memory_mailboxes_and_breakers_count_and_the_cause_names_the_input() {
        let mut l = Ladder::new(config());
        let r = Readings { lag: 0, age: 0.0, memory: Some(0.96), open_breakers: 0, mailbox: 0.0 };
        let (_, to, cause) = l.step(&r, Instant::now()).unwrap();
        assert_eq!(to, Level::CircuitBreak);
        assert!(cause.contains("memory at 96%"), "{cause}");
        let mut l = Ladder::new(config());
        let (_, to, cause) = l.step(&Readings { mailbox: 0.95, ..Readings::default() }, Instant::now()).unwrap();
        assert_eq!((to, cause.contains("mailbox")), (Level::Graceful, true));
        let mut l = Ladder::new(config());
        let (_, to, _) = l.step(&Readings { open_breakers: 1, ..Readings::default() }, Instant::now()).unwrap();
        assert_eq!(to, Level::Soft);
    }

    #[test]
    fn rows_that_wait_for_their_flush_are_not_pressure_but_rows_that_age_are() {
        // A flush's worth of rows, the oldest within its interval: NORMAL.
        let mut l = Ladder::new(DegradationConfig { lag: None, ..config() });
        let healthy = Readings { lag: 500_000, age: 0.9, ..Readings::default() };
        assert_eq!(l.step(&healthy, Instant::now()), None);
        // The same rows waiting six intervals: commits are not keeping up.
        let (_, to, cause) = l.step(&Readings { age: 6.5, ..healthy }, Instant::now()).unwrap();
        assert_eq!(to, Level::Graceful);
        assert!(cause.contains("oldest row"), "{cause}");
    }

    #[test]
    fn a_mailbox_counts_only_when_it_stays_full() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = Sustained::new(Duration::from_secs(2));
        assert_eq!(m.look(ms(0), 0.9), 0.0, "not yet a whole span");
        assert_eq!(m.look(ms(1000), 0.1), 0.0);
        // A moment's peak within the span does not count.
        assert_eq!(m.look(ms(2000), 0.9), 0.1);
        assert_eq!(m.look(ms(3000), 0.8), 0.1);
        // Full for the whole of the last two seconds.
        assert_eq!(m.look(ms(4000), 0.7), 0.7);
    }
}
