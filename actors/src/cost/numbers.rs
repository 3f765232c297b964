//! The number formats the formulas and the table use.

/// `x` with `decimals` places and thousands separators: 1234567.891 → "1,234,567.89".
pub fn fixed(x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.abs());
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::with_capacity(text.len() + int.len() / 3 + 1);
    if x.is_sign_negative() && text.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// An input as it was written: no trailing zeros, at most six decimals.
pub fn plain(x: f64) -> String {
    let six = fixed(x, 6);
    six.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `x` to `digits` significant digits (per-million costs span many orders of
/// magnitude, so a fixed number of decimals would show 0.00 or noise).
pub fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (digits - 1 - x.abs().log10().floor() as i32).max(0);
    fixed(x, decimals as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(fixed(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(fixed(999.999, 2), "1,000.00");
        assert_eq!(fixed(-1234.5, 1), "-1,234.5");
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(plain(165.0), "165");
        assert_eq!(plain(0.0004), "0.0004");
        assert_eq!(plain(2_628_000.0), "2,628,000");
        assert_eq!(significant(0.027_114_9, 4), "0.02711");
        assert_eq!(significant(12.345_67, 4), "12.35");
        assert_eq!(significant(123_456.0, 4), "123,456");
    }
}
