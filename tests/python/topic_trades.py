"""A second judge of what is in Kafka: reads every partition of a K2 trades
topic from its start to its high watermark with Confluent's own Python
client (manual assignment, no group), decodes each value through the schema
registry, and prints per symbol the distinct trade sequence numbers and how
many records were copies of one already read, as one JSON object.

usage: topic_trades.py BOOTSTRAP REGISTRY_URL TOPIC
"""
import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from topic_read import messages

bootstrap, registry_url, topic = sys.argv[1], sys.argv[2], sys.argv[3]
deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
context = SerializationContext(topic, MessageField.VALUE)
seen, copies, records, undecodable = {}, {}, 0, []
for msg in messages(bootstrap, topic):
    records += 1
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
print(json.dumps({
    "records": records,
    "undecodable": undecodable[:20],
    "per_symbol": {
        symbol: {"distinct": len(s), "min": min(s), "max": max(s), "copies": copies.get(symbol, 0)}
        for symbol, s in seen.items()
    },
}))
