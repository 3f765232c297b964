"""Reads every partition of a Kafka topic from its start to its high
watermark as found at the start, with Confluent's Python client (manual
assignment, no group): the judges' shared way into a topic."""
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition


def messages(bootstrap, topic, within=600):
    """Yields each message below its partition's end, in partition order."""
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
    done, read = set(), 0
    deadline = time.time() + within
    while len(done) < len(ends):
        if time.time() > deadline:
            raise SystemExit(f"read {read} records; partitions not finished: {sorted(set(ends) - done)}")
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
        read += 1
        if msg.offset() + 1 >= ends[msg.partition()]:
            done.add(msg.partition())
        yield msg
    consumer.close()
