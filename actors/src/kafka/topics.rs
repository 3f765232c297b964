//! Topic names and creation.

use std::time::Duration;

use k2_core::MarketEvent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaError;
use crate::runtime::config::KafkaConfig;

/// `{prefix}market.{asset_class}.{trades|quotes}.{exchange}`, lower case.
pub fn topic_for(prefix: &str, event: &MarketEvent) -> String {
    let (asset, kind, exchange) = match event {
        MarketEvent::Trade(t) => (t.asset_class.as_str(), "trades", t.exchange.as_str()),
        MarketEvent::Quote(q) => (q.asset_class.as_str(), "quotes", q.exchange.as_str()),
    };
    format!("{prefix}market.{asset}.{kind}.{}", exchange.to_ascii_lowercase())
}

/// `{prefix}market.{asset_class}.book.{exchange}`, lower case: the
/// order-book records of one venue.
pub fn book_topic(prefix: &str, asset: k2_core::AssetClass, exchange: &str) -> String {
    format!("{prefix}market.{}.book.{}", asset.as_str(), exchange.to_ascii_lowercase())
}

/// The book landers' subscription (a regex, as [`pattern`]).
pub fn book_pattern(prefix: &str) -> String {
    format!("^{}market\\.[^.]+\\.book\\.[^.]+$", escape(prefix))
}

/// Creates `topic` with the configured partitions, replication and
/// retention unless it exists.
pub async fn ensure(
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
    topic: &str,
) -> Result<(), KafkaError> {
    let retention = config.retention.as_millis().to_string();
    let new = NewTopic::new(topic, config.partitions, TopicReplication::Fixed(config.replication_factor))
        .set("retention.ms", &retention);
    // Within the time a message may take: an unreachable broker fails here
    // as soon as it would fail a delivery.
    let wait = config.message_timeout.min(Duration::from_secs(10));
    let options = AdminOptions::new().operation_timeout(Some(wait)).request_timeout(Some(wait));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(KafkaError::CreateTopic { topic: name, reason: code.to_string() }),
        }
    }
    Ok(())
}

/// Whether `topic` is one of the market topics under `prefix`.
pub fn is_market_topic(prefix: &str, topic: &str) -> Option<bool> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("market.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    match parts[..] {
        [_, "trades", _] => Some(true),
        [_, "quotes", _] => Some(false),
        _ => None,
    }
}

/// The subscription: librdkafka takes a name starting with `^` as a regex.
pub fn pattern(prefix: &str) -> String {
    format!("^{}market\\.[^.]+\\.(trades|quotes)\\.[^.]+$", escape(prefix))
}

fn escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() * 2);
    for c in prefix.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_topics_are_recognised_under_their_prefix() {
        assert_eq!(is_market_topic("", "market.crypto.trades.binance"), Some(true));
        assert_eq!(is_market_topic("t1.", "t1.market.equities.quotes.asx"), Some(false));
        assert_eq!(is_market_topic("t1.", "market.crypto.trades.binance"), None);
        assert_eq!(is_market_topic("", "market.crypto.trades.binance.dlq"), None);
        assert_eq!(is_market_topic("", "_schemas"), None);
    }

    #[test]
    fn the_subscription_pattern_matches_market_topics_only() {
        assert_eq!(pattern("t1."), "^t1\\.market\\.[^.]+\\.(trades|quotes)\\.[^.]+$");
        assert_eq!(pattern(""), "^market\\.[^.]+\\.(trades|quotes)\\.[^.]+$");
    }
}
