"""``prepare``: data, Feast features and trained models of both use cases, in one idempotent call.

Runs in the pipeline environment (Feast); the models are trained by the model-server environment's Python
(``python -m vatic.examples.training``, found next to its ``mlserver``: ``.venv/server/bin/python`` or
``$VATIC_STACK_MLSERVER``'s folder). Per use case, three steps, each skipped when its outputs exist and its
inputs did not change (a fingerprint of what it depends on is kept in ``<case home>/prepare.json``):

1. ``data`` - generate the history and the daily feature tables (Parquet) on a timeline ending *now* (the anchor).
   Inputs: the generator parameters and code. Also re-run once the anchor is older than ``refresh_after``
   (default 12 h), well inside the feature views' 3-day TTL, so that served features stay fresh.
2. ``features`` - ``feast apply`` and ``materialize`` (SQLite, and Redis when configured: ``redis_url``,
   ``$VATIC_FEAST_REDIS_URL``), then the labelled set: the training events joined point-in-time with Feast's
   ``get_historical_features`` and passed through the service's missing-feature policy (``labelled.parquet``).
   Inputs: the data fingerprint and anchor, the definitions, ``feature_store.yaml``, the service's features.
3. ``train`` - train in the server environment into the local model registry,
   ``<registry>/<model>/<version>/`` (:class:`~vatic.connectors.registry.LocalFolderRegistry` layout; versions
   1, 2, ... - a new one only when the training inputs changed). Inputs: the labelled set's *content* (times
   excluded: moving the anchor does not retrain), the service's model/features sections, the training code and
   seed. The fingerprint is kept in the version's ``metrics.json``; the newest version with a matching one is
   reused (a version ``vatic retrain`` registered since does not hide it).
   A model without a ``production`` stage gets one, on that version; a later version waits beside it until
   ``vatic promote`` moves the stage (the servers that follow it then roll it out).

Everything generated lives under ``<home>/usecases/<case>/`` and ``<home>/registry/`` (see
:mod:`~vatic.examples.layout`). Concurrent calls wait for each other (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]

from vatic.examples import layout
from vatic.examples.fraud_detection import history as fraud_history
from vatic.examples.layout import CASES, Case
from vatic.examples.product_categorization import history as product_history
from vatic.serving.config.loader import load_service
from vatic.serving.config.model import FeatureSpec, ServiceConfig
from vatic.serving.core import tensors
from vatic.serving.core.tensors import MISSING_SUFFIX

__all__ = ["REDIS_VARIABLE", "CaseResult", "PrepareError", "PrepareReport", "StepResult", "prepare"]

#: environment variable naming a Redis (``redis://host:port/db``) to materialize into as well as SQLite
REDIS_VARIABLE = "VATIC_FEAST_REDIS_URL"
STATE_FILE = "prepare.json"
LABELLED = "labelled.parquet"
TRAIN_TIMEOUT_S = 1800
USECASES = Path(__file__).resolve().parent
_SOURCES: dict[str, list[Path]] = {
    "data:fraud_detection": [USECASES / "fraud_detection" / "events.py", USECASES / "fraud_detection" / "history.py"],
    "data:product_categorization": [
        USECASES / "product_categorization" / "events.py",
        USECASES / "product_categorization" / "history.py",
    ],
    "features": [USECASES / "feast_repo.py"],
    "train:fraud_detection": [USECASES / "fraud_detection" / "train.py"],
    "train:product_categorization": [
        USECASES / "product_categorization" / "train.py",
        USECASES / "product_categorization" / "embedding.py",
    ],
    "train": [USECASES / "training.py", USECASES / "tabular.py", Path(tensors.__file__).resolve()],
}


class PrepareError(RuntimeError):
    """A step failed; the message says which and why (training: the tail of its log)."""


@dataclass
class StepResult:
    """One step of one use case: whether it ran (False: skipped, up to date), how long, and what it did."""

    name: str
    ran: bool
    seconds: float
    detail: str


@dataclass
class CaseResult:
    """What ``prepare`` did for one use case, and the model it left in the registry."""

    case: str
    steps: list[StepResult] = field(default_factory=list)
    model: str = ""
    version: str = ""
    artifacts: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        """Names of the steps that ran (the others were up to date)."""
        return [step.name for step in self.steps if step.ran]

    @property
    def skipped(self) -> list[str]:
        return [step.name for step in self.steps if not step.ran]


@dataclass
class PrepareReport:
    """The result of :func:`prepare`: one :class:`CaseResult` per use case, where things are, how long it took."""

    home: str
    registry: str
    online_stores: list[str]
    cases: dict[str, CaseResult] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> list[str]:
        """Human-readable lines: per use case the model version and its held-out metrics."""
        lines = []
        for result in self.cases.values():
            shown = ", ".join(f"{k} {v}" for k, v in result.metrics.items() if k in _HEADLINE)
            ran = ", ".join(result.ran) or "nothing (up to date)"
            lines.append(f"{result.case}: {result.model} v{result.version} [{shown}]; ran: {ran}")
        lines.append(f"prepare: {self.seconds:.1f}s; models in {self.registry}")
        return lines


_HEADLINE = ("roc_auc", "average_precision", "accuracy", "macro_f1", "accuracy_text_only")


# --- fingerprints and state ----------------------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _code(*keys: str) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for key in keys for path in _SOURCES[key]]


def _read_state(case_home: Path) -> dict[str, Any]:
    try:
        state = json.loads((case_home / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(case_home: Path, state: dict[str, Any]) -> None:
    tmp = case_home / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(case_home / STATE_FILE)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    lock_dir = home / "usecases"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _config_digest(config: ServiceConfig) -> str:
    """What of a service config the features and the model depend on (not replicas, topics...)."""
    return _digest(
        config.model.model_dump(mode="json"),
        config.features.model_dump(mode="json") if config.features else None,
        config.serving.implementation,
    )


def _content_digest(labelled: Path) -> str:
    """The labelled set's content, absolute times excluded (the anchor moves them, nothing else)."""
    frame = pd.read_parquet(labelled)
    frame = frame.drop(columns=[c for c in ("event_time",) if c in frame.columns])
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes() + ",".join(frame.columns).encode()).hexdigest()


