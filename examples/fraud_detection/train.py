"""Train the fraud detector (server environment: LightGBM, scikit-learn).

Input: a labelled set (``prepare``'s ``labelled.parquet``: event fields, ``label``, features after the policy and
their ``#missing`` statuses). The feature matrix is the service's ``input-0`` tensor built by
:func:`vatic.examples.tabular.model_arrays` - the function serving uses - as float32, the datatype the
model server decodes. Split by time: the newest ``test_share`` of the events is held out; the newest 15% of the
rest picks the number of boosting rounds (early stopping), then the booster is refit on all of the rest.

Output (``out`` folder): ``model.txt`` (LightGBM's text format, loaded by ``mlserver_lightgbm.LightGBMModel``;
for a binary booster it answers the positive-class probability), ``model.json`` (an XGBoost model of the same
rows: the second member of the fraud ensemble, ``examples/fraud_detection/ensemble``), ``metrics.json`` and
``profile.json`` (the drift monitor's reference: the held-out rows' inputs and scores). Deterministic for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from vatic.examples.tabular import model_arrays, reference_profile
from vatic.serving.config.model import ServiceConfig

INPUT = "input-0"
ROUNDS = 1000
#: the XGBoost member of the fraud ensemble, beside model.txt in the same registry version
XGBOOST_FILE = "model.json"


def feature_names(columns: list[str]) -> list[str]:
    """LightGBM-safe names of the tensor columns (LightGBM refuses ``:`` and ``#`` in feature names)."""
    return [column.replace(":", "__").replace("#", "__") for column in columns]


def _params(seed: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
        "cat_smooth": 10,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "verbose": -1,
    }


def train(labelled: Path, out: Path, config: ServiceConfig, *, seed: int, test_share: float = 0.2) -> dict[str, Any]:
    """Fit, evaluate on the time-based hold-out, write ``model.txt`` and ``metrics.json``; return the metrics."""
    import lightgbm as lgb
    from sklearn.metrics import average_precision_score, roc_auc_score

    frame = pd.read_parquet(labelled).sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    spec = next(tensor for tensor in config.model.inputs if tensor.name == INPUT)
    x = model_arrays(frame, config)[INPUT]
    y = frame["label"].astype(np.int32).to_numpy()
    cut = int(len(frame) * (1 - test_share))
    fit_cut = int(cut * 0.85)
    names = feature_names(spec.columns)
    categorical = [names[i] for i, column in enumerate(spec.columns) if column in spec.encodings]
    if len(set(y[:fit_cut])) < 2 or len(set(y[cut:])) < 2:
        raise ValueError("the labelled set needs both classes in the training and the held-out part")

    def dataset(rows: slice) -> Any:
        return lgb.Dataset(x[rows], y[rows], feature_name=names, categorical_feature=categorical, free_raw_data=False)

    params = _params(seed)
    probe = lgb.train(
        params,
        dataset(slice(0, fit_cut)),
        num_boost_round=ROUNDS,
        valid_sets=[dataset(slice(fit_cut, cut))],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    rounds = max(1, int(probe.best_iteration))
    booster = lgb.train(params, dataset(slice(0, cut)), num_boost_round=rounds)
    scores = booster.predict(x[cut:])
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / "model.txt"))
    second = _train_xgboost(x, y, cut, fit_cut, seed, out / XGBOOST_FILE)
    gain = dict(zip(spec.columns, booster.feature_importance("gain").tolist(), strict=True))
    metrics: dict[str, Any] = {
        "task": "binary classification (fraud)",
        "library": f"lightgbm {lgb.__version__}",
        "roc_auc": round(float(roc_auc_score(y[cut:], scores)), 4),
        "average_precision": round(float(average_precision_score(y[cut:], scores)), 4),
        "split": "time-based: the newest share of the events is held out",
        "test_share": test_share,
        "rows_train": cut,
        "rows_test": len(frame) - cut,
        "fraud_rate_train": round(float(y[:cut].mean()), 4),
        "fraud_rate_test": round(float(y[cut:].mean()), 4),
        "rows_with_missing_features": int(
            frame[[c for c in frame.columns if c.endswith("#missing")]].notna().any(axis=1).sum()
        ),
        "boosting_rounds": rounds,
        "seed": seed,
        "input": INPUT,
        "columns": list(spec.columns),
        "feature_names": names,
        "categorical": categorical,
        "top_features": [name for name, _ in sorted(gain.items(), key=lambda item: -item[1])[:8]],
        # the ensemble's second member (examples/fraud_detection/ensemble): the same rows, another learner
        "xgboost": {
            "library": second["library"],
            "roc_auc": round(float(roc_auc_score(y[cut:], second["scores"])), 4),
            "boosting_rounds": second["rounds"],
            "file": XGBOOST_FILE,
        },
        "ensemble_mean_roc_auc": round(float(roc_auc_score(y[cut:], (scores + second["scores"]) / 2)), 4),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    # the drift monitor's reference: the held-out rows (the newest, closest to what will be served) and their scores
    held_out = frame.iloc[cut:].reset_index(drop=True)
    reference_profile(held_out, config, {config.model.outputs[0].field: scores.tolist()}).write(out)
    return metrics


def _train_xgboost(x: Any, y: Any, cut: int, fit_cut: int, seed: int, path: Path) -> dict[str, Any]:
    """The ensemble's second member: XGBoost on the same tensor and split, early-stopped on the same validation
    rows, refit on the training part; objective ``reg:logistic`` (MLServer's XGBoost runtime then answers the
    probability as ``predict``, as the LightGBM one does). Written to ``path`` (XGBoost's JSON format)."""
    import xgboost as xgb

    params = {
        "objective": "reg:logistic", "eval_metric": "auc", "eta": 0.05, "max_depth": 6, "min_child_weight": 5,
        "subsample": 0.9, "colsample_bytree": 0.9, "lambda": 1.0, "tree_method": "hist", "seed": seed, "nthread": 2,
    }  # fmt: skip
    fit = xgb.DMatrix(x[:fit_cut], y[:fit_cut])
    valid = xgb.DMatrix(x[fit_cut:cut], y[fit_cut:cut])
    probe = xgb.train(params, fit, ROUNDS, evals=[(valid, "valid")], early_stopping_rounds=50, verbose_eval=False)
    rounds = max(1, int(probe.best_iteration) + 1)
    booster = xgb.train(params, xgb.DMatrix(x[:cut], y[:cut]), rounds)
    booster.save_model(str(path))
    scores = booster.predict(xgb.DMatrix(x[cut:]))
    return {"library": f"xgboost {xgb.__version__}", "rounds": rounds, "scores": np.asarray(scores, dtype=np.float64)}


def model_settings(config: ServiceConfig, version: str, columns: int) -> dict[str, Any]:
    """MLServer ``model-settings.json`` of the artifact folder (no-code LightGBM runtime, ``model.txt``)."""
    return {
        "name": config.model.name,
        "implementation": "mlserver_lightgbm.LightGBMModel",
        "parameters": {"uri": "./model.txt", "version": version},
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, columns]}],
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1, 1]}],
    }


def evaluate(labelled: Path, model_dir: Path, config: ServiceConfig, *, test_share: float = 0.2) -> dict[str, Any]:
    """The held-out metrics of the model in ``model_dir`` (a registry version folder) on ``labelled``'s hold-out,
    split exactly as :func:`train` splits it: the retraining gate compares versions on the same rows."""
    import lightgbm as lgb
    from sklearn.metrics import average_precision_score, roc_auc_score

    frame = pd.read_parquet(labelled).sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    x = model_arrays(frame, config)[INPUT]
    y = frame["label"].astype(np.int32).to_numpy()
    cut = int(len(frame) * (1 - test_share))
    scores = lgb.Booster(model_file=str(model_dir / "model.txt")).predict(x[cut:])
    return {
        "roc_auc": round(float(roc_auc_score(y[cut:], scores)), 4),
        "average_precision": round(float(average_precision_score(y[cut:], scores)), 4),
        "rows_test": len(frame) - cut,
    }
