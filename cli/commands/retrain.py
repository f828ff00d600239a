"""``vatic retrain SERVICE_DIR``: train the next version on the data up to now, gate it, promote it canary first.

1. a point-in-time correct training set from Feast's offline store (the use case's history up to now and the
   labelled events recorded since), trained with the use case's trainer, registered as version N+1 with its
   metrics and reference profile (vatic.examples.retrain);
2. the gate: the new version's held-out metric against the serving version's on the same rows, within
   ``monitoring.retrain.margin``;
3. a version that passed goes on as ``vatic promote`` takes it (``--promote``, default): the canary stage, a hold,
   then the followed stage; a refused one stays registered, unserved (exit 3).

``--watch`` reads the service's drift records (``vatic monitor``) and retrains when ``monitoring.retrain.
after_windows`` judged windows of the serving version in a row drifted; it needs ``monitoring.retrain.on_drift:
true`` (off by default) and runs until Ctrl-C.

vatic knows the trainers of the example use cases; a service of your own has its trainer
(``python -m <package>.train``) and ``vatic promote``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from vatic.cli.commands.promote import Canary, CanaryS, ModelUrl, RegistryRoot, TimeoutS, Wait, promote
from vatic.cli.commands.schema import RegistryUrl, open_source
from vatic.cli.commands.stream import Env, ServiceDir, tool_kafka
from vatic.schemas.errors import ConfigError
from vatic.serving.config import ServiceConfig, load_service

#: exit status of a retrained version the gate refused (registered, not served)
EXIT_REFUSED = 3


def _case(service_dir: Path) -> Any:
    from vatic.examples.retrain import case_of

    case = case_of(service_dir)
    if case is None:
        raise ConfigError(
            f"vatic retrain trains the example use cases with their trainers; {service_dir} is not one of them: run "
            "your service's trainer (python -m <package>.train) and `vatic promote` the version it registers"
        )
    return case


def retrain_once(
    service_dir: Path, env: str, *, registry_root: Path | None, model_url: str | None, promote_it: bool, wait: bool,
    timeout_s: float, canary: bool, canary_s: float,
) -> bool:  # fmt: skip
    """One retraining (steps 1-3 of the module docstring); True when the gate passed."""
    from vatic.examples.prepare import PrepareError
    from vatic.examples.retrain import retrain

    case = _case(service_dir)
    try:
        report = retrain(case, registry=registry_root, log=lambda line: typer.echo(f"retrain {line}", err=True))
    except PrepareError as exc:
        raise ConfigError(str(exc)) from None
    typer.echo(f"retrain {case}: registered {report.model} v{report.version} ({report.rows:,} rows, "
               f"{report.recent_rows:,} recent) in {report.seconds:.1f} s")  # fmt: skip
    typer.echo(f"retrain {case}: {report.gate.line()}")
    if not report.gate.passed:
        typer.echo(f"retrain {case}: v{report.version} stays registered and unserved")
        return False
    if promote_it:
        promote(
            service_dir, report.version, env=env, registry_root=registry_root, model_url=model_url, wait=wait,
            timeout_s=timeout_s, canary=canary, canary_s=canary_s,
        )  # fmt: skip
    else:
        typer.echo(f"retrain {case}: not promoted (--no-promote): vatic promote {service_dir} {report.version}")
    return True


def retrain_command(
    service_dir: ServiceDir,
    env: Env = "local",
    registry_root: RegistryRoot = None,
    model_url: ModelUrl = None,
    promote_it: Annotated[bool, typer.Option("--promote/--no-promote", help="promote a version that passed")] = True,
    wait: Wait = True,
    timeout_s: TimeoutS = 120.0,
    canary: Canary = True,
    canary_s: CanaryS = 30.0,
    watch: Annotated[
        bool, typer.Option(help="retrain whenever the drift monitor flags the serving version (on_drift)")
    ] = False,
    schema_registry_url: RegistryUrl = None,
) -> None:
    """Train the next version on the data up to now, gate it against the serving one, promote it canary first."""
    config = load_service(service_dir, env)
    _case(service_dir)
    options: dict[str, Any] = {
        "registry_root": registry_root, "model_url": model_url, "promote_it": promote_it, "wait": wait,
        "timeout_s": timeout_s, "canary": canary, "canary_s": canary_s,
    }  # fmt: skip
    if not watch:
        if not retrain_once(service_dir, env, **options):
            raise typer.Exit(EXIT_REFUSED)
        return
    if not config.monitoring.retrain.on_drift:
        raise ConfigError(
            f"drift-triggered retraining is off for {config.service}: set monitoring.retrain.on_drift: true"
        )
    _watch(config, service_dir, env, schema_registry_url, options)


class DriftStreak:
    """Counts drifted judged windows in a row per model version; says when one reaches ``need``."""

    def __init__(self, need: int) -> None:
        self.need = need
        self.streak: dict[str, int] = {}

    def observe(self, drift: dict[str, Any]) -> bool:
        """Take one drift record (schema ``drift``); True when its version has now drifted ``need`` judged windows
        in a row (the count starts again after that, and for every version: a retrain is under way)."""
        if not drift["judged"]:
            return False  # too few predictions to say either way: the streak neither grows nor breaks
        version = str(drift["model_version"])
        self.streak[version] = self.streak.get(version, 0) + 1 if drift["drifted"] else 0
        if self.streak[version] < self.need:
            return False
        self.streak.clear()
        return True


def _watch(
    config: ServiceConfig, service_dir: Path, env: str, schema_registry_url: str | None, options: dict[str, Any]
) -> None:
    """Read drift records as they come; retrain when the serving version drifted ``after_windows`` times in a row."""
    from vatic.connectors.kafka import Consumer
    from vatic.schemas import AvroCodec, load_schema, topic_subject

    source, _ = open_source(schema_registry_url)
    codec = AvroCodec(source, topic_subject(config.drift_topic), load_schema("drift"))
    streak = DriftStreak(config.monitoring.retrain.after_windows)
    consumer = Consumer([config.drift_topic], f"vatic-retrain-{uuid.uuid4().hex[:8]}", tool_kafka(),
                        config={"auto.offset.reset": "latest"})  # fmt: skip
    typer.echo(f"watching {config.drift_topic}: retrain after {streak.need} drifted window(s) in a row", err=True)
    try:
        while True:
            for record in consumer.poll_batch(100, timeout=1.0):
                drift = codec.decode(record.value or b"")
                if not streak.observe(drift):
                    continue
                typer.echo(f"{config.service}: v{drift['model_version']} drifted {streak.need} window(s) in a row "
                           f"({', '.join(drift['drifted_columns'])}): retraining")  # fmt: skip
                retrain_once(service_dir, env, **options)
    except KeyboardInterrupt:
        typer.echo("stopped watching", err=True)
    finally:
        consumer.close()
