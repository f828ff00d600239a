"""A three-node Kafka cluster on loopback (``vatic stack up --cluster``): what a production Kafka looks like, so that
broker faults (a leader lost mid-transaction, a rolling restart) can be run against the real thing.

Three KRaft nodes ``kafka-1`` .. ``kafka-3``, each a combined broker + controller from the same pinned jars as the
single broker (:class:`~vatic.cli.stack.components.KafkaBroker`), a process of its own with its own ports
(``kafka<N>_port`` for clients, ``kafka<N>_controller_port`` for the quorum), data folder and log under
``<home>/kafka-<N>/``. The quorum's voters are the three nodes (static ``controller.quorum.voters``); the three
storages are formatted with one cluster id, kept in ``<home>/kafka-cluster/cluster.id``.

Durability: every topic vatic creates on it and the internal ones (offsets, transactions) have 3 replicas and
``min.insync.replicas`` 2, so a write is acknowledged (``acks=all``) once two nodes have it and any one node can be
lost without losing an acknowledged record or stopping writes; no unclean leader election.

Readiness: a node alone cannot serve (the quorum needs two voters), so a node counts as started when its process
listens on its controller port; once a majority of the nodes run, starting one waits until the cluster's metadata
lists it as a broker. ``vatic stack status`` shows each node: ``up`` when it is listed, with the partitions it
leads; ``starting`` while it waits for the quorum.
"""

from __future__ import annotations

import time

from vatic.cli.stack.artifacts import KAFKA_VERSION
from vatic.cli.stack.components import Component, Health, KafkaBroker, broker_durability, new_cluster_id
from vatic.cli.stack.process import port_accepts
from vatic.schemas.errors import ConfigError

__all__ = ["CLUSTER_NODES", "KAFKA_CLUSTER", "MIN_INSYNC", "KafkaClusterNode", "cluster_brokers"]

#: how many nodes, and how many copies of each partition (every node holds one)
CLUSTER_NODES = 3
#: replicas that must hold a record before it is acknowledged: one node may be down
MIN_INSYNC = 2


def cluster_brokers(bootstrap: str, timeout_s: float = 2.0) -> dict[int, int]:
    """Broker id -> number of partitions it leads, as the cluster's metadata says (empty when nobody answers)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000})
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return {}
    leaders = dict.fromkeys(meta.brokers, 0)
    for topic in meta.topics.values():
        for partition in topic.partitions.values():
            if partition.leader in leaders:
                leaders[partition.leader] += 1
    return leaders


class KafkaClusterNode(KafkaBroker):
    """Node ``node_id`` of the three-node cluster (see the module docstring); subclasses fix the id."""

    node_id: int = 1
    name = "kafka-1"

    @property
    def client_port(self) -> int:
        return int(getattr(self.settings, f"kafka{self.node_id}_port"))

    @property
    def controller_port(self) -> int:
        return int(getattr(self.settings, f"kafka{self.node_id}_controller_port"))

    @property
    def ports(self) -> list[int]:
        return [self.client_port, self.controller_port]

    @property
    def bootstrap(self) -> str:
        """This node's own client listener."""
        return f"{self.settings.host}:{self.client_port}"

    def argv(self) -> list[str]:
        argv = super().argv()
        return [f"-Xmx{self.settings.kafka_cluster_heap}" if a.startswith("-Xmx") else a for a in argv]

    def server_properties(self) -> str:
        s = self.settings
        voters = ",".join(
            f"{n}@{s.host}:{getattr(s, f'kafka{n}_controller_port')}" for n in range(1, CLUSTER_NODES + 1)
        )
        return "\n".join(
            [
                "# written by vatic (cli/stack/cluster.py); regenerated at each start",
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://{s.host}:{self.client_port},CONTROLLER://{s.host}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{s.host}:{self.client_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"broker.rack=node-{self.node_id}",
                *broker_durability(self.data_dir, replicas=CLUSTER_NODES, min_isr=MIN_INSYNC),
                "",
            ]
        )

    def cluster_id(self) -> str:
        """The cluster id all three storages are formatted with (made once per stack home)."""
        path = self.settings.home / "kafka-cluster" / "cluster.id"
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        made = new_cluster_id()
        path.write_text(made, encoding="utf-8")
        return made

    def storage_cluster_id(self) -> str:
        return self.cluster_id()

    def _running_nodes(self) -> int:
        return sum(1 for cls in KAFKA_CLUSTER.values() if cls(self.settings).process.pid() is not None)

    def serving(self) -> bool:
        """True when the cluster's metadata (asked at this node) lists this node as a broker."""
        if not port_accepts(self.settings.host, self.client_port):
            return False
        return self.node_id in cluster_brokers(self.bootstrap)

    def ready(self) -> bool:
        return port_accepts(self.settings.host, self.controller_port)

    def port_variable(self, port: int) -> str:
        return f"VATIC_STACK_KAFKA{self.node_id}_{'PORT' if port == self.client_port else 'CONTROLLER_PORT'}"

    def start(self) -> bool:
        started = super().start()
        if self._running_nodes() * 2 > CLUSTER_NODES:
            self.wait_serving(self.settings.start_timeout_s)
        return started

    def wait_serving(self, timeout_s: float) -> None:
        """Wait until the cluster lists this node as a broker; one-line :class:`ConfigError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.serving():
            if self.process.pid() is None:
                raise ConfigError(f"{self.name} exited while joining the cluster; see {self.process.log_file}")
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"{self.name} is not listed by the cluster after {timeout_s:.0f}s (quorum: "
                    f"{self._running_nodes()} of {CLUSTER_NODES} nodes run); see {self.process.log_file}"
                )
            time.sleep(0.2)

    def health(self) -> Health:
        pid = self.process.pid()
        if pid is None:
            return super().health()
        leaders = cluster_brokers(self.bootstrap) if port_accepts(self.settings.host, self.client_port) else {}
        if self.node_id not in leaders:
            return Health(self.name, "starting", self.client_port, pid, "waiting for the quorum (a majority of nodes)")
        detail = (
            f"Kafka {KAFKA_VERSION} node {self.node_id} of {CLUSTER_NODES}: {len(leaders)} broker(s) listed, leads "
            f"{leaders[self.node_id]} partition(s); bootstrap {self.settings.kafka_cluster_bootstrap}"
        )
        return Health(self.name, "up", self.client_port, pid, detail)


class KafkaClusterNode2(KafkaClusterNode):
    node_id = 2
    name = "kafka-2"


class KafkaClusterNode3(KafkaClusterNode):
    node_id = 3
    name = "kafka-3"


#: the cluster's nodes in start order (optional components: ``vatic stack up --cluster`` or ``kafka-cluster``)
KAFKA_CLUSTER: dict[str, type[Component]] = {
    KafkaClusterNode.name: KafkaClusterNode,
    KafkaClusterNode2.name: KafkaClusterNode2,
    KafkaClusterNode3.name: KafkaClusterNode3,
}
