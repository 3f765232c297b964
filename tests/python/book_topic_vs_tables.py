"""Judges Kafka mode's order-book landing with other engines than K2's: reads
every record of a K2 book topic with Confluent's Python client (decoded
through the schema registry) and K2's book tables with pyiceberg, and
checks that the tables hold each record of the topic exactly once, at the
instant its producer stamped it.

The one rule the landing applies: an `unsynced` record with cause
`restart` (a producer's first record of a book) is dated just after the
book's last record before it in the topic, and dropped when the book has
none; this script applies it from the topic alone.

usage: book_topic_vs_tables.py BOOTSTRAP REGISTRY_URL TOPIC DATA_DIR

Prints one JSON object: records read, landed, and the problems found
(missing, doubled, unknown: a record at another instant is both missing
and unknown), each list cut to its first ten.
"""
import json
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pyiceberg.catalog.sql import SqlCatalog

from topic_read import messages

bootstrap, registry_url, topic, data_dir = sys.argv[1:5]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(value):
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
context = SerializationContext(topic, MessageField.VALUE)
by_partition = defaultdict(list)  # partition -> [(offset, record)]
for msg in messages(bootstrap, topic):
    by_partition[msg.partition()].append((msg.offset(), deserializer(msg.value(), context)))

# What the tables must hold: (message id, instant) -> rows.
expected = Counter()
read = dropped = 0
for partition, records in by_partition.items():
    last = {}  # (exchange, symbol) -> the book's last instant so far
    for _, r in sorted(records, key=lambda x: x[0]):
        read += 1
        book = (r["exchange"], r["symbol"])
        at = micros(r["ingestion_timestamp"])
        if r["kind"] == "unsynced" and r.get("cause") == "restart":
            if book not in last:
                dropped += 1
                continue
            at = min(at, last[book] + 1)
        last[book] = max(last.get(book, at), at)
        expected[(str(r["message_id"]), at)] += max(1, len(r["bids"]) + len(r["asks"]))

catalog = SqlCatalog("k2", uri=f"sqlite:///{data_dir}/catalog.db", warehouse=f"file://{data_dir}/warehouse")
landed = Counter()  # (message id, instant) -> rows
for name in ("market.book_updates", "market.book_snapshots"):
    cols = ("message_id", "ingestion_timestamp")
    for row in catalog.load_table(name).scan(selected_fields=cols).to_arrow().to_pylist():
        landed[(row["message_id"], micros(row["ingestion_timestamp"]))] += 1

missing = [f"{k[0]}@{k[1]}" for k in expected if k not in landed]
unknown = [f"{k[0]}@{k[1]}" for k in landed if k not in expected]
doubled = [{"record": f"{k[0]}@{k[1]}", "rows": landed[k], "expected": n}
           for k, n in expected.items() if k in landed and landed[k] != n]

print(json.dumps({
    "read": read,
    "restart_markers_dropped": dropped,
    "expected": len(expected),
    "landed": len(landed),
    "missing": len(missing), "missing_first": missing[:10],
    "doubled": len(doubled), "doubled_first": doubled[:10],
    "unknown": len(unknown), "unknown_first": unknown[:10],
}))
