"""Confluent's own Python client against K2's built-in schema registry.

usage: registry_interop.py REGISTRY_URL SUBJECT AVSC_FILE FRAMES_FILE

Registers the schema through confluent-kafka's SchemaRegistryClient (which
must get the id K2 already gave it), reads it back, asks about compatibility,
then decodes K2's Confluent frames (one hex string per line) with
confluent-kafka's AvroDeserializer, which fetches the writer schema by the id
in each frame from K2's registry. Prints one JSON object.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

url, subject, avsc_path, frames_path = sys.argv[1:5]
avsc = open(avsc_path).read()
client = SchemaRegistryClient({"url": url})
schema_id = client.register_schema(subject, Schema(avsc, "AVRO"))
latest = client.get_latest_version(subject)
compatible = client.test_compatibility(subject, Schema(avsc, "AVRO"))
deserializer = AvroDeserializer(client)
ctx = SerializationContext(subject.removesuffix("-value"), MessageField.VALUE)
values = []
for line in open(frames_path):
    value = deserializer(bytes.fromhex(line.strip()), ctx)
    values.append({k: (str(v) if not isinstance(v, (int, bool, type(None), list, dict)) else v) for k, v in value.items()})
print(json.dumps({
    "id": schema_id,
    "latest_version": latest.version,
    "latest_id": latest.schema_id,
    "compatible": compatible,
    "subjects": client.get_subjects(),
    "values": values,
}))
