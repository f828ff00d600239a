"""The local stack as a whole: bring components up in order, down in reverse order, report their health."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vatic.connectors.errors import ConfigError
from vatic.connectors.local.components import COMPONENTS, Component, Health
from vatic.connectors.local.gateway import GatewayProcess
from vatic.connectors.local.services import MODEL_SERVERS
from vatic.connectors.local.settings import StackSettings

#: Every component of the local stack, in start order (stop order is the reverse): the infrastructure, the
#: model servers of the demo services, then the gateway in front of them.
STACK: dict[str, type[Component]] = {**COMPONENTS, **MODEL_SERVERS, GatewayProcess.name: GatewayProcess}


class Stack:
    """A set of local components sharing one :class:`StackSettings`."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.components: dict[str, Component] = {name: cls(self.settings) for name, cls in STACK.items()}

    def select(self, names: Iterable[str] | None) -> list[Component]:
        """Components by name in start order; all of them when ``names`` is None (an empty list selects none)."""
        if names is None:
            return list(self.components.values())
        wanted = list(names)
        unknown = [n for n in wanted if n not in self.components]
        if unknown:
            raise ConfigError(f"unknown component(s) {unknown}; known: {', '.join(self.components)}")
        return [c for name, c in self.components.items() if name in wanted]

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
        """Stop the named components (all by default) in reverse order; return the names that were running."""
        stopped = []
        for component in reversed(self.select(names)):
            if component.stop():
                stopped.append(component.name)
        return stopped

    def status(self, names: Sequence[str] | None = None) -> list[Health]:
        return [component.health() for component in self.select(names)]
