"""Retraining a use case's model on the data up to now, and the promotion gate.

:func:`retrain` builds a point-in-time correct training set from Feast's offline store (the use case's history
up to now, plus the labelled events recorded since with :func:`record_labels`: labels arrive after the
predictions, as chargebacks do), trains it with the use case's trainer in the model-server environment (the one
``prepare`` uses), registers it as the next version with its metrics and reference profile, and scores the
serving version on the *same* held-out rows. The gate passes when the new version's metric is at least the
serving version's minus the margin (``monitoring.retrain``); what happens next (a canary, then promotion) is the
caller's (``vatic retrain``), through the stages every model server follows.

Runs in the pipeline environment (Feast); needs ``prepare``'s data (``vatic usecases prepare``). Concurrent
calls, and ``prepare``, wait for each other (the same lock).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

from vatic.examples import layout
from vatic.examples.layout import CASES, Case
from vatic.examples.prepare import (
    PRODUCTION,
    TRAIN_TIMEOUT_S,
    PrepareError,
    _cases,
    _content_digest,
    _digest,
    _event_columns,
    _finish_training,
    _locked,
    _read_state,
    _start_training,
    _Training,
    _write_parquet,
    server_python,
)
from vatic.serving.config.loader import load_service
from vatic.serving.core.tensors import MISSING_SUFFIX

__all__ = ["RECENT", "GateResult", "RetrainReport", "case_of", "record_labels", "retrain"]

#: labelled events recorded since the history was generated (``<case home>/data/recent.parquet``)
RECENT = "recent.parquet"
#: the gate's metric per use case when the service config names none (higher is better)
DEFAULT_METRIC: dict[str, str] = {"fraud_detection": "roc_auc", "product_categorization": "accuracy"}


def case_of(service_dir: Path) -> Case | None:
    """The use case whose service folder ``service_dir`` is, if any."""
    for case in CASES:
        if layout.service_dir(case).resolve() == service_dir.resolve():
            return case
    return None


def record_labels(
    case: Case, events: Sequence[dict[str, Any]], labels: Sequence[Any], *, home: Path | None = None
) -> int:
    """Append labelled events (input events as produced, and their true labels) to the use case's recent events;
    returns how many it holds now. The retraining set includes them."""
    if len(events) != len(labels):
        raise ValueError(f"{len(events)} events and {len(labels)} labels")
    spec = _cases_default()[case]
    path = layout.case_home(case, home) / "data" / RECENT
    frame = pd.DataFrame([{**event, spec.label: label} for event, label in zip(events, labels, strict=True)])
    if path.is_file():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(frame, path)
    return len(frame)


def _cases_default() -> dict[Case, Any]:
    from vatic.examples.fraud_detection import history as fraud_history
    from vatic.examples.product_categorization import history as product_history

    return _cases(fraud_history.FraudParams(), product_history.ProductParams())


@dataclass(frozen=True)
class GateResult:
    """The promotion gate: the new and the serving version's metric on the same held-out rows."""

    metric: str
    new: float
    serving: float | None
    serving_version: str | None
    margin: float

    @property
    def passed(self) -> bool:
        return self.serving is None or self.new >= self.serving - self.margin

    def line(self) -> str:
        if self.serving is None:
            return f"gate: no serving version to compare with: passed ({self.metric} {self.new:.4f})"
        verdict = "passed" if self.passed else "refused"
        return (
            f"gate: {self.metric} {self.new:.4f} vs {self.serving:.4f} of serving v{self.serving_version} on the same "
            f"held-out rows (margin {self.margin:g}): {verdict}"
        )


@dataclass
class RetrainReport:
    """What :func:`retrain` did."""

    case: str
    model: str
    version: str
    rows: int
    recent_rows: int
    rejected: int
    metrics: dict[str, Any]
    gate: GateResult
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gate": {**asdict(self.gate), "passed": self.gate.passed}}


