//! The estimate as text.

use std::fmt::Write;

use super::model::Estimate;
use super::numbers::{fixed, plain};

const NAME_WIDTH: usize = 24;
const AMOUNT_WIDTH: usize = 14;
const SHARE_WIDTH: usize = 8;

/// The estimate as the table `k2 cost-model` prints. `origin` names the
/// pricing file.
pub fn text(e: &Estimate, origin: &str) -> String {
    let mut out = String::new();
    let w = &e.workload;
    let p = &e.prices;
    // Writing into a String cannot fail.
    let _ = writeln!(out, "K2 cost model (Kafka mode): {} messages/s sustained", plain(w.rate_msgs_per_s));
    let _ = writeln!(out, "Prices: {} {}, as of {}, from {origin}", p.region, p.currency, p.prices_as_of);
    for line in wrap(&p.source, 94) {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "Month: {} h = {} s; × {} msg/s = {} messages",
        plain(e.seconds_per_month / 3600.0),
        plain(e.seconds_per_month),
        plain(w.rate_msgs_per_s),
        plain(e.messages_per_month)
    );
    let _ = writeln!(
        out,
        "Retention: Iceberg on S3 {} d; Kafka {} d, replication {}",
        plain(w.retention_days),
        plain(w.kafka_retention_days),
        w.replication
    );

    let _ = writeln!(out, "Units: GB = 10^9 B, MB/s = 10^6 B/s; headroom h means capacity = load × (1 + h)");

    let _ = writeln!(out, "\nSizing");
    for s in &e.steps {
        let _ = writeln!(out, "  {:<NAME_WIDTH$}{}", s.name, s.formula);
    }

    let _ = writeln!(
        out,
        "\n{:<width$}{:>AMOUNT_WIDTH$}{:>SHARE_WIDTH$}",
        "Monthly cost",
        "USD",
        "share",
        width = NAME_WIDTH + 2
    );
    for item in &e.items {
        let share = if e.total_usd_per_month > 0.0 { item.usd_per_month / e.total_usd_per_month * 100.0 } else { 0.0 };
        let _ = writeln!(
            out,
            "  {:<NAME_WIDTH$}{:>AMOUNT_WIDTH$}{:>SHARE_WIDTH$}",
            item.name,
            fixed(item.usd_per_month, 2),
            format!("{}%", fixed(share, 1))
        );
        let _ = writeln!(out, "      {}", item.formula);
    }
    let _ = writeln!(out, "  {:<NAME_WIDTH$}{:>AMOUNT_WIDTH$}", "Total", fixed(e.total_usd_per_month, 2));
    let _ = writeln!(out, "  {:<NAME_WIDTH$}{}", "Per million messages", e.per_million_formula);

    let _ = writeln!(out, "\nNotes");
    for note in &e.notes {
        for (i, line) in wrap(note, 92).into_iter().enumerate() {
            let _ = writeln!(out, "  {} {line}", if i == 0 { "-" } else { " " });
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_wraps_at_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("", 5), [""]);
    }
}
