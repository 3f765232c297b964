//! Kafka mode's producing side for order books: the records the order-book
//! actors make go to `market.{asset_class}.book.{exchange}`, keyed by
//! symbol (one book's records stay in order in one partition), as Avro in
//! the Confluent wire format under `{topic}-value`. The flushers' book
//! lander ([`super::book_lander`]) lands them in the book tables.
//!
//! Records are stamped here, as the embedded book log stamps them
//! ([`crate::lake::books::stamp`]): K2's instant orders a book's records.
//! The first record of each book in this process is preceded by an
//! `unsynced` record with cause `restart`: after a crash the book's last
//! records in the log end a segment nobody closed, and the lander dates
//! this marker just after them, so the span the crash lost reads as
//! unsynced, never as a stale book. A graceful stop ends each synced book
//! with `stop`.
//!
//! A record the broker does not take (after `kafka.message_timeout`) is
//! counted and logged; the book's stored chain then breaks there, which a
//! replay reads as unsynced (`store_gap`), and the order-book actor is told
//! ([`BookRecorder::take_broken`]): it resyncs the book, which restarts the
//! chain.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use compact_str::CompactString;
use k2_core::book::replay::records;
use k2_core::codec::book::encode_book;
use k2_core::codec::wire::MAGIC;
use k2_core::{AssetClass, BookEventKind, BookEventV2, Timestamp};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{Notify, mpsc};

use super::KafkaError;
use super::schemas::SchemaSource;
use super::topics::{book_topic, ensure};
use crate::lake::books::RESTART;
use crate::runtime::config::KafkaConfig;
use crate::state::books::BookRecorder;

/// (exchange, symbol).
type Book = (CompactString, CompactString);

/// Takes the order-book actors' records and produces them.
pub struct KafkaBookRecorder {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Stamps>,
    to_send: mpsc::UnboundedSender<BookEventV2>,
    /// Records taken and neither delivered nor failed yet.
    pending: AtomicUsize,
    settled: Notify,
    /// Books a record of which the broker did not take.
    broken: Mutex<HashSet<Book>>,
}

struct Stamps {
    /// The last instant stamped.
    clock: i64,
    /// Books this process has recorded something of.
    seen: HashSet<Book>,
    /// Whether each book's last record left it synced.
    synced: HashMap<Book, bool>,
}

impl KafkaBookRecorder {
    /// Starts the producing task on the current runtime.
    pub fn start(config: &KafkaConfig, schemas: SchemaSource) -> Result<Arc<Self>, KafkaError> {
        let producer: FutureProducer = super::producer_config(config).create()?;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
        let (to_send, receiving) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(Stamps {
                clock: Timestamp::now().as_micros(),
                seen: HashSet::new(),
                synced: HashMap::new(),
            }),
            to_send,
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
            broken: Mutex::new(HashSet::new()),
        });
        let sending = Sending { shared: shared.clone(), producer, admin, config: config.clone(), schemas };
        tokio::spawn(sending.run(receiving));
        Ok(Arc::new(Self { shared }))
    }

    /// Records taken and not yet delivered or failed.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Ends every book this process left synced with `stop`, then waits
    /// (until `within` at most) for every record to be delivered or to
    /// fail; how many were still pending.
    pub async fn close(&self, within: Duration) -> usize {
        let ends: Vec<BookEventV2> = {
            let state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .synced
                .iter()
                .filter(|(_, synced)| **synced)
                .map(|((exchange, symbol), _)| {
                    records::state(exchange, symbol, BookEventKind::Unsynced, 0, Some("stop"), Timestamp::now())
                })
                .collect()
        };
        self.take(ends);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let settled = self.shared.settled.notified();
            let left = self.pending();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            let _ = tokio::time::timeout_at(deadline, settled).await;
        }
    }

    fn take(&self, taken: Vec<BookEventV2>) {
        let shared = &self.shared;
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Timestamp::now().as_micros();
        for mut r in taken {
            let book = (r.exchange.clone(), r.symbol.clone());
            if !state.seen.contains(&book) {
                state.seen.insert(book.clone());
                let mut marker =
                    records::state(&r.exchange, &r.symbol, BookEventKind::Unsynced, 0, Some(RESTART), Timestamp::now());
                marker.asset_class = r.asset_class;
                crate::lake::books::stamp(&mut state.clock, now, &mut marker);
                shared.send(marker);
            }
            crate::lake::books::stamp(&mut state.clock, now, &mut r);
            if matches!(r.kind, BookEventKind::Synced | BookEventKind::Unsynced) {
                state.synced.insert(book, r.kind == BookEventKind::Synced);
            }
            shared.send(r);
        }
    }
}

impl Shared {
    fn send(&self, r: BookEventV2) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.to_send.send(r).is_err() {
            // The sending task is gone (the runtime is stopping).
            self.done(1);
            metrics::counter!("k2_book_records_undelivered_total", "reason" => "stopped").increment(1);
        }
    }

    fn broke(&self, book: Book) {
        self.broken.lock().unwrap_or_else(PoisonError::into_inner).insert(book);
    }

    fn done(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::AcqRel) == n {
            self.settled.notify_waiters();
        }
    }
}

impl BookRecorder for KafkaBookRecorder {
    fn record(&self, records: Vec<BookEventV2>) {
        self.take(records);
    }

    fn take_broken(&self, symbols: &[CompactString]) -> Vec<CompactString> {
        let mut broken = self.shared.broken.lock().unwrap_or_else(PoisonError::into_inner);
        if broken.is_empty() {
            return Vec::new();
        }
        let mine: Vec<Book> = broken.iter().filter(|(_, symbol)| symbols.contains(symbol)).cloned().collect();
        mine.into_iter()
            .map(|book| {
                broken.remove(&book);
                book.1
            })
            .collect()
    }
}