def retrain(
    case: Case,
    *,
    home: Path | None = None,
    registry: Path | None = None,
    python: Path | None = None,
    now: datetime | None = None,
    margin: float | None = None,
    metric: str | None = None,
    log: Callable[[str], None] | None = None,
) -> RetrainReport:
    """Retrain ``case``'s model on the data up to ``now`` (default: the clock), register it, judge it against the
    serving version (the registry's ``production`` stage). Raises :class:`PrepareError` when a step fails."""
    started = time.perf_counter()
    say = log or (lambda line: None)
    home = (home or layout.stack_home()).resolve()
    registry = (registry or layout.registry_root(home)).resolve()
    config_dir = layout.service_dir(case)
    config = load_service(config_dir)
    if config.features is None:
        raise PrepareError(f"service config {config_dir} has no features section")
    spec = _cases_default()[case]
    case_home = layout.case_home(case, home)
    state = _read_state(case_home)
    anchor_ms = int(state.get("data", {}).get("anchor_ms", 0))
    if not anchor_ms or "features" not in state:
        raise PrepareError(f"{case} has no prepared data in {case_home}: run `vatic usecases prepare` first")
    clock_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    model = config.registry.model or config.model.name
    retrain_spec = config.monitoring.retrain
    chosen_metric = metric or retrain_spec.metric or DEFAULT_METRIC[case]
    chosen_margin = retrain_spec.margin if margin is None else margin
    interpreter = python or server_python()
    with _locked(home):
        work = case_home / "retrain"
        work.mkdir(parents=True, exist_ok=True)
        labelled, rows, recent, rejected = _training_set(case, config, spec, case_home, anchor_ms, clock_ms, home, say)
        serving = _serving_version(registry, model)
        staging = registry / model / f".incoming-{uuid.uuid4().hex[:8]}"
        fingerprint = _digest("retrain", _content_digest(labelled), clock_ms)
        process = _start_training(
            case, labelled, staging, config_dir, int(spec.params.seed), interpreter, work / "train.log"
        )
        job = _Training(case, process, staging, work / "train.log", fingerprint, time.perf_counter(), config)
        say(f"{case}: training {model} in the server environment ({interpreter})")
        try:
            version, target, metrics = _finish_training(job)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            shutil.rmtree(staging, ignore_errors=True)
        baseline = None
        if serving is not None:
            scored = _evaluate(case, interpreter, labelled, registry / model / serving, config_dir, work)
            baseline = float(scored[chosen_metric])
        if chosen_metric not in metrics:
            raise PrepareError(f"the trainer of {case} reports no metric {chosen_metric!r}: {sorted(metrics)}")
        gate = GateResult(chosen_metric, float(metrics[chosen_metric]), baseline, serving, chosen_margin)
        metrics["gate"] = {**asdict(gate), "passed": gate.passed}
        metrics["retrained"] = {"recent_rows": recent, "up_to": clock_ms, "labelled": str(labelled)}
        (target / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return RetrainReport(
        case, model, version, rows, recent, rejected, metrics, gate,
        round(time.perf_counter() - started, 2),
    )  # fmt: skip


def _training_set(
    case: Case, config: Any, spec: Any, case_home: Path, anchor_ms: int, clock_ms: int, home: Path,
    say: Callable[[str], None],
) -> tuple[Path, int, int, int]:  # fmt: skip
    """The point-in-time labelled set of the history and the recent labelled events up to ``clock_ms``; returns
    its path, rows, recent events and rows Feast's join rejected."""
    from vatic.examples import feast_repo

    data_dir = case_home / "data"
    events = spec.training_events(data_dir, anchor_ms)
    recent_path = data_dir / RECENT
    recent = pd.read_parquet(recent_path) if recent_path.is_file() else events.iloc[:0]
    recent = recent[recent["event_time"] <= clock_ms]
    events = pd.concat([events, recent[[c for c in events.columns if c in recent.columns]]], ignore_index=True)
    say(f"{case}: training set up to {datetime.fromtimestamp(clock_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC: "
        f"{len(events) - len(recent):,} history + {len(recent):,} recent labelled events")  # fmt: skip
    with feast_repo.quiet():
        store = feast_repo.store_for(feast_repo.repo_config(case, home=home))
    frame, rejected = feast_repo.labelled_set(store, config.features, events)
    frame = frame.rename(columns={spec.label: "label"})
    flags = [ref + MISSING_SUFFIX for ref in config.features.refs]
    labelled = case_home / "retrain" / f"labelled-{clock_ms}.parquet"
    _write_parquet(frame[[*_event_columns(frame, config), "label", *config.features.refs, *flags]], labelled)
    say(f"{case}: point-in-time labelled set from Feast's offline store: {len(frame):,} rows ({rejected} rejected)")
    return labelled, len(frame), len(recent), int(rejected)


def _serving_version(registry: Path, model: str) -> str | None:
    from vatic.connectors.registry import LocalFolderRegistry

    if not (registry / model).is_dir():
        return None
    return LocalFolderRegistry(registry).stages(model).get(PRODUCTION)


def _evaluate(
    case: Case, python: Path, labelled: Path, model_dir: Path, config_dir: Path, work: Path
) -> dict[str, Any]:
    """The serving version's held-out metrics on ``labelled`` (the model-server environment scores it)."""
    argv = [str(python), "-m", "vatic.examples.training", case, "--labelled", str(labelled), "--evaluate",
            str(model_dir), "--service", str(config_dir)]  # fmt: skip
    log = work / "evaluate.log"
    with log.open("wb") as out:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, timeout=TRAIN_TIMEOUT_S, check=False)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        raise PrepareError(f"scoring {model_dir} failed (log {log}):\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result
