//! The arithmetic: a workload and a pricing file in, an estimate out. Nothing
//! here reads files or prints; every line item carries the formula it was
//! computed by, with the inputs written in, so a reader can redo it by hand.

use serde::Serialize;

use super::CostError;
use super::numbers::{fixed, plain, significant};
use super::pricing::{About, Pricing};

const SECONDS_PER_DAY: f64 = 86_400.0;
const BYTES_PER_MB: f64 = 1e6;

/// What is to be run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Sustained messages per second, all symbols together.
    pub rate_msgs_per_s: f64,
    /// Days of data the Iceberg tables keep on S3.
    pub retention_days: f64,
    /// Kafka's replication factor.
    pub replication: u32,
    /// Days Kafka keeps records.
    pub kafka_retention_days: f64,
}

impl Workload {
    /// Every problem at once, named as the command-line options are.
    pub fn validate(&self) -> Result<(), CostError> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{name} must be a number above 0, not {v}"));
            }
        };
        positive("--rate (messages per second)", self.rate_msgs_per_s);
        positive("--retention-days", self.retention_days);
        positive("--kafka-retention-days", self.kafka_retention_days);
        if self.replication == 0 {
            problems.push("--replication must be at least 1".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(CostError::InvalidWorkload(problems)) }
    }
}

/// A derived quantity that sizes the line items but is not itself priced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub formula: String,
    pub value: f64,
    pub unit: &'static str,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    pub name: &'static str,
    pub formula: String,
    pub usd_per_month: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub workload: Workload,
    /// Where the prices come from.
    pub prices: About,
    pub seconds_per_month: f64,
    pub messages_per_month: f64,
    pub steps: Vec<Step>,
    pub items: Vec<LineItem>,
    pub total_usd_per_month: f64,
    /// Computed: total ÷ messages per month × 10^6.
    pub usd_per_million_messages: f64,
    pub per_million_formula: String,
    /// What the total leaves out or assumes, in words.
    pub notes: Vec<&'static str>,
}

/// Whole units needed to hold `x`. The epsilon keeps a product of decimals
/// that should be a whole number (3 × 0.1 × 10) from rounding up to the next.
fn units_for(x: f64) -> u64 {
    (x - 1e-9).ceil().max(0.0) as u64
}

