"""The pinned Flink Kafka connector loads in PyFlink and reads the real broker."""

from __future__ import annotations

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

from vatic.connectors.kafka import KafkaSettings, Producer
from vatic.streaming.environment import connector_jars, local_environment


def test_connector_jar_is_pinned_and_present():
    jars = connector_jars()
    assert len(jars) == 1
    assert jars[0].startswith("file:///")
    assert jars[0].endswith("flink-sql-connector-kafka-5.0.0-2.2.jar")


def test_kafka_source_reads_the_real_broker(kafka_bootstrap, new_topic):
    topic = new_topic("flink", partitions=2)
    producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    sent = [f"event-{i}" for i in range(50)]
    for value in sent:
        producer.produce(topic, value.encode())
    producer.flush()

    env = local_environment(parallelism=1)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka_bootstrap)
        .set_topics(topic)
        .set_group_id("flink-connector-test")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    stream = env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka").map(
        lambda v: v.upper(), output_type=Types.STRING()
    )
    with stream.execute_and_collect() as results:
        received = list(results)
    assert sorted(received) == sorted(v.upper() for v in sent)
