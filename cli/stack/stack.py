"""The local stack as a whole: bring components up in order, down in reverse order, report their health."""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence

from vatic.cli.stack.cluster import KAFKA_CLUSTER, KafkaClusterNode
from vatic.cli.stack.components import COMPONENTS, Component, Health
from vatic.cli.stack.flink import FLINK
from vatic.cli.stack.gateway import GatewayProcess
from vatic.cli.stack.secure import SecureKafkaBroker
from vatic.cli.stack.services import MODEL_SERVERS
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import ConfigError

#: Every component of the local stack, in start order (stop order is the reverse): the infrastructure, the
#: model servers of the demo services, then the gateway in front of them.
STACK: dict[str, type[Component]] = {**COMPONENTS, **MODEL_SERVERS, GatewayProcess.name: GatewayProcess}

#: Components started only when named (``vatic stack up flink``, ``--secure``, ``--cluster``), after the default
#: ones: the standalone Flink cluster costs ~3.5 GB; the secured broker and the three-node Kafka cluster run beside
#: the plain broker on their own ports. ``down``/``status`` without names include those of them that run.
OPTIONAL: dict[str, type[Component]] = {SecureKafkaBroker.name: SecureKafkaBroker, **KAFKA_CLUSTER, **FLINK}

#: Names that select several components: the Flink session cluster, the Kafka cluster, both (``--cluster``).
GROUPS: dict[str, list[str]] = {
    "flink": list(FLINK),
    "kafka-cluster": list(KAFKA_CLUSTER),
    "cluster": [*KAFKA_CLUSTER, *FLINK],
}


class Stack:
    """A set of local components sharing one :class:`StackSettings`."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.components: dict[str, Component] = {
            name: cls(self.settings) for name, cls in {**STACK, **OPTIONAL}.items()
        }

    def select(self, names: Iterable[str] | None) -> list[Component]:
        """Components by name (or group name) in start order; the default set (:data:`STACK`) when ``names`` is
        None (an empty list selects none)."""
        if names is None:
            return [c for name, c in self.components.items() if name in STACK]
        wanted = [member for n in names for member in GROUPS.get(n, [n])]
        unknown = [n for n in wanted if n not in self.components]
        if unknown:
            known = ", ".join([*self.components, *GROUPS])
            raise ConfigError(f"unknown component(s) {unknown}; known: {known}")
        return [c for name, c in self.components.items() if name in wanted]

    def _with_running_optional(self, names: Sequence[str] | None) -> list[Component]:
        """``select(names)``; for None also the optional components that run (so none is left behind)."""
        if names is not None:
            return self.select(names)
        running = [c for name, c in self.components.items() if name in OPTIONAL and c.process.pid() is not None]
        return [*self.select(None), *running]

    def up(self, names: Sequence[str] | None = None) -> list[str]:
        """Start the named components (all by default); return the names this call started.

        If one fails, the components this call started are stopped again before the error propagates.
        """
        started: list[str] = []
        try:
            for component in self.select(names):
                if component.start():
                    started.append(component.name)
        except BaseException:
            self.down(started)
            raise
        return started

    def down(self, names: Sequence[str] | None = None) -> list[str]:
        """Stop the named components (all by default) in reverse order; return the names that were running.

        The nodes of the Kafka cluster are signalled together first: the last node of a quorum stopped one by one
        cannot finish its clean shutdown (no controller is left to answer it) and would wait out its timeout."""
        stopping = self._with_running_optional(names)
        running = {c.name for c in stopping if c.process.pid() is not None}
        nodes = [c for c in stopping if isinstance(c, KafkaClusterNode) and c.name in running]
        if len(nodes) > 1:
            for node in nodes:
                node.process.send_signal(signal.SIGTERM)
        stopped = []
        for component in reversed(stopping):
            if component.stop() or component.name in running:
                stopped.append(component.name)
        return stopped

    def status(self, names: Sequence[str] | None = None) -> list[Health]:
        return [component.health() for component in self._with_running_optional(names)]


def running_registry_url(settings: StackSettings) -> str | None:
    """The local stack's schema registry URL when vatic started it and it answers; else None."""
    registry = Stack(settings).components["registry"]
    if registry.process.pid() is None:
        return None
    try:
        return settings.registry_url if registry.ready() else None
    except OSError:
        return None