# --- the use cases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Case:
    """Per use case: parameters, data files, how to generate them, and the training events."""

    name: Case
    params: Any
    files: tuple[str, ...]
    label: str  # the column of the history that is the label

    def generate(self, anchor_ms: int) -> dict[str, pd.DataFrame]:
        if self.name == "fraud_detection":
            fraud = fraud_history.generate(self.params, anchor_ms)
            return {
                "transactions": fraud.history,
                "customer_stats": fraud.customer_stats,
                "merchant_stats": fraud.merchant_stats,
            }
        product = product_history.generate(self.params, anchor_ms)
        return {"products": product.history, "seller_category_mix": product.seller_category_mix}

    def training_events(self, data_dir: Path, anchor_ms: int) -> pd.DataFrame:
        if self.name == "fraud_detection":
            history = pd.read_parquet(data_dir / "transactions.parquet")
            since = anchor_ms - self.params.training_days * fraud_history.DAY_MS
            return history[history["event_time"] >= since].reset_index(drop=True)
        history = pd.read_parquet(data_dir / "products.parquet")
        return history.iloc[-self.params.training_listings :].reset_index(drop=True)


def _cases(fraud: fraud_history.FraudParams, product: product_history.ProductParams) -> dict[Case, _Case]:
    return {
        "fraud_detection": _Case(
            "fraud_detection", fraud, ("transactions", "customer_stats", "merchant_stats"), "is_fraud"
        ),
        "product_categorization": _Case(
            "product_categorization", product, ("products", "seller_category_mix"), "category"
        ),
    }


