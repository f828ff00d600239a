"""``prepare`` end to end (small sizes): data, real Feast, training in the real server environment, artifacts in
the documented formats, served by a real MLServer, and idempotence (what is up to date is skipped)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures.model_server import model_server, server_python
from vatic.connectors.inference import InferenceClient, InferenceRequest
from vatic.connectors.registry import LocalFolderRegistry
from vatic.examples.fraud_detection.events import make_world, transactions
from vatic.examples.fraud_detection.history import FraudParams
from vatic.examples.layout import case_home, service_dir
from vatic.examples.prepare import prepare
from vatic.examples.product_categorization.events import CATEGORIES
from vatic.examples.product_categorization.history import ProductParams
from vatic.examples.retrain import record_labels, retrain
from vatic.serving.config.loader import load_service
from vatic.serving.core.drift import Profile
from vatic.serving.core.tensors import MISSING_SUFFIX, build_inputs

FRAUD = FraudParams(customers=400, merchants=60, days=100, per_customer_day=0.5, training_days=30, seed=5)
PRODUCTS = ProductParams(sellers=120, days=30, listings=4000, training_listings=1000, seed=6)
HERE = Path(__file__).resolve().parent
FRAUD_CONFIG = load_service(service_dir("fraud_detection"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    home = tmp_path_factory.mktemp("prepare-home")
    lines: list[str] = []
    report = prepare(home=home, fraud=FRAUD, product=PRODUCTS, log=lines.append)
    return home, report, lines


def _artifacts(report, case: str) -> Path:
    return Path(report.cases[case].artifacts)


def test_a_first_run_generates_applies_and_trains_both_models(prepared):
    home, report, lines = prepared
    fraud, product = report.cases["fraud_detection"], report.cases["product_categorization"]
    assert fraud.ran == ["data", "features", "train"]
    assert product.ran == ["data", "features", "train"]
    assert (fraud.model, fraud.version, product.model, product.version) == (
        "fraud-detector",
        "1",
        "product-categorizer",
        "1",
    )
    assert Path(report.registry) == home / "model-registry"
    # a model's first version is put in the production stage, which the fraud service follows
    registry = LocalFolderRegistry(report.registry)
    assert registry.resolve("fraud-detector@production").version == "1"
    assert registry.resolve("product-categorizer@production").version == "1"
    assert "fraud_detection: fraud-detector v1 is in stage production" in lines
    # held-out metrics: well above chance, below perfection (a real signal, not a leak)
    assert 0.75 < fraud.metrics["roc_auc"] < 0.99
    assert 0.7 < product.metrics["accuracy"] < 1.0
    assert product.metrics["macro_f1"] > 0.65
    # the seller mix from Feast carries a signal the text does not
    assert product.metrics["accuracy"] > product.metrics["accuracy_text_only"]
    assert any("roc_auc" in line for line in lines)
    assert any("accuracy" in line for line in lines)


def _safetensors_header(path: Path) -> dict:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    assert 8 + size + max(
        end for key, v in header.items() if key != "__metadata__" for end in v["data_offsets"]
    ) == len(raw)
    return header


def test_artifacts_have_the_documented_formats_and_no_pickle(prepared):
    _, report, _ = prepared
    fraud = _artifacts(report, "fraud_detection")
    names = ["metrics.json", "model-settings.json", "model.json", "model.txt", "profile.json"]
    assert sorted(p.name for p in fraud.iterdir()) == names
    text = (fraud / "model.txt").read_text(encoding="utf-8")
    assert text.startswith("tree\n")
    assert "objective=binary" in text
    columns = FRAUD_CONFIG.model.inputs[0].columns
    assert f"max_feature_idx={len(columns) - 1}" in text
    settings = json.loads((fraud / "model-settings.json").read_text())
    assert settings["implementation"] == "mlserver_lightgbm.LightGBMModel"
    assert settings["parameters"] == {"uri": "./model.txt", "version": "1"}
    metrics = json.loads((fraud / "metrics.json").read_text())
    assert metrics["columns"] == columns
    # the ensemble's second member: XGBoost's JSON format, scored on the same held-out rows
    assert json.loads((fraud / "model.json").read_text())["learner"]["objective"]["name"] == "reg:logistic"
    assert metrics["xgboost"]["file"] == "model.json"
    assert 0.5 < metrics["xgboost"]["roc_auc"] <= 1.0
    assert 0.5 < metrics["ensemble_mean_roc_auc"] <= 1.0
    assert metrics["version"] == "1"
    assert len(metrics["fingerprint"]) == 64

    product = _artifacts(report, "product_categorization")
    assert sorted(p.name for p in product.iterdir()) == [
        "head.safetensors",
        "labels.json",
        "metrics.json",
        "model-settings.json",
        "model.json",
        "profile.json",
    ]
    header = _safetensors_header(product / "head.safetensors")
    dims = 384 + len(CATEGORIES)
    assert header["weight"]["dtype"] == "F32"
    assert header["weight"]["shape"] == [len(CATEGORIES), dims]
    assert header["bias"]["dtype"] == "F32"
    assert header["bias"]["shape"] == [len(CATEGORIES)]
    labels = json.loads((product / "labels.json").read_text())
    assert labels == CATEGORIES
    product_config = load_service(service_dir("product_categorization"))
    assert [o.labels for o in product_config.model.outputs] == [labels, labels]
    # the drift monitor's references: named after the registered version, every profiled column of the service
    fraud_profile = Profile.read(fraud / "profile.json")
    assert (fraud_profile.model, fraud_profile.version) == ("fraud-detector", "1")
    assert fraud_profile.rows == metrics["rows_test"]
    profiled = {(c.role, c.name): c for c in fraud_profile.columns}
    assert {name for role, name in profiled if role == "input"} == set(FRAUD_CONFIG.event_fields()) | set(
        FRAUD_CONFIG.features.refs
    )
    assert profiled["input", "amount"].kind == "numeric"
    assert profiled["input", "channel"].kind == "categorical"
    assert profiled["output", "fraud_probability"].kind == "numeric"
    product_profile = Profile.read(product / "profile.json")
    outputs = {c.name: c for c in product_profile.columns if c.role == "output"}
    assert set(outputs["category"].categories) <= set(CATEGORIES)
    assert not any(c.name in ("title", "description") for c in product_profile.columns)  # free text
    card = json.loads((product / "model.json").read_text())
    assert card["embedding"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert card["head"]["input_dimensions"] == dims
    assert card["inputs"]["seller_mix"]["columns"] == product_config.model.inputs[1].columns
    assert card["feature_refs"] == product_config.features.refs
    assert json.loads((product / "model-settings.json").read_text())["implementation"] == (
        "vatic.examples.product_categorization.runtime.ProductCategorizer"
    )


def _serve_fraud_rows(registry: str, labelled: pd.DataFrame, event_ids: list[str], work: Path):
    """Fetch the fraud model from the registry, serve it with a real MLServer, infer ``build_inputs`` tensors."""
    fetched = LocalFolderRegistry(registry).fetch("fraud-detector", work / "models" / "fraud-detector")
    rows = labelled.set_index("event_id").loc[event_ids].reset_index()
    refs = FRAUD_CONFIG.features.refs
    events = rows.to_dict("records")
    features = [{ref: row[ref] for ref in refs} for row in events]
    missing = [{ref: row[ref + MISSING_SUFFIX] for ref in refs if row[ref + MISSING_SUFFIX]} for row in events]
    tensors, problems = build_inputs(FRAUD_CONFIG.model, events, features, missing)
    assert problems == {}
    server = model_server(work / "home", work / "models", name="fraud-mlserver", parallel_workers=0)
    try:
        server.start()

        async def infer():
            async with InferenceClient(server.url, deadline_s=30) as client:
                return await client.infer("fraud-detector", InferenceRequest(inputs=tuple(tensors)))

        return fetched, asyncio.run(infer()).output("predict")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def checked(prepared, tmp_path_factory):
    """The server environment loads the artifacts and recomputes the metrics (check_artifacts.py), while a real
    MLServer serves the fraud model fetched from the registry (the first 16 hold-out rows)."""
    home, report, _ = prepared
    work = tmp_path_factory.mktemp("check")
    labelled = {case: case_home(case, home) / "data" / "labelled.parquet" for case in report.cases}
    argv = [str(server_python()), str(HERE / "check_artifacts.py")]
    argv += [str(_artifacts(report, "fraud_detection")), str(labelled["fraud_detection"])]
    argv += [str(_artifacts(report, "product_categorization")), str(labelled["product_categorization"])]
    argv += [str(work / "check.json")]
    check = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fraud = pd.read_parquet(labelled["fraud_detection"]).sort_values(["event_time", "event_id"], kind="stable")
        test_share = report.cases["fraud_detection"].metrics["test_share"]
        first_held_out = fraud["event_id"].iloc[int(len(fraud) * (1 - test_share)) :][:16].tolist()
        fetched, served = _serve_fraud_rows(report.registry, fraud, first_held_out, work)
    finally:
        _, stderr = check.communicate(timeout=600)
    assert check.returncode == 0, stderr[-3000:]
    recomputed = json.loads((work / "check.json").read_text())
    assert recomputed["fraud"]["sample_event_ids"] == first_held_out
    return recomputed, fetched, served


def test_the_artifacts_reproduce_their_metrics_in_the_server_environment(prepared, checked):
    _, report, _ = prepared
    recomputed, _, _ = checked
    fraud, product = report.cases["fraud_detection"].metrics, report.cases["product_categorization"].metrics
    assert recomputed["fraud"]["num_feature"] == len(FRAUD_CONFIG.model.inputs[0].columns)
    assert recomputed["fraud"]["roc_auc"] == pytest.approx(fraud["roc_auc"], abs=1e-4)
    assert recomputed["product"]["weight"] == [[len(CATEGORIES), 384 + len(CATEGORIES)], "float32"]
    assert recomputed["product"]["bias"] == [[len(CATEGORIES)], "float32"]
    assert recomputed["product"]["probabilities_sum_to_one"]
    assert recomputed["product"]["accuracy"] == pytest.approx(product["accuracy"], abs=2 / product["rows_test"])


def test_mlserver_serves_the_fraud_model_from_the_registry(checked):
    """The no-code LightGBM runtime answers `predict` [N, 1] = the positive-class probability of model.txt."""
    recomputed, fetched, served = checked
    assert fetched.version == "1"
    assert served.shape == (16, 1)
    assert served.data == pytest.approx(recomputed["fraud"]["sample_scores"], abs=1e-6)
    assert all(0.0 < p < 1.0 for p in served.data)


def test_a_second_run_skips_every_step(prepared):
    home, first, _ = prepared
    again = prepare(home=home, fraud=FRAUD, product=PRODUCTS)
    for case, result in again.cases.items():
        assert result.ran == [], (case, result.steps)
        assert result.version == first.cases[case].version
        assert result.metrics == first.cases[case].metrics


def test_a_stale_anchor_regenerates_data_but_keeps_the_model(prepared):
    """Data older than refresh_after is re-anchored (fresh online features); the training set's content is the
    same, so the model is not retrained."""
    home, first, _ = prepared
    later = datetime.now(UTC) + timedelta(hours=13)
    again = prepare(home=home, fraud=FRAUD, product=PRODUCTS, now=later)
    for case, result in again.cases.items():
        assert result.ran == ["data", "features"], (case, result.steps)
        assert result.version == first.cases[case].version
    anchor = json.loads((case_home("fraud_detection", home) / "prepare.json").read_text())["data"]["anchor_ms"]
    assert anchor == int(later.replace(second=0, microsecond=0).timestamp() * 1000)


def test_changed_generator_parameters_train_a_new_version(prepared):
    home, _, _ = prepared
    again = prepare(["fraud_detection"], home=home, fraud=replace(FRAUD, seed=FRAUD.seed + 1))
    result = again.cases["fraud_detection"]
    assert result.ran == ["data", "features", "train"]
    assert result.version == "2"
    assert LocalFolderRegistry(again.registry).resolve("fraud-detector").version == "2"
    # a later version waits beside production until promoted: the servers that follow the stage keep version 1
    assert LocalFolderRegistry(again.registry).resolve("fraud-detector@production").version == "1"
    assert list(again.cases) == ["fraud_detection"]


def test_a_redis_url_with_a_password_is_refused_without_echoing_it() -> None:
    from vatic.examples.layout import redis_connection_string
    from vatic.schemas.errors import ConfigError

    assert redis_connection_string("rediss://cache:6380/2") == "cache:6380,db=2,ssl=true"
    with pytest.raises(ConfigError, match="set VATIC_REDIS_PASSWORD") as refused:
        redis_connection_string("redis://:hunter2-canary@cache:6379/0")
    assert "hunter2-canary" not in str(refused.value)


def _next_version(home: Path, model: str) -> str:
    return str(max(int(p.name) for p in (home / "model-registry" / model).iterdir() if p.name.isdigit()) + 1)


def test_retraining_registers_the_next_version_judged_on_the_serving_versions_held_out_rows(prepared):
    home, _, _ = prepared
    # labels arrive after the predictions: recent events with their true labels join the training set
    now = datetime.now(UTC)
    start = int(now.timestamp() * 1000) - 600_000
    recent = list(transactions(make_world(n_customers=400, n_merchants=60, seed=5), 300, start_ms=start, rate_per_s=1))
    assert record_labels("fraud_detection", [e for e, _ in recent], [y for _, y in recent], home=home) == 300
    expected = _next_version(home, "fraud-detector")
    lines: list[str] = []
    report = retrain("fraud_detection", home=home, now=now, log=lines.append)
    assert (report.model, report.version, report.recent_rows) == ("fraud-detector", expected, 300)
    folder = home / "model-registry" / "fraud-detector" / expected
    assert {"model.txt", "metrics.json", "profile.json", "model-settings.json"} <= {p.name for p in folder.iterdir()}
    assert Profile.read(folder / "profile.json").version == expected
    gate = json.loads((folder / "metrics.json").read_text())["gate"]
    assert gate["metric"] == "roc_auc"
    assert gate["serving_version"] == "1"  # the production stage's version, scored on the same held-out rows
    assert 0.6 < gate["serving"] < 1.0
    assert gate["new"] == report.metrics["roc_auc"]
    assert gate["passed"] == (gate["new"] >= gate["serving"] - 0.01) == report.gate.passed
    assert any("point-in-time labelled set" in line for line in lines)
    # the serving version is untouched: promotion is the caller's step
    assert LocalFolderRegistry(home / "model-registry").stages("fraud-detector")["production"] == "1"
    # a retrained version does not make prepare train the prepared model again
    again = prepare(home=home, fraud=FRAUD, product=PRODUCTS).cases["fraud_detection"]
    assert "train" not in again.ran
    assert again.version != expected


def test_a_gate_that_the_new_version_cannot_pass_leaves_it_registered_and_unserved(prepared):
    home, _, _ = prepared
    expected = _next_version(home, "fraud-detector")
    report = retrain("fraud_detection", home=home, margin=-1.0)  # must beat the serving version by a full point
    assert not report.gate.passed
    assert report.gate.line().endswith("refused")
    assert (home / "model-registry" / "fraud-detector" / expected / "model.txt").is_file()
    assert LocalFolderRegistry(home / "model-registry").stages("fraud-detector")["production"] == "1"