/// The task handing records to librdkafka.
struct Sending {
    shared: Arc<Shared>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    config: KafkaConfig,
    schemas: SchemaSource,
}

impl Sending {
    async fn run(self, mut receiving: mpsc::UnboundedReceiver<BookEventV2>) {
        let mut topics: HashMap<(AssetClass, CompactString), (String, u32)> = HashMap::new();
        let mut batch = Vec::with_capacity(1024);
        let mut frame = Vec::with_capacity(1024);
        while receiving.recv_many(&mut batch, 1024).await > 0 {
            let mut deliveries = Vec::with_capacity(batch.len());
            for r in batch.drain(..) {
                let key = (r.asset_class, r.exchange.clone());
                if !topics.contains_key(&key) {
                    let topic = book_topic(&self.config.topic_prefix, r.asset_class, &r.exchange);
                    let id = self.schema_id(&topic).await;
                    topics.insert(key.clone(), (topic, id));
                }
                let Some((topic, id)) = topics.get(&key) else { continue };
                frame.clear();
                frame.push(MAGIC);
                frame.extend_from_slice(&id.to_be_bytes());
                if let Err(e) = encode_book(&r, &mut frame) {
                    // Not expected: the actors make only records that fit.
                    tracing::error!(%topic, symbol = %r.symbol, error = %e, "book record refused by its encoder");
                    metrics::counter!("k2_book_records_undelivered_total", "reason" => "encode").increment(1);
                    self.shared.done(1);
                    continue;
                }
                let mut record = FutureRecord::to(topic).key(r.symbol.as_str()).payload(&frame);
                // A full queue is librdkafka saying "later": wait, never drop.
                loop {
                    match self.producer.send_result(record) {
                        Ok(delivery) => {
                            deliveries.push((delivery, (r.exchange.clone(), r.symbol.clone())));
                            break;
                        }
                        Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err((e, _)) => {
                            tracing::error!(%topic, symbol = %r.symbol, error = %e, "book record refused by the producer");
                            metrics::counter!("k2_book_records_undelivered_total", "reason" => "refused").increment(1);
                            self.shared.broke((r.exchange.clone(), r.symbol.clone()));
                            self.shared.done(1);
                            break;
                        }
                    }
                }
            }
            // Deliveries settle on their own task: the next batch goes now.
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let n = deliveries.len();
                let (mut ok, mut failed) = (0u64, 0u64);
                for (delivery, book) in deliveries {
                    match delivery.await {
                        Ok(Ok(_)) => ok += 1,
                        outcome => {
                            if let Ok(Err((e, _))) = outcome {
                                tracing::error!(symbol = %book.1, error = %e, "book record not delivered; its book's stored chain breaks here and it resyncs");
                            }
                            shared.broke(book);
                            failed += 1;
                        }
                    }
                }
                metrics::counter!("k2_book_records_produced_total").increment(ok);
                if failed > 0 {
                    metrics::counter!("k2_book_records_undelivered_total", "reason" => "delivery").increment(failed);
                }
                shared.done(n);
            });
        }
    }

    /// The topic's value schema id, creating the topic and registering
    /// `{topic}-value` first; a broker or registry away is waited for.
    async fn schema_id(&self, topic: &str) -> u32 {
        let mut wait = Duration::from_millis(200);
        loop {
            let found = match ensure(&self.admin, &self.config, topic).await {
                Ok(()) => self.schemas.id(&format!("{topic}-value"), k2_core::schema::BOOK_V2_AVSC).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(id) => return id,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "book topic not ready; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each order-book actor takes back only its own broken books, once;
    /// the marker before each book's first record comes first, stamped
    /// before it.
    #[test]
    fn broken_books_go_back_to_their_actor_once_and_each_book_opens_with_a_restart() {
        crate::runtime::run(|| async {
            let env = figment::providers::Env::prefixed("K2_TEST_UNSET__");
            let mut config = crate::runtime::config::Config::load_from(None, env).expect("default config");
            // Nothing listens here: the records wait in librdkafka's queue.
            config.kafka.bootstrap_servers = "127.0.0.1:1".to_owned();
            let schemas = SchemaSource::Remote { url: "http://127.0.0.1:1".to_owned(), http: reqwest::Client::new() };
            let recorder = KafkaBookRecorder::start(&config.kafka, schemas).expect("recorder");
            let book = |s: &str| (CompactString::from("BINANCE"), CompactString::from(s));
            recorder.shared.broke(book("BTCUSDT"));
            recorder.shared.broke(book("ETHUSDT"));
            let mine = [CompactString::from("BTCUSDT"), CompactString::from("BNBUSDT")];
            assert_eq!(recorder.take_broken(&mine), vec![CompactString::from("BTCUSDT")]);
            assert!(recorder.take_broken(&mine).is_empty(), "taken once");
            assert_eq!(recorder.take_broken(&[CompactString::from("ETHUSDT")]), vec![CompactString::from("ETHUSDT")]);

            let at = Timestamp::now();
            let first = records::state("BINANCE", "BTCUSDT", BookEventKind::Unsynced, 0, Some("gap"), at);
            let second = first.clone();
            recorder.record(vec![first]);
            recorder.record(vec![second]);
            assert_eq!(recorder.pending(), 3, "a restart marker, then both records");
        })
        .expect("runtime");
    }
}
