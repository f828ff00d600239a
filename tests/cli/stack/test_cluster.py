"""The three-node Kafka cluster of ``vatic stack up --cluster``: a real KRaft quorum of three processes on free
ports, its durability settings, one node killed in the middle of a transaction, status per node, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fixtures.clusters import KAFKA_CLUSTER_PORTS, private_settings, stack_env
from vatic.cli.stack.cluster import KafkaClusterNode, cluster_brokers
from vatic.cli.stack.settings import StackSettings
from vatic.cli.stack.stack import Stack
from vatic.schemas.errors import PortInUse

VATIC = str(Path(sys.executable).parent / "vatic")


@pytest.fixture
def spare(tmp_path) -> StackSettings:
    return private_settings(tmp_path / "home", KAFKA_CLUSTER_PORTS, start_timeout_s=120)


def test_three_nodes_form_one_cluster_and_lose_one_node_without_losing_a_write(spare):
    stack = Stack(spare)
    assert "kafka-1" not in [c.name for c in stack.select(None)]  # optional: not in a plain `vatic stack up`
    try:
        up = subprocess.run([VATIC, "stack", "up", "kafka-cluster"], env=stack_env(spare, KAFKA_CLUSTER_PORTS),
                            capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert [line.split()[:2] for line in up.stdout.splitlines()] == [
            ["kafka-1", "started"], ["kafka-2", "started"], ["kafka-3", "started"]
        ]  # fmt: skip
        bootstrap = spare.kafka_cluster_bootstrap
        assert sorted(cluster_brokers(bootstrap)) == [1, 2, 3]
        # one cluster id in three storages, the internal topics on every node
        ids = {(spare.home / f"kafka-{n}" / "data" / "meta.properties").read_text().split("cluster.id=")[1][:22]
               for n in (1, 2, 3)}  # fmt: skip
        assert len(ids) == 1
        props = (spare.home / "kafka-2" / "server.properties").read_text()
        for line in ("default.replication.factor=3", "min.insync.replicas=2", "transaction.state.log.min.isr=2",
                     "unclean.leader.election.enable=false", "node.id=2"):  # fmt: skip
            assert line in props.splitlines()

        topic = f"cluster-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 4)])[topic].result(timeout=30)  # the broker's defaults: 3 replicas
        meta = admin.list_topics(timeout=10).topics[topic]
        assert {len(p.replicas) for p in meta.partitions.values()} == {3}
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{topic}", "acks": "all"})
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(500):
            producer.produce(topic, str(i).encode(), key=str(i).encode())
        producer.flush(30)
        # the leader of partition 0 dies (SIGKILL) with the transaction open; the others take over
        leader = meta.partitions[0].leader
        node = stack.components[f"kafka-{leader}"]
        assert isinstance(node, KafkaClusterNode)
        pid = node.process.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for i in range(500, 1000):
            producer.produce(topic, str(i).encode(), key=str(i).encode())
        producer.commit_transaction(60)
        health = {h.name: h for h in stack.status(["kafka-cluster"])}
        assert health[node.name].state == "down"
        assert {health[n].state for n in health if n != node.name} == {"up"}
        assert "2 broker(s) listed" in next(h.detail for n, h in health.items() if n != node.name)

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                             "isolation.level": "read_committed"})  # fmt: skip
        consumer.subscribe([topic])
        seen: set[bytes] = set()
        for _ in range(60):
            for message in consumer.consume(1000, timeout=1):
                if message.error() is None:
                    seen.add(message.value())
            if len(seen) == 1000:
                break
        consumer.close()
        assert seen == {str(i).encode() for i in range(1000)}  # every acknowledged record, once

        # back: the node rejoins with its storage; status shows three brokers again
        assert stack.up([node.name]) == [node.name]
        status = subprocess.run([VATIC, "stack", "status", "kafka-cluster"], env=stack_env(spare, KAFKA_CLUSTER_PORTS),
                                capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("3 broker(s) listed") == 3
    finally:
        stopped = stack.down(["kafka-cluster"])
    assert stopped == ["kafka-3", "kafka-2", "kafka-1"]
    assert {h.state for h in stack.status(["kafka-cluster"])} == {"down"}


def test_a_taken_port_names_the_variable_that_moves_it(spare):
    with socket.socket() as holder:
        holder.bind((spare.host, spare.kafka2_controller_port))
        holder.listen()
        node = Stack(spare).components["kafka-2"]
        with pytest.raises(PortInUse) as info:
            node.start()
    assert "VATIC_STACK_KAFKA2_CONTROLLER_PORT=<free port>" in str(info.value)
    assert "\n" not in str(info.value)
    assert node.process.pid() is None
