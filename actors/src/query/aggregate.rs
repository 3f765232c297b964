//! Exact OHLCV over a stream of trades: integer arithmetic on the unscaled
//! decimals (scale 8), so volume and notional are exact; only VWAP, a
//! quotient, is rounded (half to even, to 8 places).

/// Open, high, low, close, volume and VWAP of a set of trades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ohlcv {
    /// (timestamp µs, platform sequence) of the first trade, and its price.
    open: ((i64, i64), i64),
    close: ((i64, i64), i64),
    pub high: i64,
    pub low: i64,
    /// Sum of quantities, scale 8.
    pub volume: i128,
    /// Sum of price × quantity, scale 16.
    pub notional: i128,
    pub count: u64,
}

impl Ohlcv {
    pub fn new(ts: i64, order: i64, price: i64, quantity: i64) -> Self {
        Self {
            open: ((ts, order), price),
            close: ((ts, order), price),
            high: price,
            low: price,
            volume: quantity as i128,
            notional: price as i128 * quantity as i128,
            count: 1,
        }
    }

    /// Adds one trade; `order` breaks ties between trades with the same
    /// timestamp (the platform sequence: arrival order).
    pub fn add(&mut self, ts: i64, order: i64, price: i64, quantity: i64) -> Result<(), Overflow> {
        let key = (ts, order);
        if key < self.open.0 {
            self.open = (key, price);
        }
        if key >= self.close.0 {
            self.close = (key, price);
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.volume = self.volume.checked_add(quantity as i128).ok_or(Overflow)?;
        self.notional = self.notional.checked_add(price as i128 * quantity as i128).ok_or(Overflow)?;
        self.count += 1;
        Ok(())
    }

    pub fn open(&self) -> i64 {
        self.open.1
    }

    pub fn close(&self) -> i64 {
        self.close.1
    }

    pub fn first_timestamp(&self) -> i64 {
        self.open.0.0
    }

    pub fn last_timestamp(&self) -> i64 {
        self.close.0.0
    }

    /// VWAP at scale 8, rounded half to even; None when the volume is 0.
    pub fn vwap(&self) -> Option<i128> {
        if self.volume == 0 {
            return None;
        }
        // notional has scale 16 and volume scale 8: the quotient has scale 8.
        let (n, d) = (self.notional, self.volume);
        let (q, r) = (n / d, n % d);
        let twice = r.abs() * 2;
        let away = if twice > d.abs() { true } else { twice == d.abs() && q % 2 != 0 };
        let sign = if (n < 0) != (d < 0) { -1 } else { 1 };
        Some(if away { q + sign } else { q })
    }
}

/// Sums beyond i128: not reachable with 18-digit decimals short of ~10^20
/// trades, but refused rather than wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// An exact decimal string from an unscaled integer.
pub fn decimal_string(unscaled: i128, scale: u32) -> String {
    let neg = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let (int, frac) = if digits.len() > scale { digits.split_at(digits.len() - scale) } else { ("0", &digits[..]) };
    let mut out = String::with_capacity(digits.len() + 3);
    if neg {
        out.push('-');
    }
    out.push_str(int);
    if scale > 0 {
        out.push('.');
        for _ in frac.len()..scale {
            out.push('0');
        }
        out.push_str(frac);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const E8: i64 = 100_000_000;

    #[test]
    fn ohlcv_follows_time_then_arrival_order() {
        let mut a = Ohlcv::new(10, 2, 5 * E8, E8);
        a.add(5, 9, 4 * E8, E8).unwrap();
        a.add(10, 1, 6 * E8, 2 * E8).unwrap();
        a.add(20, 3, 3 * E8, E8).unwrap();
        a.add(20, 4, 7 * E8, E8).unwrap();
        assert_eq!((a.open(), a.close(), a.high, a.low), (4 * E8, 7 * E8, 7 * E8, 3 * E8));
        assert_eq!(a.volume, 6 * E8 as i128);
        // (4 + 5 + 12 + 3 + 7) / 6 = 5.16666666|67 -> 5.16666667
        assert_eq!(decimal_string(a.vwap().unwrap(), 8), "5.16666667");
        assert_eq!(a.count, 5);
    }

    #[test]
    fn vwap_rounds_half_to_even() {
        // notional 0.000000025 (scale 16 -> 250000000), volume 1 (scale 8): 2.5e-8 -> 2e-8
        let a = Ohlcv { notional: 250_000_000, volume: E8 as i128, ..Ohlcv::new(0, 0, 0, 0) };
        assert_eq!(a.vwap(), Some(2));
        let b = Ohlcv { notional: 350_000_000, volume: E8 as i128, ..Ohlcv::new(0, 0, 0, 0) };
        assert_eq!(b.vwap(), Some(4));
    }

    #[test]
    fn decimal_strings_are_exact() {
        assert_eq!(decimal_string(123_456_789, 8), "1.23456789");
        assert_eq!(decimal_string(5, 8), "0.00000005");
        assert_eq!(decimal_string(-5, 2), "-0.05");
        assert_eq!(decimal_string(i128::MAX, 16), "17014118346046923173168.7303715884105727");
        assert_eq!(decimal_string(42, 0), "42");
    }
}
