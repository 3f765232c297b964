//! One side-pair of price levels, and what of it is known.
//!
//! A REST snapshot holds only the top N levels of each side. A level beyond
//! the lowest bid (highest ask) it listed may exist without the book ever
//! having heard of it, so the book remembers where the snapshot's window
//! ended: levels outside it are kept (updates name them) but never reported
//! as if the book knew that side down to there.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

/// A price and the absolute quantity resting there.
pub type Level = (Decimal, Decimal);

/// Which side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Bid,
    Ask,
}

/// Bids and asks, with the update id they reflect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    update_id: u64,
    /// The lowest bid a snapshot vouched for; None when it listed the whole
    /// side (fewer levels than it was asked for).
    bid_floor: Option<Decimal>,
    /// The highest ask a snapshot vouched for, likewise.
    ask_ceiling: Option<Decimal>,
}

/// What applying one side's levels did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Levels set or removed.
    pub changed: u64,
    /// Zero quantities for levels the book did not hold: normal on Binance.
    pub absent_removed: u64,
}

impl OrderBook {
    /// The book a snapshot describes. `limit` is how many levels per side were
    /// asked for: a side with that many has a window, a shorter side is whole.
    pub fn from_snapshot(update_id: u64, bids: &[Level], asks: &[Level], limit: usize) -> Self {
        let mut book = Self { update_id, ..Self::default() };
        for &(p, q) in bids.iter().filter(|(_, q)| !q.is_zero()) {
            book.bids.insert(p, q);
        }
        for &(p, q) in asks.iter().filter(|(_, q)| !q.is_zero()) {
            book.asks.insert(p, q);
        }
        if bids.len() >= limit {
            book.bid_floor = bids.iter().map(|l| l.0).min();
        }
        if asks.len() >= limit {
            book.ask_ceiling = asks.iter().map(|l| l.0).max();
        }
        book
    }

    pub fn update_id(&self) -> u64 {
        self.update_id
    }

    pub fn set_update_id(&mut self, id: u64) {
        self.update_id = id;
    }

    /// Sets each level's absolute quantity; zero removes it.
    pub fn apply(&mut self, side: Side, levels: &[Level]) -> Applied {
        let map = match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        };
        let mut out = Applied::default();
        for &(price, quantity) in levels {
            if quantity.is_zero() {
                if map.remove(&price).is_none() {
                    out.absent_removed += 1;
                    continue;
                }
            } else {
                map.insert(price, quantity);
            }
            out.changed += 1;
        }
        out
    }

    pub fn best_bid(&self) -> Option<Level> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }

    pub fn best_ask(&self) -> Option<Level> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// A best bid at or above the best ask: the book is wrong.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.0 >= a.0)
    }

    /// Levels held on both sides, inside the window or not.
    pub fn levels_held(&self) -> usize {
        self.bids.len() + self.asks.len()
    }

    fn known(&self, side: Side, price: Decimal) -> bool {
        match side {
            Side::Bid => self.bid_floor.is_none_or(|floor| price >= floor),
            Side::Ask => self.ask_ceiling.is_none_or(|ceiling| price <= ceiling),
        }
    }

    /// The best `depth` levels of `side` that the book knows, best first,
    /// and whether the side was cut short by the window's edge (there may be
    /// more levels than these, unknown to the book).
    pub fn top(&self, side: Side, depth: usize) -> (Vec<Level>, bool) {
        match side {
            Side::Bid => self.top_of(side, self.bids.iter().rev(), depth),
            Side::Ask => self.top_of(side, self.asks.iter(), depth),
        }
    }

    fn top_of<'a>(
        &self,
        side: Side,
        levels: impl Iterator<Item = (&'a Decimal, &'a Decimal)>,
        depth: usize,
    ) -> (Vec<Level>, bool) {
        let mut out = Vec::with_capacity(depth.min(1_024));
        let mut cut = false;
        for (p, q) in levels {
            if out.len() == depth {
                break;
            }
            if !self.known(side, *p) {
                cut = true;
                break;
            }
            out.push((*p, *q));
        }
        if out.len() < depth && !cut {
            cut = match side {
                Side::Bid => self.bid_floor.is_some(),
                Side::Ask => self.ask_ceiling.is_some(),
            };
        }
        (out, cut)
    }

    /// Levels held outside the window: named by updates, but with no
    /// knowledge of their neighbours.
    pub fn outside_window(&self) -> usize {
        let bids = self.bid_floor.map_or(0, |floor| self.bids.range(..floor).count());
        let asks = self.ask_ceiling.map_or(0, |ceiling| {
            self.asks.range((std::ops::Bound::Excluded(ceiling), std::ops::Bound::Unbounded)).count()
        });
        bids + asks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn quantities_are_absolute_and_zero_removes() {
        let mut book = OrderBook::from_snapshot(10, &[(d("99"), d("1")), (d("98"), d("2"))], &[(d("101"), d("3"))], 5);
        let applied = book.apply(Side::Bid, &[(d("99"), d("5")), (d("98"), d("0")), (d("97"), d("0"))]);
        assert_eq!(applied, Applied { changed: 2, absent_removed: 1 });
        assert_eq!(book.top(Side::Bid, 10), (vec![(d("99"), d("5"))], false));
        assert_eq!(book.best_ask(), Some((d("101"), d("3"))));
        assert!(!book.is_crossed());
        book.apply(Side::Bid, &[(d("101"), d("1"))]);
        assert!(book.is_crossed(), "a bid at the best ask crosses the book");
    }

    #[test]
    fn levels_beyond_the_snapshot_window_are_not_reported_as_known() {
        // Two levels asked for, two given: the side goes on beyond 98.
        let mut book = OrderBook::from_snapshot(1, &[(d("99"), d("1")), (d("98"), d("1"))], &[(d("101"), d("1"))], 2);
        book.apply(Side::Bid, &[(d("90"), d("7"))]);
        assert_eq!(book.outside_window(), 1);
        let (top, cut) = book.top(Side::Bid, 5);
        assert_eq!(top, vec![(d("99"), d("1")), (d("98"), d("1"))]);
        assert!(cut, "the book cannot say what lies below 98");
        // The ask side listed fewer levels than asked: it is whole.
        assert_eq!(book.top(Side::Ask, 5), (vec![(d("101"), d("1"))], false));
        // A new best bid inside the window is known.
        book.apply(Side::Bid, &[(d("100"), d("2"))]);
        assert_eq!(book.top(Side::Bid, 1), (vec![(d("100"), d("2"))], false));
    }
}
