//! The pricing and sizing file: every price and every assumption the cost
//! model uses, each one a key (`config/pricing/aws-us-east-1.toml` documents
//! them and says where each figure comes from).

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

use super::CostError;

/// The shipped file, compiled in so that `k2 cost-model` works from any
/// directory.
pub const SHIPPED_PRICING: &str = include_str!("../../../config/pricing/aws-us-east-1.toml");
/// Where the shipped file lives in the repository, for reports.
pub const SHIPPED_PRICING_PATH: &str = "config/pricing/aws-us-east-1.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    pub about: About,
    pub units: Units,
    pub message: MessageSizing,
    pub k2: K2Sizing,
    pub kafka: KafkaSizing,
    pub ebs: EbsPrices,
    pub s3: S3Prices,
    pub iceberg: IcebergSizing,
    pub network: NetworkPrices,
}

/// Where the prices come from; printed with every estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct About {
    pub region: String,
    pub currency: String,
    /// The date the prices are known to have held.
    pub prices_as_of: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Units {
    pub hours_per_month: f64,
    pub bytes_per_gb: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSizing {
    /// One message as K2 writes it to Kafka (Confluent Avro frame).
    pub bytes: f64,
    /// Frame bytes ÷ bytes on the broker's disk and on the network.
    pub kafka_compression_ratio: f64,
    /// Frame bytes ÷ Parquet bytes per row.
    pub parquet_compression_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K2Sizing {
    /// Messages one vCPU takes from the socket through dedup, per second.
    pub ingest_msgs_per_vcpu_s: f64,
    /// Rows one vCPU takes from the sequencer into committed Parquet, per second.
    pub lake_rows_per_vcpu_s: f64,
    pub headroom: f64,
    pub min_instances: u32,
    pub instance_type: String,
    pub vcpus_per_instance: u32,
    pub instance_hourly_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSizing {
    pub retention_days: f64,
    pub broker_instance_type: String,
    pub broker_hourly_usd: f64,
    pub broker_write_mb_per_s: f64,
    pub broker_max_storage_gb: f64,
    pub partition_mb_per_s: f64,
    pub throughput_headroom: f64,
    pub storage_headroom: f64,
    pub availability_zones: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsPrices {
    pub gp3_gb_month_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Prices {
    pub storage_gb_month_usd: f64,
    pub put_per_1000_usd: f64,
    pub get_per_1000_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSizing {
    pub flush_max_rows: u64,
    pub flush_max_age_s: f64,
    pub rows_per_data_file: u64,
    pub metadata_files_per_commit: u32,
    pub get_requests_per_commit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPrices {
    pub inter_az_gb_usd_each_way: f64,
    pub producer_cross_az_fraction: f64,
    pub consumer_cross_az_fraction: f64,
    pub internet_egress_gb_usd: f64,
    pub internet_egress_gb_per_month: f64,
}

impl Pricing {
    /// The shipped file.
    pub fn shipped() -> Result<Self, CostError> {
        Self::parse(Figment::from(Toml::string(SHIPPED_PRICING)), SHIPPED_PRICING_PATH)
    }

    /// A pricing file; every key must be present (nothing is layered under it).
    pub fn load(path: &Path) -> Result<Self, CostError> {
        Self::parse(Figment::from(Toml::file_exact(path)), &path.display().to_string())
    }

    fn parse(figment: Figment, origin: &str) -> Result<Self, CostError> {
        let pricing: Self =
            figment.extract().map_err(|e| CostError::Pricing { origin: origin.to_owned(), source: Box::new(e) })?;
        pricing.validate().map_err(|problems| CostError::InvalidPricing { origin: origin.to_owned(), problems })?;
        Ok(pricing)
    }

    /// Every problem at once, each naming its key.
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut positive = |key: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{key} must be a number above 0, not {v}"));
            }
        };
        positive("units.hours_per_month", self.units.hours_per_month);
        positive("units.bytes_per_gb", self.units.bytes_per_gb);
        positive("message.bytes", self.message.bytes);
        positive("message.kafka_compression_ratio", self.message.kafka_compression_ratio);
        positive("message.parquet_compression_ratio", self.message.parquet_compression_ratio);
        positive("k2.ingest_msgs_per_vcpu_s", self.k2.ingest_msgs_per_vcpu_s);
        positive("k2.lake_rows_per_vcpu_s", self.k2.lake_rows_per_vcpu_s);
        positive("kafka.retention_days", self.kafka.retention_days);
        positive("kafka.broker_write_mb_per_s", self.kafka.broker_write_mb_per_s);
        positive("kafka.broker_max_storage_gb", self.kafka.broker_max_storage_gb);
        positive("kafka.partition_mb_per_s", self.kafka.partition_mb_per_s);
        positive("iceberg.flush_max_age_s", self.iceberg.flush_max_age_s);

        // Prices, headroom and traffic may be 0 (free, none, none), never
        // negative or infinite.
        let mut non_negative = |key: &str, v: f64| {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{key} must be a number of at least 0, not {v}"));
            }
        };
        non_negative("k2.headroom", self.k2.headroom);
        non_negative("k2.instance_hourly_usd", self.k2.instance_hourly_usd);
        non_negative("kafka.broker_hourly_usd", self.kafka.broker_hourly_usd);
        non_negative("kafka.throughput_headroom", self.kafka.throughput_headroom);
        non_negative("kafka.storage_headroom", self.kafka.storage_headroom);
        non_negative("ebs.gp3_gb_month_usd", self.ebs.gp3_gb_month_usd);
        non_negative("s3.storage_gb_month_usd", self.s3.storage_gb_month_usd);
        non_negative("s3.put_per_1000_usd", self.s3.put_per_1000_usd);
        non_negative("s3.get_per_1000_usd", self.s3.get_per_1000_usd);
        non_negative("network.inter_az_gb_usd_each_way", self.network.inter_az_gb_usd_each_way);
        non_negative("network.internet_egress_gb_usd", self.network.internet_egress_gb_usd);
        non_negative("network.internet_egress_gb_per_month", self.network.internet_egress_gb_per_month);

        for (key, v) in [
            ("network.producer_cross_az_fraction", self.network.producer_cross_az_fraction),
            ("network.consumer_cross_az_fraction", self.network.consumer_cross_az_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{key} must be between 0 and 1, not {v}"));
            }
        }
        for (key, v) in [
            ("k2.min_instances", u64::from(self.k2.min_instances)),
            ("k2.vcpus_per_instance", u64::from(self.k2.vcpus_per_instance)),
            ("kafka.availability_zones", u64::from(self.kafka.availability_zones)),
            ("iceberg.flush_max_rows", self.iceberg.flush_max_rows),
            ("iceberg.rows_per_data_file", self.iceberg.rows_per_data_file),
        ] {
            if v == 0 {
                problems.push(format!("{key} must be at least 1"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::Config;

    #[test]
    fn the_shipped_file_loads_and_says_where_its_prices_come_from() {
        let p = Pricing::shipped().unwrap();
        assert_eq!(p.about.region, "us-east-1");
        assert!(!p.about.prices_as_of.is_empty() && p.about.source.contains("Check before use"));
        // The file on disk is the one compiled in.
        let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SHIPPED_PRICING_PATH);
        assert_eq!(Pricing::load(&on_disk).unwrap(), p);
    }

    #[test]
    fn figures_taken_from_k2s_settings_match_them() {
        let p = Pricing::shipped().unwrap();
        let c = Config::load_from(None, figment::providers::Env::prefixed("K2_TEST_NOTHING_SET__")).unwrap();
        assert_eq!(p.iceberg.flush_max_rows, c.flush.max_rows as u64, "iceberg.flush_max_rows vs flush.max_rows");
        assert_eq!(p.iceberg.flush_max_age_s, c.flush.max_age.as_secs_f64(), "iceberg.flush_max_age_s");
        assert_eq!(p.kafka.retention_days * 86_400.0, c.kafka.retention.as_secs_f64(), "kafka.retention_days");
        assert_eq!(p.iceberg.rows_per_data_file, crate::lake::writer::ROWS_PER_WRITER as u64);
    }

    #[test]
    fn message_bytes_match_k2s_own_encoding() {
        use k2_core::Timestamp;
        use k2_core::codec::wire::{SchemaIds, WireCodec};
        use k2_core::source::binance::{BinanceParser, Frame};

        // A real Binance spot trade (BTCUSDT, 2024-08-04).
        let frame = br#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}}"#;
        let Ok(Frame::Event(mut event)) =
            BinanceParser::default().parse(frame, Timestamp::from_micros(1_722_766_102_795_000))
        else {
            panic!("the frame is a trade");
        };
        let codec = WireCodec::new(SchemaIds { trade: 1, quote: 2 });
        let real = codec.encode(&event).unwrap().len();
        let p = Pricing::shipped().unwrap();
        // Ids and decimals vary a few bytes from trade to trade.
        assert!((p.message.bytes - real as f64).abs() <= 4.0, "message.bytes {} vs {real} B", p.message.bytes);

        // The Kafka benchmark's figure, cited beside it, is the same codec on
        // trades with two vendor_data entries (and shorter ids, 0 to 1M).
        if let k2_core::MarketEvent::Trade(t) = &mut event {
            let mut kept = k2_core::VendorData::new();
            for (k, v) in t.vendor_data.iter().flat_map(|d| d.iter()) {
                if k == "is_buyer_maker" || k == "trade_time" {
                    kept.insert(k, v);
                }
            }
            t.vendor_data = Some(kept);
        }
        let two_entries = codec.encode(&event).unwrap().len();
        assert!((160..=170).contains(&two_entries), "{two_entries} B against the benchmark's 165");
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");

        let typo = SHIPPED_PRICING.replace("put_per_1000_usd", "puts_per_1000_usd");
        std::fs::write(&file, typo).unwrap();
        let err = Pricing::load(&file).unwrap_err().to_string();
        assert!(err.contains("puts_per_1000_usd") && err.contains("p.toml"), "{err}");

        let missing: String =
            SHIPPED_PRICING.lines().filter(|l| !l.starts_with("get_per_1000_usd")).collect::<Vec<_>>().join("\n");
        std::fs::write(&file, missing).unwrap();
        let err = Pricing::load(&file).unwrap_err().to_string();
        assert!(err.contains("get_per_1000_usd"), "{err}");
    }

    #[test]
    fn nonsense_values_are_all_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let bad = SHIPPED_PRICING
            .replace("put_per_1000_usd = 0.005", "put_per_1000_usd = -0.005")
            .replace("vcpus_per_instance = 4", "vcpus_per_instance = 0")
            .replace("producer_cross_az_fraction = 0.667", "producer_cross_az_fraction = 1.5")
            .replace("parquet_compression_ratio = 4.0", "parquet_compression_ratio = nan");
        std::fs::write(&file, bad).unwrap();
        let err = Pricing::load(&file).unwrap_err().to_string();
        for key in [
            "s3.put_per_1000_usd",
            "k2.vcpus_per_instance",
            "network.producer_cross_az_fraction",
            "message.parquet_compression_ratio",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }
}
