//! The decimal(18,8) rule every price and quantity obeys.
//!
//! K2 keeps prices exact end to end: `rust_decimal` in memory, Avro decimal bytes
//! on the wire, decimal128(18,8) in Parquet. A value that does not fit is refused
//! with an error naming the field and the value; it is never rounded.

use rust_decimal::Decimal;
use thiserror::Error;

/// Total digits a price or quantity may have.
pub const PRECISION: u32 = 18;
/// Digits after the decimal point.
pub const SCALE: u32 = 8;
/// Digits before the decimal point (precision minus scale).
pub const INTEGER_DIGITS: u32 = PRECISION - SCALE;
/// 10^18: an unscaled value at scale 8 must stay below this.
pub const UNSCALED_LIMIT: i64 = 1_000_000_000_000_000_000;

/// Why a value is not a valid decimal(18,8) price or quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalFault {
    Negative,
    TooManyIntegerDigits,
    TooManyFractionDigits,
    NotANumber,
}

impl std::fmt::Display for DecimalFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Negative => "is negative",
            Self::TooManyIntegerDigits => "has more than 10 integer digits",
            Self::TooManyFractionDigits => "has more than 8 decimal places",
            Self::NotANumber => "is not a plain decimal number",
        })
    }
}

/// A price or quantity refused by the decimal(18,8) rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} {value:?} {fault}: decimal(18,8) values are never rounded")]
pub struct DecimalError {
    /// Schema field the value was meant for (`price`, `bid_quantity`, ...).
    pub field: &'static str,
    /// The value as it was given.
    pub value: String,
    pub fault: DecimalFault,
}

impl DecimalError {
    fn new(field: &'static str, value: impl ToString, fault: DecimalFault) -> Self {
        Self { field, value: value.to_string(), fault }
    }
}

/// Checks a decimal against the rule and returns its unscaled value at scale 8.
///
/// Trailing zeros beyond the 8th place are accepted because dropping them is
/// exact; any other ninth digit is refused.
pub fn to_unscaled(field: &'static str, value: Decimal) -> Result<i64, DecimalError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(DecimalError::new(field, value, DecimalFault::Negative));
    }
    let mantissa = value.mantissa().unsigned_abs();
    let scale = value.scale();
    let unscaled = if scale <= SCALE {
        mantissa.checked_mul(10u128.pow(SCALE - scale))
    } else {
        let divisor = 10u128.pow(scale - SCALE);
        if !mantissa.is_multiple_of(divisor) {
            return Err(DecimalError::new(field, value, DecimalFault::TooManyFractionDigits));
        }
        Some(mantissa / divisor)
    };
    match unscaled {
        Some(u) if u < UNSCALED_LIMIT as u128 => Ok(u as i64),
        _ => Err(DecimalError::new(field, value, DecimalFault::TooManyIntegerDigits)),
    }
}

/// Builds the decimal for an unscaled value at scale 8, checking the same rule.
pub fn from_unscaled(field: &'static str, unscaled: i64) -> Result<Decimal, DecimalError> {
    if unscaled < 0 {
        let shown = Decimal::new(unscaled, SCALE);
        return Err(DecimalError::new(field, shown, DecimalFault::Negative));
    }
    if unscaled >= UNSCALED_LIMIT {
        let shown = Decimal::new(unscaled, SCALE);
        return Err(DecimalError::new(field, shown, DecimalFault::TooManyIntegerDigits));
    }
    Ok(Decimal::new(unscaled, SCALE))
}

/// Checks a decimal against the rule, returning it unchanged when it fits.
pub fn check(field: &'static str, value: Decimal) -> Result<Decimal, DecimalError> {
    to_unscaled(field, value).map(|_| value)
}

/// Parses a plain decimal string (`"60610.00000000"`, `"36.667"`, `"20000"`)
/// straight to a decimal(18,8), without a float or a rounding step.
///
/// Accepted: ASCII digits with at most one `.`. Refused with the field named:
/// signs, exponents, blanks, more than 10 integer digits, a non-zero digit past
/// the 8th decimal place.
pub fn parse(field: &'static str, text: &str) -> Result<Decimal, DecimalError> {
    parse_unscaled(field, text).map(|u| Decimal::new(u, SCALE))
}