# --- training in the server environment ---------------------------------------------------------------------


def server_python() -> Path:
    """The model-server environment's interpreter (next to its ``mlserver``); ``MissingDependency`` if absent."""
    from vatic.cli.stack.mlserver import mlserver_executable

    return mlserver_executable().parent / "python"


@dataclass
class _Training:
    case: Case
    process: subprocess.Popen[bytes]
    staging: Path
    log_path: Path
    fingerprint: str
    started: float
    config: ServiceConfig


def _start_training(
    case: Case, labelled: Path, staging: Path, config_dir: Path, seed: int, python: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    staging.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(python), "-m", "vatic.examples.training", case, "--labelled", str(labelled)]
    argv += ["--out", str(staging), "--seed", str(seed), "--service", str(config_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _latest_version(model_dir: Path) -> tuple[str | None, dict[str, Any]]:
    """The newest numeric version of a model folder and its metrics (``{}`` when unreadable)."""
    if not model_dir.is_dir():
        return None, {}
    numeric = sorted((int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    if not numeric:
        return None, {}
    version = str(numeric[0])
    try:
        metrics = json.loads((model_dir / version / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    return version, metrics if isinstance(metrics, dict) else {}


def _version_with(model_dir: Path, fingerprint: str) -> tuple[str, dict[str, Any]] | None:
    """The newest numeric version trained from ``fingerprint``'s inputs, and its metrics (a retrained version
    registered after it does not make ``prepare`` train the same model again)."""
    if not model_dir.is_dir():
        return None
    numeric = sorted((int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    for number in numeric:
        try:
            metrics = json.loads((model_dir / str(number) / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict) and metrics.get("fingerprint") == fingerprint:
            return str(number), metrics
    return None


def _finish_training(job: _Training) -> tuple[str, Path, dict[str, Any]]:
    """Wait for a training job; move its artifacts to the next version folder; return version, folder, metrics."""
    try:
        job.process.wait(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(job.process.pid, signal.SIGKILL)
        job.process.wait()
        raise PrepareError(f"training {job.case} did not finish in {TRAIN_TIMEOUT_S}s; log: {job.log_path}") from None
    if job.process.returncode != 0:
        tail = job.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
        shutil.rmtree(job.staging, ignore_errors=True)
        raise PrepareError(f"training {job.case} failed (log {job.log_path}):\n" + "\n".join(tail))
    metrics: dict[str, Any] = json.loads((job.staging / "metrics.json").read_text(encoding="utf-8"))
    metrics["fingerprint"] = job.fingerprint
    model_dir = job.staging.parent
    latest, _ = _latest_version(model_dir)
    version = str(int(latest) + 1 if latest else 1)
    metrics["version"] = version
    (job.staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    stamp_profile(job.staging, version)
    (job.staging / "model-settings.json").write_text(
        json.dumps(_model_settings(job.case, job.config, version), indent=2) + "\n", encoding="utf-8"
    )
    target = model_dir / version
    job.staging.rename(target)
    return version, target, metrics


def stamp_profile(folder: Path, version: str) -> None:
    """Name ``version`` in the reference profile a trainer left in ``folder`` (trainers do not know it)."""
    from vatic.serving.core.drift import PROFILE_FILE, Profile

    if (folder / PROFILE_FILE).is_file():
        profile = Profile.read(folder / PROFILE_FILE)
        Profile(profile.model, version, profile.rows, profile.columns).write(folder)


def _model_settings(case: Case, config: ServiceConfig, version: str) -> dict[str, Any]:
    if case == "fraud_detection":
        from vatic.examples.fraud_detection.train import model_settings

        return model_settings(config, version, len(config.model.inputs[0].columns))
    from vatic.examples.product_categorization.train import model_settings as low_code_settings

    return low_code_settings(config, version)


# --- prepare ----------------------------------------------------------------------------------------------


def prepare(
    cases: Sequence[Case] = CASES,
    *,
    home: Path | None = None,
    registry: Path | None = None,
    fraud: fraud_history.FraudParams | None = None,
    product: product_history.ProductParams | None = None,
    redis_url: str | None = None,
    force: bool = False,
    refresh_after: timedelta = timedelta(hours=12),
    python: Path | None = None,
    now: datetime | None = None,
    log: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Generate, apply/materialize and train what is out of date; return what was done and the models' metrics.

    ``home`` defaults to the stack's home (``$VATIC_STACK_HOME`` or ``.vatic``), ``registry`` to
    :func:`~vatic.examples.layout.registry_root` (``<home>/registry`` unless the stack settings name
    one). ``redis_url`` (default ``$VATIC_FEAST_REDIS_URL``) materializes into that Redis too, under the
    repositories' own Feast projects. ``force`` re-runs every step. ``now`` (default: the clock) is the
    anchor of newly generated data. ``python`` is the server environment's interpreter (default:
    :func:`server_python`). ``log`` receives progress lines. Raises :class:`PrepareError` when a step fails.
    """
    started = time.perf_counter()
    registry = (registry or layout.registry_root(home)).resolve()
    home = (home or layout.stack_home()).resolve()
    redis_url = redis_url or os.environ.get(REDIS_VARIABLE) or None
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise PrepareError(f"unknown use case(s) {unknown}; known: {', '.join(CASES)}")
    say = log or (lambda line: None)
    specs = _cases(fraud or fraud_history.FraudParams(), product or product_history.ProductParams())
    report = PrepareReport(str(home), str(registry), ["sqlite"] + (["redis"] if redis_url else []))
    options = _Options(home, registry, redis_url, force, refresh_after, python, now or datetime.now(UTC), say)
    jobs: list[tuple[CaseResult, _Training]] = []
    with _locked(home):
        try:
            for case in cases:
                result = CaseResult(case)
                report.cases[case] = result
                job = _prepare_case(specs[case], result, options)
                if job is not None:
                    jobs.append((result, job))
            for result, job in jobs:
                say(f"{job.case}: waiting for training (log {job.log_path})")
                version, target, metrics = _finish_training(job)
                seconds = time.perf_counter() - job.started
                result.steps.append(StepResult("train", True, seconds, f"trained {result.model} v{version}"))
                result.version, result.artifacts, result.metrics = version, str(target), metrics
                state = _read_state(layout.case_home(job.case, home))
                state["train"] = {"fingerprint": job.fingerprint, "model": result.model, "version": version}
                _write_state(layout.case_home(job.case, home), state)
                say(f"{job.case}: trained {result.model} v{version} in {seconds:.1f}s")
            for outcome in report.cases.values():
                _first_production(options, outcome)
        finally:
            for _, job in jobs:
                if job.process.poll() is None:
                    os.killpg(job.process.pid, signal.SIGKILL)
                    job.process.wait()
                shutil.rmtree(job.staging, ignore_errors=True)
    report.seconds = round(time.perf_counter() - started, 2)
    for line in report.summary():
        say(line)
    return report


@dataclass(frozen=True)
class _Options:
    home: Path
    registry: Path
    redis_url: str | None
    force: bool
    refresh_after: timedelta
    python: Path | None
    clock: datetime
    say: Callable[[str], None]


@dataclass
class _CaseRun:
    """One use case in progress: its folders, config and ``prepare.json`` state."""

    spec: _Case
    result: CaseResult
    options: _Options
    config: ServiceConfig
    features: FeatureSpec
    state: dict[str, Any]

    @property
    def case(self) -> Case:
        return self.spec.name

    @property
    def case_home(self) -> Path:
        return layout.case_home(self.case, self.options.home)

    @property
    def data_dir(self) -> Path:
        return self.case_home / "data"

    def save(self) -> None:
        _write_state(self.case_home, self.state)


def _prepare_case(spec: _Case, result: CaseResult, options: _Options) -> _Training | None:
    """Run the data and features steps; start training if needed (returned, to be awaited)."""
    config_dir = layout.service_dir(spec.name)
    config = load_service(config_dir)
    if config.features is None:
        raise PrepareError(f"service config {config_dir} has no features section")
    result.model = config.registry.model or config.model.name
    run = _CaseRun(
        spec, result, options, config, config.features, _read_state(layout.case_home(spec.name, options.home))
    )
    run.data_dir.mkdir(parents=True, exist_ok=True)
    data_fp, anchor_ms = _data_step(run)
    labelled, content = _features_step(run, data_fp, anchor_ms)
    return _train_step(run, labelled, content)


def _data_step(run: _CaseRun) -> tuple[str, int]:
    """1. Generate the history and feature tables unless up to date; return the data fingerprint and anchor."""
    t0 = time.perf_counter()
    options, spec = run.options, run.spec
    data_fp = _digest(run.case, asdict(spec.params), _code(f"data:{run.case}"))
    previous = run.state.get("data", {})
    anchor_ms = int(previous.get("anchor_ms", 0))
    age = options.clock - datetime.fromtimestamp(anchor_ms / 1000, UTC)
    reasons = {
        "forced": options.force,
        "new": not previous,
        "changed": previous.get("fingerprint") != data_fp,
        "missing files": not all((run.data_dir / f"{name}.parquet").is_file() for name in spec.files),
        "stale": age > options.refresh_after,
    }
    why = next((reason for reason, applies in reasons.items() if applies), None)
    if why is None:
        detail = f"up to date (anchor {age.total_seconds() / 3600:.1f} h old)"
        run.result.steps.append(StepResult("data", False, 0.0, detail))
        return data_fp, anchor_ms
    anchor_ms = int(options.clock.replace(second=0, microsecond=0).timestamp() * 1000)
    anchored = datetime.fromtimestamp(anchor_ms / 1000, UTC)
    options.say(f"{run.case}: generating data ({why}), anchored at {anchored:%Y-%m-%d %H:%M} UTC")
    tables = spec.generate(anchor_ms)
    for name, frame in tables.items():
        _write_parquet(frame, run.data_dir / f"{name}.parquet")
    run.state["data"] = {"fingerprint": data_fp, "anchor_ms": anchor_ms}
    run.state.pop("features", None)
    run.save()
    sizes = ", ".join(f"{name} {len(frame):,}" for name, frame in tables.items())
    run.result.steps.append(StepResult("data", True, time.perf_counter() - t0, sizes))
    return data_fp, anchor_ms


def _features_step(run: _CaseRun, data_fp: str, anchor_ms: int) -> tuple[Path, str]:
    """2. Apply + materialize and write the labelled set unless up to date; return its path and content digest."""
    t0 = time.perf_counter()
    options, case, refs = run.options, run.case, run.features.refs
    raws = [layout.feast_config(case, options.home)]
    if options.redis_url:
        raws.append(layout.feast_config(case, options.home, options.redis_url))
    stores = [_store_name(raw["online_store"]) for raw in raws]
    features_fp = _digest(
        data_fp,
        anchor_ms,
        _code("features"),
        raws,
        run.features.model_dump(mode="json"),
        asdict(run.spec.params),
    )
    labelled = run.data_dir / LABELLED
    outputs = [Path(raws[0]["registry"]["path"]), Path(raws[0]["online_store"]["path"]), labelled]
    previous = run.state.get("features", {})
    if not options.force and previous.get("fingerprint") == features_fp and all(p.is_file() for p in outputs):
        run.result.steps.append(StepResult("features", False, 0.0, "up to date"))
        return labelled, str(previous.get("content") or _content_digest(labelled))

    from vatic.examples import feast_repo  # Feast is imported only when there is work for it

    configs = [feast_repo.repo_config(case, home=options.home)]
    if options.redis_url:
        configs.append(feast_repo.repo_config(case, home=options.home, redis_url=options.redis_url))
    options.say(f"{case}: feast apply + materialize ({', '.join(stores)}) and point-in-time labelled set")
    feast_repo.apply_and_materialize(case, configs, run.data_dir, datetime.fromtimestamp(anchor_ms / 1000, UTC))
    events = run.spec.training_events(run.data_dir, anchor_ms)
    with feast_repo.quiet():
        store = feast_repo.store_for(configs[0])
    frame, rejected = feast_repo.labelled_set(store, run.features, events)
    frame = frame.rename(columns={run.spec.label: "label"})
    flags = [ref + MISSING_SUFFIX for ref in refs]
    _write_parquet(frame[[*_event_columns(frame, run.config), "label", *refs, *flags]], labelled)
    content = _content_digest(labelled)
    run.state["features"] = {"fingerprint": features_fp, "stores": stores, "content": content}
    run.save()
    missing = int(frame[flags].notna().any(axis=1).sum())
    detail = f"{len(frame):,} labelled events ({missing:,} with missing features, {rejected} rejected)"
    run.result.steps.append(StepResult("features", True, time.perf_counter() - t0, detail))
    return labelled, content


def _store_name(online_store: dict[str, Any]) -> str:
    """``sqlite`` or ``redis host:port,db=N`` (never a password: this goes to logs and prepare.json)."""
    if online_store.get("type") != "redis":
        return str(online_store.get("type"))
    parts = str(online_store.get("connection_string", "")).split(",")
    return "redis " + ",".join(part for part in parts if not part.startswith("password="))


#: the registry stage a use case's first version is put in (the fraud service follows it)
PRODUCTION = "production"


def _first_production(options: _Options, result: CaseResult) -> None:
    """Put the version prepare left in the ``production`` stage when the model has none yet; a later version is
    registered beside it and reaches production with ``vatic promote``."""
    if not result.version:
        return
    from vatic.connectors.registry import LocalFolderRegistry

    registry = LocalFolderRegistry(options.registry)
    if PRODUCTION not in registry.stages(result.model):
        registry.set_stage(result.model, PRODUCTION, result.version)
        options.say(f"{result.case}: {result.model} v{result.version} is in stage {PRODUCTION}")


def _train_step(run: _CaseRun, labelled: Path, content: str) -> _Training | None:
    """3. Start training in the server environment unless the newest registry version matches."""
    options, result = run.options, run.result
    seed = int(run.spec.params.seed)
    train_fp = _digest(_content_digest(labelled), _config_digest(run.config), _code(f"train:{run.case}", "train"), seed)
    model_dir = options.registry / result.model
    found = None if options.force else _version_with(model_dir, train_fp)
    if found is not None:
        version, metrics = found
        result.version, result.artifacts, result.metrics = version, str(model_dir / version), metrics
        result.steps.append(StepResult("train", False, 0.0, f"up to date ({result.model} v{version})"))
        return None
    staging = model_dir / f".incoming-{uuid.uuid4().hex[:8]}"
    log_path = run.case_home / "train.log"
    interpreter = options.python or server_python()
    options.say(f"{run.case}: training {result.model} in the server environment ({interpreter})")
    config_dir = layout.service_dir(run.case)
    process = _start_training(run.case, labelled, staging, config_dir, seed, interpreter, log_path)
    return _Training(run.case, process, staging, log_path, train_fp, time.perf_counter(), run.config)


def _event_columns(frame: pd.DataFrame, config: ServiceConfig) -> list[str]:
    """The input schema's fields that the history has (the product's attributes map is left out)."""
    from vatic.schemas import load_schema

    name = config.streaming.input_schema if config.streaming else None
    fields = [str(f["name"]) for f in load_schema(name)["fields"]] if name else config.event_fields()
    return [field for field in fields if field in frame.columns]
