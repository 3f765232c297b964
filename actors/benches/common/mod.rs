//! What several benches share: request latencies, a producer loop that
//! waits for room in librdkafka's queue, and the Parquet files of a table.

// Each bench includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// p50 and p99 of `v`.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99))
}

/// Every Parquet file under `dir` in a directory named `table` (live or
/// not), with its length in bytes.
pub fn parquet_files(dir: &Path, table: &str) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && path.components().any(|c| c.as_os_str() == table)
            {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((path, len));
            }
        }
    }
    out
}

/// p50 and p99 of `n` GETs, one at a time, of the URLs `url` gives; each
/// must succeed.
pub async fn latency(client: &reqwest::Client, n: usize, mut url: impl FnMut(usize) -> String) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let u = url(i);
        let t = Instant::now();
        let resp = client.get(&u).send().await.expect("request");
        assert!(resp.status().is_success(), "{u}: {}", resp.status());
        let _ = resp.bytes().await.expect("body");
        times.push(t.elapsed());
    }
    percentiles(times)
}

/// Hands `record` to librdkafka, waiting while its queue is full; the
/// delivery to await. Any other refusal ends the bench.
pub async fn send_when_room<K, P>(producer: &FutureProducer, mut record: FutureRecord<'_, K, P>) -> DeliveryFuture
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => panic!("producer: {e}"),
        }
    }
}
