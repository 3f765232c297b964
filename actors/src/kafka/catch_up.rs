//! A graceful stop in Kafka mode with the consumer on: before the final
//! flush, the consumer takes every record of the partitions it owns up to
//! their ends as they are at the stop (the records this process has just
//! produced, gap recovery's last ones included). Otherwise the flush finds
//! the tails empty while those records are still on their way from the
//! broker, and the process ends with them only in Kafka: safe (the next
//! owner lands them) but not what a stop that says "everything committed"
//! promises.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::lake::Tails;
use crate::lake::claims::PartitionKey;
use crate::runtime::config::KafkaConfig;

/// Waits until the consumer's next offset reaches each owned partition's
/// high watermark as read now and the batch it judged last is in the
/// tails, or until `deadline`; on time-out, names the partitions still
/// behind. A partition revoked meanwhile is no longer
/// this process's to wait for.
pub async fn consumer_caught_up(config: &KafkaConfig, tails: &Tails, deadline: Instant) -> Result<(), String> {
    let owned = tails.claims.owned();
    if owned.is_empty() {
        return Ok(());
    }
    let bootstrap = config.bootstrap_servers.clone();
    let ends = tokio::task::spawn_blocking(move || -> Result<Vec<(PartitionKey, i64)>, String> {
        let client: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().map_err(|e| e.to_string())?;
        let mut ends = Vec::with_capacity(owned.len());
        for ((topic, partition), _) in owned {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no time left to read the partitions' ends".into());
            }
            let (_, high) = client
                .fetch_watermarks(&topic, partition, left.min(Duration::from_secs(2)))
                .map_err(|e| format!("reading the end of {topic}/{partition}: {e}"))?;
            ends.push(((topic, partition), high));
        }
        Ok(ends)
    })
    .await
    .map_err(|e| e.to_string())??;
    loop {
        let now: HashMap<_, _> = tails.claims.owned().into_iter().collect();
        let behind: Vec<String> = ends
            .iter()
            .filter_map(|(key, high)| {
                let next = now.get(key)?;
                (next < high).then(|| format!("{}/{} at {next} of {high}", key.0, key.1))
            })
            .collect();
        if behind.is_empty() && !tails.claims.ingesting() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the consumer is still behind: {}", behind.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