pub fn estimate(workload: &Workload, p: &Pricing) -> Result<Estimate, CostError> {
    workload.validate()?;
    let w = workload;
    let rate = w.rate_msgs_per_s;
    let rf = f64::from(w.replication);
    let hours = p.units.hours_per_month;
    let gb = p.units.bytes_per_gb;
    let seconds_per_month = hours * 3600.0;
    let messages_per_month = rate * seconds_per_month;
    let mut steps = Vec::new();
    let mut items = Vec::new();

    // Bytes as the brokers store and the network carries them.
    let kafka_bytes_s = rate * p.message.bytes / p.message.kafka_compression_ratio;
    let kafka_mb_s = kafka_bytes_s / BYTES_PER_MB;
    steps.push(Step {
        name: "Kafka bytes",
        formula: format!(
            "{} msg/s × {} B ÷ {} (Kafka compression) = {} MB/s",
            plain(rate),
            plain(p.message.bytes),
            plain(p.message.kafka_compression_ratio),
            significant(kafka_mb_s, 4)
        ),
        value: kafka_mb_s,
        unit: "MB/s",
    });

    // K2 instances from K2's measured rates per vCPU: each message is taken in
    // (ingest) and written to the lake; the two rates add as time per message.
    let k = &p.k2;
    let vcpus = rate * (1.0 / k.ingest_msgs_per_vcpu_s + 1.0 / k.lake_rows_per_vcpu_s) * (1.0 + k.headroom);
    steps.push(Step {
        name: "K2 vCPUs",
        formula: format!(
            "{} msg/s × (1 ÷ {} ingest + 1 ÷ {} lake, per vCPU) × {} (headroom) = {}",
            plain(rate),
            plain(k.ingest_msgs_per_vcpu_s),
            plain(k.lake_rows_per_vcpu_s),
            plain(1.0 + k.headroom),
            fixed(vcpus, 2)
        ),
        value: vcpus,
        unit: "vCPU",
    });
    let instances = units_for(vcpus / f64::from(k.vcpus_per_instance)).max(u64::from(k.min_instances));
    steps.push(Step {
        name: "K2 instances",
        formula: format!(
            "max({} (minimum), ⌈{} ÷ {} vCPU⌉) = {} × {}",
            k.min_instances,
            fixed(vcpus, 2),
            k.vcpus_per_instance,
            instances,
            k.instance_type
        ),
        value: instances as f64,
        unit: "instances",
    });

    // Kafka: the disks hold the retention's bytes once per replica.
    let kf = &p.kafka;
    let retained_gb = kafka_bytes_s * w.kafka_retention_days * SECONDS_PER_DAY * rf / gb;
    let provisioned_gb = retained_gb * (1.0 + kf.storage_headroom);
    let by_throughput = units_for(kafka_mb_s * rf * (1.0 + kf.throughput_headroom) / kf.broker_write_mb_per_s);
    let by_storage = units_for(provisioned_gb / kf.broker_max_storage_gb);
    let needed = by_throughput.max(by_storage).max(u64::from(w.replication));
    let zones = u64::from(kf.availability_zones);
    let brokers = needed.div_ceil(zones) * zones;
    steps.push(Step {
        name: "Brokers for throughput",
        formula: format!(
            "⌈{} MB/s × {} (replication) × {} (headroom) ÷ {} MB/s per broker⌉ = {}",
            significant(kafka_mb_s, 4),
            w.replication,
            plain(1.0 + kf.throughput_headroom),
            plain(kf.broker_write_mb_per_s),
            by_throughput
        ),
        value: by_throughput as f64,
        unit: "brokers",
    });
    steps.push(Step {
        name: "Brokers for storage",
        formula: format!(
            "⌈{} GB (Kafka storage, below) ÷ {} GB per broker⌉ = {}",
            fixed(provisioned_gb, 1),
            plain(kf.broker_max_storage_gb),
            by_storage
        ),
        value: by_storage as f64,
        unit: "brokers",
    });
    steps.push(Step {
        name: "Brokers",
        formula: format!(
            "max({by_throughput}, {by_storage}, {} (replication)) up to a multiple of {zones} zones = {brokers}",
            w.replication
        ),
        value: brokers as f64,
        unit: "brokers",
    });
    let partitions = units_for(kafka_mb_s / kf.partition_mb_per_s).max(instances);
    steps.push(Step {
        name: "Partitions",
        formula: format!(
            "max(⌈{} MB/s ÷ {} MB/s per partition⌉, {instances} K2 consumers) = {partitions}",
            significant(kafka_mb_s, 4),
            plain(kf.partition_mb_per_s)
        ),
        value: partitions as f64,
        unit: "partitions",
    });

    // Iceberg commits: each instance commits when flush_max_rows wait or the
    // oldest row is flush_max_age old, whichever comes first.
    let ib = &p.iceberg;
    let rows_per_commit = (ib.flush_max_rows as f64).min(rate / instances as f64 * ib.flush_max_age_s);
    let commits = messages_per_month / rows_per_commit;
    let data_files =
        ((rows_per_commit as u64) / ib.rows_per_data_file).clamp(1, u64::from(k.vcpus_per_instance.max(1)));
    steps.push(Step {
        name: "Rows per commit",
        formula: format!(
            "min({} rows, {} msg/s ÷ {instances} instances × {} s) = {}",
            plain(ib.flush_max_rows as f64),
            plain(rate),
            plain(ib.flush_max_age_s),
            fixed(rows_per_commit, 0)
        ),
        value: rows_per_commit,
        unit: "rows",
    });
    steps.push(Step {
        name: "Commits",
        formula: format!(
            "{} msg/month ÷ {} rows = {} a month",
            fixed(messages_per_month, 0),
            fixed(rows_per_commit, 0),
            fixed(commits, 0)
        ),
        value: commits,
        unit: "commits/month",
    });
    steps.push(Step {
        name: "Files per commit",
        formula: format!(
            "{data_files} data (⌊{} ÷ {}⌋, 1 to {} vCPU) + {} metadata = {}",
            fixed(rows_per_commit, 0),
            plain(ib.rows_per_data_file as f64),
            k.vcpus_per_instance,
            ib.metadata_files_per_commit,
            data_files + u64::from(ib.metadata_files_per_commit)
        ),
        value: (data_files + u64::from(ib.metadata_files_per_commit)) as f64,
        unit: "files",
    });

    items.push(LineItem {
        name: "Kafka brokers",
        formula: format!(
            "{brokers} × {} × {} h × ${}/h",
            kf.broker_instance_type,
            plain(hours),
            plain(kf.broker_hourly_usd)
        ),
        usd_per_month: brokers as f64 * hours * kf.broker_hourly_usd,
    });
    items.push(LineItem {
        name: "Kafka storage (gp3)",
        formula: format!(
            "{} MB/s × {} s × {} d × {} (replication) = {} GB, × {} (headroom) = {} GB × ${}/GB-month",
            significant(kafka_mb_s, 4),
            plain(SECONDS_PER_DAY),
            plain(w.kafka_retention_days),
            w.replication,
            fixed(retained_gb, 1),
            plain(1.0 + kf.storage_headroom),
            fixed(provisioned_gb, 1),
            plain(p.ebs.gp3_gb_month_usd)
        ),
        usd_per_month: provisioned_gb * p.ebs.gp3_gb_month_usd,
    });

    let s3_gb = rate * SECONDS_PER_DAY * w.retention_days * p.message.bytes / p.message.parquet_compression_ratio / gb;
    items.push(LineItem {
        name: "S3 storage (Iceberg)",
        formula: format!(
            "{} msg/s × {} s × {} d × {} B ÷ {} (Parquet compression) = {} GB × ${}/GB-month",
            plain(rate),
            plain(SECONDS_PER_DAY),
            plain(w.retention_days),
            plain(p.message.bytes),
            plain(p.message.parquet_compression_ratio),
            fixed(s3_gb, 1),
            plain(p.s3.storage_gb_month_usd)
        ),
        usd_per_month: s3_gb * p.s3.storage_gb_month_usd,
    });
    let puts = commits * (data_files + u64::from(ib.metadata_files_per_commit)) as f64;
    items.push(LineItem {
        name: "S3 PUT requests",
        formula: format!(
            "{} commits × {} files = {} PUTs ÷ 1,000 × ${}",
            fixed(commits, 0),
            data_files + u64::from(ib.metadata_files_per_commit),
            fixed(puts, 0),
            plain(p.s3.put_per_1000_usd)
        ),
        usd_per_month: puts / 1000.0 * p.s3.put_per_1000_usd,
    });
    let gets = commits * f64::from(ib.get_requests_per_commit);
    items.push(LineItem {
        name: "S3 GET requests",
        formula: format!(
            "{} commits × {} reads = {} GETs ÷ 1,000 × ${}",
            fixed(commits, 0),
            ib.get_requests_per_commit,
            fixed(gets, 0),
            plain(p.s3.get_per_1000_usd)
        ),
        usd_per_month: gets / 1000.0 * p.s3.get_per_1000_usd,
    });

    items.push(LineItem {
        name: "K2 compute",
        formula: format!(
            "{instances} × {} × {} h × ${}/h",
            k.instance_type,
            plain(hours),
            plain(k.instance_hourly_usd)
        ),
        usd_per_month: instances as f64 * hours * k.instance_hourly_usd,
    });

    // Every byte crosses zones on the way to its leader (some), to each
    // follower (all of them: one replica per zone) and back to the consumer
    // (some). AWS charges both the sending and the receiving side.
    let n = &p.network;
    let crossings = n.producer_cross_az_fraction + (rf - 1.0) + n.consumer_cross_az_fraction;
    let cross_gb = kafka_bytes_s * seconds_per_month * crossings / gb;
    items.push(LineItem {
        name: "Cross-AZ traffic",
        formula: format!(
            "{} MB/s × {} s × ({} produce + {} replicas + {} consume) = {} GB × ${} × 2 (out and in)",
            significant(kafka_mb_s, 4),
            plain(seconds_per_month),
            plain(n.producer_cross_az_fraction),
            w.replication - 1,
            plain(n.consumer_cross_az_fraction),
            fixed(cross_gb, 1),
            plain(n.inter_az_gb_usd_each_way)
        ),
        usd_per_month: cross_gb * n.inter_az_gb_usd_each_way * 2.0,
    });
    items.push(LineItem {
        name: "Internet egress",
        formula: format!(
            "{} GB/month × ${}/GB",
            plain(n.internet_egress_gb_per_month),
            plain(n.internet_egress_gb_usd)
        ),
        usd_per_month: n.internet_egress_gb_per_month * n.internet_egress_gb_usd,
    });

    let total: f64 = items.iter().map(|i| i.usd_per_month).sum();
    let per_million = total / messages_per_month * 1e6;
    let per_million_formula = format!(
        "${} ÷ {} million messages = ${}",
        fixed(total, 2),
        plain(messages_per_month / 1e6),
        significant(per_million, 4)
    );
    Ok(Estimate {
        workload: w.clone(),
        prices: p.about.clone(),
        seconds_per_month,
        messages_per_month,
        steps,
        items,
        total_usd_per_month: total,
        usd_per_million_messages: per_million,
        per_million_formula,
        notes: NOTES.to_vec(),
    })
}

