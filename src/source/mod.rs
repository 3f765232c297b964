//! Sources: turning what venues send (WebSocket JSON, CSV files) into v2 events.

pub mod asx;
pub mod binance;
pub mod currency;
pub mod files;

use rust_decimal::Decimal;
use thiserror::Error;

use crate::model::decimal::{self, DecimalError};

/// A best bid or offer that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BookSideError {
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error("{price_field} is 0 while {quantity_field} is {quantity}: an empty side has both 0")]
    ZeroPriceWithQuantity { price_field: &'static str, quantity_field: &'static str, quantity: String },
}

/// Reads one side of the book. Venues write an empty side as price 0 and
/// quantity 0; it becomes `None` for both, because a price of zero is not a
/// price. A zero price with a quantity is refused rather than guessed at.
pub fn book_side(
    (price_field, price): (&'static str, &str),
    (quantity_field, quantity): (&'static str, &str),
) -> Result<(Option<Decimal>, Option<Decimal>), BookSideError> {
    let p = decimal::parse(price_field, price)?;
    let q = decimal::parse(quantity_field, quantity)?;
    match (p.is_zero(), q.is_zero()) {
        (true, true) => Ok((None, None)),
        (true, false) => {
            Err(BookSideError::ZeroPriceWithQuantity { price_field, quantity_field, quantity: quantity.to_owned() })
        }
        _ => Ok((Some(p), Some(q))),
    }
}

/// An input line or frame that was refused, with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Error)]
#[error("{location}: {reason}")]
pub struct Rejected {
    /// `file:line`, or another place the input came from.
    pub location: String,
    pub reason: String,
}

impl Rejected {
    pub fn at_line(path: &std::path::Path, line: u64, reason: impl Into<String>) -> Self {
        Self { location: format!("{}:{line}", path.display()), reason: reason.into() }
    }
}
