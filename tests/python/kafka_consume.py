"""Consumes K2's topic with Confluent's own Python client, decoding values
through K2's schema registry, and prints them as one JSON list.

usage: kafka_consume.py BOOTSTRAP REGISTRY_URL TOPIC COUNT
"""
import json
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": f"{topic}-python",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
})
consumer.subscribe([topic])
values = []
deadline = time.time() + 60
while len(values) < count and time.time() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        raise SystemExit(f"consumer error: {msg.error()}")
    value = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
    value = {k: (str(v) if not isinstance(v, (int, bool, type(None), list, dict)) else v) for k, v in value.items()}
    value["_key"] = msg.key().decode()
    values.append(value)
consumer.close()
print(json.dumps(values))
