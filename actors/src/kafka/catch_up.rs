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
    let read = || tails.claims.owned().into_iter().collect();
    caught_up(config, "the consumer", deadline, read, || tails.claims.ingesting()).await
}

/// The same for the book lander: waits until its book log has read each
/// partition it reads up to the partition's high watermark as read now, or
/// until `deadline` (naming the partitions still behind).
pub async fn book_lander_caught_up(
    config: &KafkaConfig,
    log: &crate::lake::books::BookLog,
    deadline: Instant,
) -> Result<(), String> {
    let read = || log.read_up_to().into_iter().map(|(t, p, o)| ((t, p), o)).collect();
    caught_up(config, "the book lander", deadline, read, || false).await
}

/// Waits until the next offset `read` gives for each partition reaches its
/// high watermark as read at the start and `busy` is false, or until
/// `deadline`, naming the partitions `who` still has behind. A partition
/// `read` no longer gives is no longer waited for.
async fn caught_up(
    config: &KafkaConfig,
    who: &str,
    deadline: Instant,
    read: impl Fn() -> HashMap<PartitionKey, i64>,
    busy: impl Fn() -> bool,
) -> Result<(), String> {
    let first = read();
    if first.is_empty() {
        return Ok(());
    }
    let ends = ends_of(config, first.into_keys().collect(), deadline).await?;
    loop {
        let now = read();
        let behind: Vec<String> = ends
            .iter()
            .filter_map(|(key, high)| {
                let next = now.get(key)?;
                (next < high).then(|| format!("{}/{} at {next} of {high}", key.0, key.1))
            })
            .collect();
        if behind.is_empty() && !busy() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{who} is still behind: {}", behind.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each partition's high watermark as read now (before `deadline`).
async fn ends_of(
    config: &KafkaConfig,
    partitions: Vec<PartitionKey>,
    deadline: Instant,
) -> Result<Vec<(PartitionKey, i64)>, String> {
    let bootstrap = config.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().map_err(|e| e.to_string())?;
        let mut ends = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no time left to read the partitions' ends".to_owned());
            }
            let (_, high) = client
                .fetch_watermarks(&topic, partition, left.min(Duration::from_secs(2)))
                .map_err(|e| format!("reading the end of {topic}/{partition}: {e}"))?;
            ends.push(((topic, partition), high));
        }
        Ok(ends)
    })
    .await
    .map_err(|e| e.to_string())?
}
