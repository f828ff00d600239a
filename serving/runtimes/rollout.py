"""The rollout controller: a model server follows its registry (``registry.refresh_s`` > 0) without a restart.

Beside every MLServer that serves a following service runs one controller (the local stack starts it with the
server; on Kubernetes it is a container of the model server pod). Every ``refresh_s`` seconds :meth:`Rollout.step`:

1. **resolves** what the registry section asks for now (the newest version the ``stages`` name, else the latest),
   the same resolution the server's start used. Unchanged: nothing happens, except retiring old versions.
2. **loads** a new version ``R`` beside the current one: its artifact is fetched and verified as at start
   (sha256 pins, the pickle rule), written to ``<repository>/<model>@<R>/`` with ``parameters.version = R``,
   and MLServer's repository API loads it (``POST /v2/repository/models/<model>/load``).
3. **checks** it: ``R`` must become ready and answer the contract probe
   (:func:`vatic.serving.core.versions.probe_request`, every declared input and output, outputs of the same kind
   as the current version's).
4. **switches**: only then the rollout pointer ``<model>.rollout`` is rewritten to ``[R, current]`` and
   reloaded. The pointer is what every client calls (:class:`vatic.serving.core.versions.VersionFollower`).
5. **canary**: a version in the registry's ``canary_stage`` (other than the current one) is loaded and checked
   as in steps 2-3, then named by the pointer as the canary, with the share of the entities it answers
   (``canary.weight``, default 0.1); the doors send those entities to it (:mod:`vatic.serving.core.experiments`).
   The stage emptied (or naming the current version) ends the canary; a canary that becomes the current version
   ends it too.
6. **retires** versions other than the current, the previous one and the canary once the last switch is
   ``grace_s`` old (so that batches still in flight on the previous version finish); the previous one stays
   loaded, so that a rollback to it is instant.

A version that fails step 2 or 3 is **refused**: its folder is removed, the server is brought back to the
versions it served, the pointer is not touched, one error line says why, and :attr:`Rollout.refused` keeps the
reason (it is not tried again while the registry keeps naming it). A registry that does not answer is logged and
retried at the next step; serving never stops.

Metrics (Prometheus, on ``--metrics-port`` when given): ``vatic_model_rollout_switches_total{model}``,
``vatic_model_rollout_refused_total{model, version}`` and ``vatic_model_rollout_version{model, version, role}``
(1 for the ``current`` and the ``previous`` version).

MLServer 1.7.1's repository load reloads every version the folder holds, not only the new one; each reload is
swapped in only once loaded, so requests keep being answered by the instance they reached.

Runs in the model-server environment (the registry backends' clients live there); it talks to MLServer over
HTTP only. Command line (the local stack's ``rollout`` processes; the Kubernetes container)::

    python -m vatic.serving.runtimes.rollout SERVICE_DIR REPOSITORY --server URL [--environment ENV]
        [--registry-root DIR] [--once]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vatic.connectors.inference import InferenceClient
from vatic.connectors.registry import ModelRegistry
from vatic.connectors.registry.spec import resolve_from_spec
from vatic.schemas.errors import ConfigError, ModelNotFound, Retryable, VaticError
from vatic.serving.config.loader import load_service
from vatic.serving.config.model import CanarySpec, ServiceConfig
from vatic.serving.core.versions import check_probe, pointer_name, probe_request
from vatic.serving.runtimes.repository import (
    MODEL_SETTINGS,
    canary_of,
    materialize_model,
    service_registry,
    side_spec,
    version_folder,
    write_pointer,
)

__all__ = ["Rollout", "StepResult", "controller_argv", "main"]

log = logging.getLogger("vatic.rollout")


class _Metrics:
    """The controller's Prometheus metrics, in a registry of their own (one controller per process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.switches = Counter(
            "vatic_model_rollout_switches", "versions switched to", ["model"], registry=self.registry
        )
        self.refused = Counter(
            "vatic_model_rollout_refused", "versions refused", ["model", "version"], registry=self.registry
        )
        self.version = Gauge(
            "vatic_model_rollout_version",
            "1 for the current and previous version",
            ["model", "version", "role"],
            registry=self.registry,
        )

    def pointer(self, model: str, versions: Sequence[str]) -> None:
        self.version.clear()
        for role, version in zip(("current", "previous"), versions, strict=False):
            self.version.labels(model, version, role).set(1)


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`Rollout.step` did: ``action`` is ``unchanged``, ``switched``, ``refused``, ``retired`` or
    ``unreachable`` (the registry did not answer)."""

    action: str
    current: str | None
    wanted: str | None = None
    reason: str | None = None
    #: what the step did with the canary stage: ``started`` (version), ``ended``, ``refused`` (None: nothing)
    canary: str | None = None


@dataclass
class Rollout:
    """The controller of one service's model on one server (see the module docstring)."""

    config: ServiceConfig
    repository: Path
    server_url: str
    service_dir: Path = Path(".")
    registry_root: Path | None = None
    registry: ModelRegistry | None = None
    grace_s: float = 30.0
    load_timeout_s: float = 300.0
    #: refused versions and why
    refused: dict[str, str] = field(default_factory=dict)
    metrics: _Metrics = field(default_factory=_Metrics, init=False)
    _switched_at: float = field(default=-float("inf"), init=False)
    _kinds: dict[str, str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        self.model = self.config.model.name
        if self.registry is None:
            self.registry = service_registry(self.config, Path(self.service_dir), self.registry_root)
        self.metrics.pointer(self.model, self.pointer()[:2])

    # -- state on disk ---------------------------------------------------------------------------------------

    def _pointer_settings(self) -> dict[str, Any]:
        path = self.repository / pointer_name(self.model) / MODEL_SETTINGS
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def pointer(self) -> list[str]:
        """The pointer's versions, current first (empty when there is no pointer yet)."""
        return [str(v) for v in self._pointer_settings().get("versions") or []]

    def _seq(self) -> int:
        """The pointer's own version: how many times it was written."""
        try:
            return int(self._pointer_settings()["parameters"]["version"])
        except (KeyError, TypeError, ValueError):
            return 0

    def versions_on_disk(self) -> dict[str, Path]:
        """Every version of the model the repository folder holds, by version."""
        found: dict[str, Path] = {}
        for settings_file in sorted(self.repository.glob(f"*/{MODEL_SETTINGS}")):
            try:
                settings = json.loads(settings_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if settings.get("name") == self.model:
                version = (settings.get("parameters") or {}).get("version")
                if isinstance(version, str):
                    found[version] = settings_file.parent
        return found

    # -- one step --------------------------------------------------------------------------------------------

    async def step(self) -> StepResult:
        """Resolve, load, check, switch or refuse, retire (module docstring). Never raises for a registry outage
        or a bad version; raises ``ConfigError`` for a configuration the server cannot serve at all."""
        pointer = self.pointer()
        current = pointer[0] if pointer else None
        assert self.registry is not None
        try:
            wanted = await asyncio.to_thread(
                resolve_from_spec,
                self.registry,
                self.config.registry,
                default_name=self.config.registry.model or self.model,
            )
        except Retryable as exc:
            log.warning("model %s: the registry did not answer (%s); serving version %s", self.model, exc, current)
            return StepResult("unreachable", current, reason=str(exc))
        version = wanted.version
        async with InferenceClient(self.server_url, deadline_s=self.load_timeout_s) as client:
            if version == current:
                result = await self._retire(client, current)
            elif version in self.refused:
                result = StepResult("refused", current, version, self.refused[version])
            else:
                result = await self._switch(client, current, version)
            canary = await self._canary_step(client)
        return dataclasses.replace(result, canary=canary) if canary else result

    async def _admit(self, client: InferenceClient, current: str | None, version: str) -> dict[str, str] | None:
        """Steps 2 and 3 for ``version``: its output kinds when it loaded and kept the contract; None when it is
        refused (module docstring)."""
        on_disk = self.versions_on_disk()
        added: Path | None = None
        try:
            if version not in on_disk:
                added = await asyncio.to_thread(self._materialize, version)
            if time.monotonic() - self._switched_at >= self.grace_s:
                self._remove(on_disk, {version, *self.pointer()[:2], *self._sides()})
            try:
                await client.repository_load(self.model)
            except VaticError as exc:
                raise ConfigError(
                    f"MLServer did not load version {version} ({exc}); the model server's log has its traceback"
                ) from exc
            await self._await_ready(client, version)
            if self._kinds is None and current is not None:
                self._kinds = await self._probe(client, current, None)
            return await self._probe(client, version, self._kinds)
        except (VaticError, ValueError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.refused[version] = reason
            self.metrics.refused.labels(self.model, version).inc()
            log.error("model %s: version %s refused, still serving %s: %s", self.model, version, current, reason)
            if added is not None:
                shutil.rmtree(added, ignore_errors=True)
            try:
                await client.repository_load(self.model)
            except VaticError as again:
                log.error("model %s: reloading the versions it served failed too: %s", self.model, again)
            return None

    async def _switch(self, client: InferenceClient, current: str | None, version: str) -> StepResult:
        kinds = await self._admit(client, current, version)
        if kinds is None:
            return StepResult("refused", current, version, self.refused[version])
        previous = [current] if current else []
        canary = self.canary()
        if canary is not None and canary[0] == version:
            canary = None  # the canary became the current version: its share is everyone now
        await self._point(client, [version, *previous], canary)
        self._kinds = kinds
        self._switched_at = time.monotonic()
        self.metrics.switches.labels(self.model).inc()
        self.metrics.pointer(self.model, [version, *previous])
        log.info("model %s: switched from version %s to %s", self.model, current, version)
        return StepResult("switched", version, version)

    async def _retire(self, client: InferenceClient, current: str | None) -> StepResult:
        if time.monotonic() - self._switched_at < self.grace_s:
            return StepResult("unchanged", current, current)
        keep = set(self.pointer()[:2]) | self._sides()
        on_disk = self.versions_on_disk()
        if not set(on_disk) - keep:
            return StepResult("unchanged", current, current)
        retired = self._remove(on_disk, keep)
        await client.repository_load(self.model)
        log.info("model %s: retired version(s) %s", self.model, ", ".join(retired))
        return StepResult("retired", current, current, reason=", ".join(retired))

    def _sides(self) -> set[str]:
        """Versions of the model the service's canary and shadow name, and the pointer's canary: never retired."""
        sides = {version for name, _, version in self.config.side_models if name == self.model}
        canary = self.canary()
        return sides | {canary[0]} if canary else sides

    # -- the canary ------------------------------------------------------------------------------------------

    def canary(self) -> tuple[str, float] | None:
        """The canary the pointer names now: (version, share of the entities)."""
        return canary_of((self._pointer_settings().get("parameters") or {}).get("extra"))

    async def _point(self, client: InferenceClient, versions: list[str], canary: tuple[str, float] | None) -> None:
        """Rewrite the pointer (its own version one up) and have the server reload it: the one way it moves."""
        write_pointer(self.repository, self.model, versions, self._seq() + 1, canary)
        await client.repository_load(pointer_name(self.model))

    async def _canary_step(self, client: InferenceClient) -> str | None:
        """Follow the registry's canary stage: a version there (other than the current one) is admitted as a new
        version is (steps 2-3), then named by the pointer as the canary; an empty stage, or the current version
        there, ends the canary. Returns what changed (None: nothing)."""
        spec = self.config.registry
        pointer = self.pointer()
        current = pointer[0] if pointer else None
        now = self.canary()
        assert self.registry is not None
        try:
            wanted: str | None = (
                await asyncio.to_thread(
                    resolve_from_spec,
                    self.registry,
                    spec.model_copy(update={"stages": [spec.canary_stage], "version": None}),
                    default_name=spec.model or self.model,
                )
            ).version
        except ModelNotFound:
            wanted = None
        except Retryable as exc:
            log.warning("model %s: the registry did not answer for the canary stage (%s)", self.model, exc)
            return None
        if wanted is None or wanted == current:
            if now is None:
                return None
            await self._point(client, pointer, None)
            log.info("model %s: canary %s ended; version %s answers every entity", self.model, now[0], current)
            return "ended"
        if now is not None and now[0] == wanted:
            return None
        if wanted in self.refused:
            return None
        if await self._admit(client, current, wanted) is None:
            return "refused"
        weight = (self.config.canary or CanarySpec()).weight  # the section's default without one
        await self._point(client, pointer, (wanted, weight))
        log.info("model %s: canary %s answers %.0f%% of the entities beside %s", self.model, wanted, weight * 100,
                 current)  # fmt: skip
        return "started"

    def _remove(self, on_disk: dict[str, Path], keep: set[str]) -> list[str]:
        gone = []
        for version, folder in on_disk.items():
            if version not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(version)
        return gone

    def _materialize(self, version: str) -> Path:
        """Fetch and verify ``version`` as the server's start does; write its folder ``<model>@<version>``."""
        spec = side_spec(self.config, self.config.registry.model or self.model, version)
        target = self.repository / version_folder(self.model, version)
        holder = Path(tempfile.mkdtemp(prefix=f".{self.model}.incoming-", dir=self.repository))
        try:
            assert self.registry is not None
            incoming = holder / "model"
            materialize_model(self.config, incoming, registry=self.registry, service_dir=self.service_dir, spec=spec)
            if target.exists():
                shutil.rmtree(target)
            os.replace(incoming, target)
        finally:
            shutil.rmtree(holder, ignore_errors=True)
        return target

    async def _await_ready(self, client: InferenceClient, version: str) -> None:
        deadline = time.monotonic() + self.load_timeout_s
        while not await client.ready(self.model, version=version, deadline_s=5.0):
            if time.monotonic() > deadline:
                raise ConfigError(f"version {version} did not become ready within {self.load_timeout_s:.0f} s")
            await asyncio.sleep(0.2)

    async def _probe(self, client: InferenceClient, version: str, like: dict[str, str] | None) -> dict[str, str]:
        model = self.config.model
        response = await client.infer(
            self.model, probe_request(model), version=version, deadline_s=self.config.timeout_s
        )
        try:
            return check_probe(model, response, like=like)
        except ValueError as exc:
            raise ValueError(f"version {version} breaks the service's contract: {exc}") from exc

    # -- the loop --------------------------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """:meth:`step` every ``registry.refresh_s`` seconds until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.step()
            except VaticError as exc:  # the server is down or restarting: the next step tries again
                log.warning("model %s: rollout step failed: %s", self.model, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.registry.refresh_s)


def controller_argv(
    python: str | os.PathLike[str],
    service_dir: str | os.PathLike[str],
    repository: str | os.PathLike[str],
    server: str,
    *,
    environment: str | None = None,
    registry_root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The command line that runs this controller with ``python`` (the model-server environment's) beside the
    MLServer at ``server`` serving ``repository``."""
    argv = [str(python), "-m", __name__, str(service_dir), str(repository), "--server", server]
    if environment not in (None, "local"):
        argv += ["--environment", str(environment)]
    if registry_root is not None:
        argv += ["--registry-root", str(registry_root)]
    return argv


def _as_dict(result: StepResult) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(result).items() if v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vatic.serving.runtimes.rollout SERVICE_DIR REPOSITORY --server URL`` (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m vatic.serving.runtimes.rollout",
        description="Follow the service's registry stage on a running MLServer: load, check, switch, retire.",
    )
    parser.add_argument("service_dir", type=Path, help="the service folder (service.yaml)")
    parser.add_argument("repository", type=Path, help="the model repository folder the server serves")
    parser.add_argument("--server", required=True, help="the MLServer's http URL")
    parser.add_argument("--environment", default=None, help="environment overlay (<env>.yaml)")
    parser.add_argument("--registry-root", type=Path, default=None, help="follow this local registry folder")
    parser.add_argument("--grace-s", type=float, default=30.0, help="keep a replaced version this long")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: none)")
    parser.add_argument("--once", action="store_true", help="one step, print its result as JSON, exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_service(args.service_dir, args.environment)
        if not config.registry.follows and not args.once:
            raise ConfigError(f"service {config.service}: registry.refresh_s is 0, there is nothing to follow")
        rollout = Rollout(
            config,
            args.repository,
            args.server,
            service_dir=args.service_dir,
            registry_root=args.registry_root,
            grace_s=args.grace_s,
        )
        if args.once:
            print(json.dumps(_as_dict(asyncio.run(rollout.step()))))
            return 0
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, addr="0.0.0.0", registry=rollout.metrics.registry)  # noqa: S104
        asyncio.run(rollout.run())
    except (VaticError, OSError) as exc:
        print(f"vatic: {exc}".replace("\n", "; "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
