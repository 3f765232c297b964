"""A second judge of what is in Kafka: reads every partition of a K2 trades
topic from its start to its high watermark with Confluent's own Python
client (manual assignment, no group), decodes each value through the schema
registry, and prints per symbol the distinct trade sequence numbers and how
many records were copies of one already read, as one JSON object.

usage: topic_trades.py BOOTSTRAP REGISTRY_URL TOPIC
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url, topic = sys.argv[1], sys.argv[2], sys.argv[3]
deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
context = SerializationContext(topic, MessageField.VALUE)
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"{topic}-judge",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
})
partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
ends = {}
for p in partitions:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
    if high > low:
        ends[p] = high
consumer.assign([TopicPartition(topic, p, 0) for p in ends])

seen, copies, records, undecodable = {}, {}, 0, []
done = set()
deadline = time.time() + 600
while len(done) < len(ends):
    if time.time() > deadline:
        raise SystemExit(f"read {records} records; partitions not finished: {sorted(set(ends) - done)}")
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        if msg.error().code() == KafkaError._PARTITION_EOF:
            if msg.offset() >= ends[msg.partition()]:
                done.add(msg.partition())
            continue
        raise SystemExit(f"consumer error: {msg.error()}")
    if msg.offset() >= ends[msg.partition()]:
        done.add(msg.partition())
        continue
    records += 1
    if msg.offset() + 1 >= ends[msg.partition()]:
        done.add(msg.partition())
    try:
        value = deserializer(msg.value(), context)
    except Exception as e:  # what K2's consumer would dead-letter
        undecodable.append(f"{msg.partition()}@{msg.offset()}: {e}")
        continue
    symbol, sequence = value["symbol"], value["source_sequence"]
    sequences = seen.setdefault(symbol, set())
    if sequence in sequences:
        copies[symbol] = copies.get(symbol, 0) + 1
    sequences.add(sequence)
consumer.close()

print(json.dumps({
    "records": records,
    "undecodable": undecodable[:20],
    "per_symbol": {
        symbol: {"distinct": len(s), "min": min(s), "max": max(s), "copies": copies.get(symbol, 0)}
        for symbol, s in seen.items()
    },
}))
