"""Training entry point of the model-server environment: ``python -m vatic.examples.training``.

``prepare`` (pipeline environment) runs it as a subprocess of ``.venv/server/bin/python``::

    python -m vatic.examples.training fraud_detection --labelled labelled.parquet --out DIR --seed 7

It loads the use case's service config (``--service``, default: the checked-in one), trains into ``--out``
(the case's artifacts plus ``metrics.json``) and prints the metrics as one JSON line, last on stdout. With
``--evaluate DIR`` instead of ``--out`` it trains nothing and prints the held-out metrics of the version in ``DIR``
on the same split (the retraining gate).
Exit code 0 on success; a failure prints the error on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from vatic.examples.layout import CASES, Case, service_dir
from vatic.serving.config.loader import load_service


def run(
    case: Case, labelled: Path, out: Path, *, seed: int, service: Path | None = None, device: str = "auto"
) -> dict[str, Any]:
    """Train ``case`` from ``labelled`` into ``out``; return the metrics (also in ``out/metrics.json``)."""
    config = load_service(service or service_dir(case))
    if case == "fraud_detection":
        from vatic.examples.fraud_detection import train as fraud

        return fraud.train(labelled, out, config, seed=seed)
    from vatic.examples.product_categorization import train as product

    return product.train(labelled, out, config, seed=seed, device=device)


def evaluate(
    case: Case, labelled: Path, model_dir: Path, *, service: Path | None = None, device: str = "auto"
) -> dict[str, Any]:
    """The held-out metrics of an already trained version (``model_dir``) on ``labelled``'s hold-out."""
    config = load_service(service or service_dir(case))
    if case == "fraud_detection":
        from vatic.examples.fraud_detection import train as fraud

        return fraud.evaluate(labelled, model_dir, config)
    from vatic.examples.product_categorization import train as product

    return product.evaluate(labelled, model_dir, config, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vatic.examples.training", description=__doc__)
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--labelled", type=Path, required=True, help="labelled set (Parquet)")
    parser.add_argument("--out", type=Path, default=None, help="artifact folder to write")
    parser.add_argument(
        "--evaluate", type=Path, default=None, help="instead of training: the held-out metrics of this version folder"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--service", type=Path, default=None, help="service config folder")
    parser.add_argument("--device", default="auto", help="embedding device: auto, cpu or cuda")
    args = parser.parse_args(argv)
    # quiet third-party progress bars and hub lookups; everything is local
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if (args.out is None) == (args.evaluate is None):
        parser.error("give --out (train) or --evaluate (score a trained version)")
    try:
        if args.evaluate is not None:
            metrics = evaluate(args.case, args.labelled, args.evaluate, service=args.service, device=args.device)
        else:
            metrics = run(args.case, args.labelled, args.out, seed=args.seed, service=args.service, device=args.device)
    except Exception as exc:  # the traceback for the log, then one line for the caller
        traceback.print_exc()
        print(f"training {args.case} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
