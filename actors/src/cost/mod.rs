//! The cost model behind `k2 cost-model`: what running K2 in Kafka mode on
//! AWS costs per month at a sustained message rate, and per million messages.
//!
//! - [`pricing`]: the pricing and sizing file (every price and assumption is
//!   a key there, documented with its source).
//! - [`model`]: pure arithmetic from a [`Workload`] and a [`Pricing`] to an
//!   [`Estimate`] whose line items carry their own formula, so the figures
//!   can be checked by hand.
//! - [`render`]: the estimate as a text table; [`numbers`]: the number
//!   formats both use.

pub mod model;
pub mod numbers;
pub mod pricing;
pub mod render;

use thiserror::Error;

pub use model::{Estimate, LineItem, Step, Workload, estimate};
pub use pricing::Pricing;

#[derive(Debug, Error)]
pub enum CostError {
    #[error("pricing file {origin}: {source}")]
    Pricing { origin: String, source: Box<figment::Error> },
    #[error("pricing file {origin} is invalid:\n  - {}", .problems.join("\n  - "))]
    InvalidPricing { origin: String, problems: Vec<String> },
    #[error("cost model: {}", .0.join("; "))]
    InvalidWorkload(Vec<String>),
}