const NOTES: &[&str] = &[
    "S3 storage bills the full retained volume: the data of the retention days, the steady state once K2 has run \
     that long. K2 does not yet expire snapshots or delete old files: a retention job has to.",
    "Kafka mode: every message goes through Kafka into Iceberg. Messages are counted as trades in one table; \
     quotes in a second table add commits at low rates.",
    "Not modelled: K2's CPU for producing to and consuming from Kafka (not measured), Redis for shared dedup \
     state, the Iceberg catalog's database, queries (CPU and S3 reads), NAT gateway charges on the exchange \
     feed, load balancers, root volumes, multipart upload parts, support plans and discounts.",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::pricing::*;

    /// Round figures, so that every expected value below can be worked out by
    /// hand.
    fn round_pricing() -> Pricing {
        Pricing {
            about: About {
                region: "test".into(),
                currency: "USD".into(),
                prices_as_of: "2000-01-01".into(),
                source: "round numbers".into(),
            },
            units: Units { hours_per_month: 1000.0, bytes_per_gb: 1e9 },
            message: MessageSizing { bytes: 100.0, kafka_compression_ratio: 1.0, parquet_compression_ratio: 10.0 },
            k2: K2Sizing {
                ingest_msgs_per_vcpu_s: 1000.0,
                lake_rows_per_vcpu_s: 1000.0,
                headroom: 0.5,
                min_instances: 1,
                instance_type: "k".into(),
                vcpus_per_instance: 2,
                instance_hourly_usd: 0.1,
            },
            kafka: KafkaSizing {
                retention_days: 1.0,
                broker_instance_type: "b".into(),
                broker_hourly_usd: 1.0,
                broker_write_mb_per_s: 0.1,
                broker_max_storage_gb: 5.0,
                partition_mb_per_s: 0.05,
                throughput_headroom: 0.0,
                storage_headroom: 0.0,
                availability_zones: 3,
            },
            ebs: EbsPrices { gp3_gb_month_usd: 0.1 },
            s3: S3Prices { storage_gb_month_usd: 0.02, put_per_1000_usd: 0.005, get_per_1000_usd: 0.0004 },
            iceberg: IcebergSizing {
                flush_max_rows: 500_000,
                flush_max_age_s: 30.0,
                rows_per_data_file: 250_000,
                metadata_files_per_commit: 3,
                get_requests_per_commit: 3,
            },
            network: NetworkPrices {
                inter_az_gb_usd_each_way: 0.01,
                producer_cross_az_fraction: 0.5,
                consumer_cross_az_fraction: 0.5,
                internet_egress_gb_usd: 0.09,
                internet_egress_gb_per_month: 100.0,
            },
        }
    }

    fn workload(rate: f64) -> Workload {
        Workload { rate_msgs_per_s: rate, retention_days: 10.0, replication: 3, kafka_retention_days: 1.0 }
    }

    fn item(e: &Estimate, name: &str) -> f64 {
        e.items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no item {name}")).usd_per_month
    }

    fn step(e: &Estimate, name: &str) -> f64 {
        e.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name}")).value
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn a_thousand_messages_a_second_worked_by_hand() {
        let e = estimate(&workload(1000.0), &round_pricing()).unwrap();
        // A month is 1,000 h = 3,600,000 s: 3.6e9 messages.
        assert_eq!(e.messages_per_month, 3.6e9);
        // 1,000 msg/s × 100 B = 100,000 B/s = 0.1 MB/s.
        assert!(close(step(&e, "Kafka bytes"), 0.1));
        // 1,000 × (1/1,000 + 1/1,000) × 1.5 = 3 vCPUs; ⌈3 / 2⌉ = 2 instances.
        assert!(close(step(&e, "K2 vCPUs"), 3.0));
        assert_eq!(step(&e, "K2 instances"), 2.0);
        // 2 × 1,000 h × $0.1 = $200.
        assert!(close(item(&e, "K2 compute"), 200.0));
        // Throughput: ⌈0.1 MB/s × 3 ÷ 0.1⌉ = 3 (3.0000000000000004 in floats:
        // must not become 4). Storage: 100,000 B/s × 86,400 s × 1 d × 3 =
        // 25.92 GB; ⌈25.92 ÷ 5⌉ = 6. max(3, 6, 3) = 6, a multiple of 3 zones.
        assert_eq!(step(&e, "Brokers for throughput"), 3.0);
        assert_eq!(step(&e, "Brokers for storage"), 6.0);
        assert_eq!(step(&e, "Brokers"), 6.0);
        // max(⌈0.1 ÷ 0.05⌉, 2 instances) = 2.
        assert_eq!(step(&e, "Partitions"), 2.0);
        // 6 × 1,000 h × $1 = $6,000.
        assert!(close(item(&e, "Kafka brokers"), 6000.0));
        // 25.92 GB × $0.1 = $2.592.
        assert!(close(item(&e, "Kafka storage (gp3)"), 2.592));
        // 1,000 × 86,400 × 10 d × 100 B ÷ 10 = 8.64e9 B = 8.64 GB × $0.02.
        assert!(close(item(&e, "S3 storage (Iceberg)"), 0.1728));
        // Each instance takes 500 msg/s: min(500,000, 500 × 30 s) = 15,000
        // rows a commit; 3.6e9 ÷ 15,000 = 240,000 commits, each 1 data file
        // (15,000 < 250,000) + 3 metadata = 960,000 PUTs = $4.80; 720,000
        // GETs = $0.288.
        assert!(close(step(&e, "Rows per commit"), 15_000.0));
        assert!(close(step(&e, "Commits"), 240_000.0));
        assert_eq!(step(&e, "Files per commit"), 4.0);
        assert!(close(item(&e, "S3 PUT requests"), 4.8));
        assert!(close(item(&e, "S3 GET requests"), 0.288));
        // 100,000 B/s × 3,600,000 s = 360 GB, crossing 0.5 + 2 + 0.5 = 3
        // times = 1,080 GB × $0.01 × 2 = $21.60.
        assert!(close(item(&e, "Cross-AZ traffic"), 21.6));
        // 100 GB × $0.09.
        assert!(close(item(&e, "Internet egress"), 9.0));
        // 6,000 + 2.592 + 0.1728 + 4.8 + 0.288 + 200 + 21.6 + 9.
        assert!(close(e.total_usd_per_month, 6238.4528));
        // 6,238.4528 ÷ 3,600 million messages.
        assert!(close(e.usd_per_million_messages, 6238.4528 / 3600.0));
    }

    #[test]
    fn large_rates_commit_at_the_row_limit_with_one_file_per_vcpu() {
        // 1,000,000 msg/s × (1/1,000 + 1/1,000) × 1.5 = 3,000 vCPUs: 1,500
        // instances of 667 msg/s each, 20,000 rows in 30 s, so the age limit
        // still rules.
        let e = estimate(&workload(1e6), &round_pricing()).unwrap();
        assert_eq!(step(&e, "K2 instances"), 1500.0);
        assert!(close(step(&e, "Rows per commit"), 1e6 / 1500.0 * 30.0));
        // Faster K2, held at its minimum of 2 instances: 500,000 msg/s each
        // reach 500,000 rows in 1 s; 500,000 ÷ 250,000 = 2 data files, and 2
        // vCPUs allow 2.
        let mut p = round_pricing();
        p.k2.min_instances = 2;
        p.k2.ingest_msgs_per_vcpu_s = 2e6;
        p.k2.lake_rows_per_vcpu_s = 2e6;
        let e = estimate(&workload(1e6), &p).unwrap();
        assert_eq!(step(&e, "K2 instances"), 2.0);
        assert_eq!(step(&e, "Rows per commit"), 500_000.0);
        assert_eq!(step(&e, "Files per commit"), 5.0);
    }

    #[test]
    fn the_per_million_cost_is_the_total_spread_over_the_month() {
        let p = Pricing::shipped().unwrap();
        for rate in [1.0, 999.5, 1000.0, 250_000.0, 1e6, 3.3e7] {
            let e = estimate(&workload(rate), &p).unwrap();
            let sum: f64 = e.items.iter().map(|i| i.usd_per_month).sum();
            assert!(close(sum, e.total_usd_per_month), "rate {rate}");
            assert!(
                close(e.usd_per_million_messages * (e.messages_per_month / 1e6), e.total_usd_per_month),
                "rate {rate}: {} × {} vs {}",
                e.usd_per_million_messages,
                e.messages_per_month / 1e6,
                e.total_usd_per_month
            );
            assert!(close(e.messages_per_month, rate * p.units.hours_per_month * 3600.0));
        }
    }

    #[test]
    fn nonsense_workloads_are_refused_by_name() {
        let p = round_pricing();
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let err = estimate(&workload(rate), &p).unwrap_err().to_string();
            assert!(err.contains("--rate"), "{rate}: {err}");
        }
        let w = Workload { retention_days: 0.0, replication: 0, ..workload(1000.0) };
        let err = estimate(&w, &p).unwrap_err().to_string();
        assert!(err.contains("--retention-days") && err.contains("--replication"), "{err}");
    }

    #[test]
    fn formulas_carry_their_inputs() {
        let e = estimate(&workload(1000.0), &round_pricing()).unwrap();
        let s3 = e.items.iter().find(|i| i.name == "S3 storage (Iceberg)").unwrap();
        assert_eq!(
            s3.formula,
            "1,000 msg/s × 86,400 s × 10 d × 100 B ÷ 10 (Parquet compression) = 8.6 GB × $0.02/GB-month"
        );
    }
}