/// As [`parse`], returning the unscaled value at scale 8.
pub fn parse_unscaled(field: &'static str, text: &str) -> Result<i64, DecimalError> {
    let bytes = text.as_bytes();
    let fault = |f| Err(DecimalError::new(field, text, f));
    if bytes.first() == Some(&b'-') {
        return fault(DecimalFault::Negative);
    }
    let (int_part, frac_part) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &bytes[..0]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return fault(DecimalFault::NotANumber);
    }
    let mut unscaled: i64 = 0;
    let mut int_digits = 0u32;
    for &b in int_part {
        if !b.is_ascii_digit() {
            return fault(DecimalFault::NotANumber);
        }
        // Leading zeros do not count towards the 10 integer digits.
        if int_digits == 0 && b == b'0' {
            continue;
        }
        int_digits += 1;
        if int_digits > INTEGER_DIGITS {
            return fault(DecimalFault::TooManyIntegerDigits);
        }
        unscaled = unscaled * 10 + i64::from(b - b'0');
    }
    let mut frac_digits = 0u32;
    let mut excess_fault = false;
    for &b in frac_part {
        if !b.is_ascii_digit() {
            return fault(DecimalFault::NotANumber);
        }
        if frac_digits < SCALE {
            unscaled = unscaled * 10 + i64::from(b - b'0');
            frac_digits += 1;
        } else if b != b'0' {
            // Keep scanning so that a later non-digit reports NotANumber.
            excess_fault = true;
        }
    }
    if excess_fault {
        return fault(DecimalFault::TooManyFractionDigits);
    }
    Ok(unscaled * 10i64.pow(SCALE - frac_digits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn parses_exact_values() {
        assert_eq!(parse("price", "60610.00000000").unwrap(), d("60610"));
        assert_eq!(parse("price", "36.667").unwrap(), d("36.667"));
        assert_eq!(parse("quantity", "0.00154000").unwrap(), d("0.00154"));
        assert_eq!(parse("quantity", "20000").unwrap(), d("20000"));
        assert_eq!(parse("quantity", ".5").unwrap(), d("0.5"));
        assert_eq!(parse("quantity", "7.").unwrap(), d("7"));
        assert_eq!(parse("price", "9999999999.99999999").unwrap(), d("9999999999.99999999"));
        assert_eq!(parse("price", "0000000000001.5").unwrap(), d("1.5"));
        assert_eq!(parse("price", "1.5000000000000").unwrap(), d("1.5"));
    }

    #[test]
    fn refuses_what_does_not_fit_and_names_it() {
        let e = parse("price", "12345678901").unwrap_err();
        assert_eq!(e.fault, DecimalFault::TooManyIntegerDigits);
        assert_eq!(e.field, "price");
        assert!(e.to_string().contains("price \"12345678901\""), "{e}");
        assert_eq!(parse("quantity", "0.000000001").unwrap_err().fault, DecimalFault::TooManyFractionDigits);
        assert_eq!(parse("quantity", "-1").unwrap_err().fault, DecimalFault::Negative);
        for bad in ["", ".", "1e5", "+1", "1.2.3", " 1", "1,5", "NaN"] {
            assert_eq!(parse("price", bad).unwrap_err().fault, DecimalFault::NotANumber, "{bad:?}");
        }
    }

    #[test]
    fn unscaled_round_trip_and_limits() {
        assert_eq!(to_unscaled("price", d("1.5")).unwrap(), 150_000_000);
        assert_eq!(to_unscaled("price", d("1.500000000000")).unwrap(), 150_000_000);
        assert_eq!(to_unscaled("price", d("-0")).unwrap(), 0);
        assert_eq!(to_unscaled("price", d("0.000000001")).unwrap_err().fault, DecimalFault::TooManyFractionDigits);
        assert_eq!(to_unscaled("price", d("10000000000")).unwrap_err().fault, DecimalFault::TooManyIntegerDigits);
        assert_eq!(to_unscaled("price", d("-0.1")).unwrap_err().fault, DecimalFault::Negative);
        assert_eq!(from_unscaled("price", UNSCALED_LIMIT - 1).unwrap(), d("9999999999.99999999"));
        assert!(from_unscaled("price", UNSCALED_LIMIT).is_err());
        assert!(from_unscaled("price", -1).is_err());
    }
}
