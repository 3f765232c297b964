//! `k2 cost-model`: monthly cost of K2 on AWS at a sustained message rate,
//! with the arithmetic shown.

use std::io::Write;
use std::process::ExitCode;

use k2::cost::pricing::SHIPPED_PRICING_PATH;
use k2::cost::{Estimate, Pricing, Workload, estimate, render};
use serde::Serialize;

use super::CommandError;
use crate::cli::CostModelArgs;

/// With `--json`, exactly this object.
#[derive(Serialize)]
struct Report<'a> {
    pricing_file: &'a str,
    #[serde(flatten)]
    estimate: &'a Estimate,
}

pub fn run(args: CostModelArgs) -> Result<ExitCode, CommandError> {
    let (pricing, origin) = match &args.pricing {
        Some(path) => (Pricing::load(path)?, path.display().to_string()),
        None => (Pricing::shipped()?, format!("{SHIPPED_PRICING_PATH} (compiled in)")),
    };
    let workload = Workload {
        rate_msgs_per_s: args.rate,
        retention_days: args.retention_days,
        replication: args.replication,
        kafka_retention_days: args.kafka_retention_days.unwrap_or(pricing.kafka.retention_days),
    };
    let estimate = estimate(&workload, &pricing)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &Report { pricing_file: &origin, estimate: &estimate })
            .map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        out.write_all(render::text(&estimate, &origin).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
