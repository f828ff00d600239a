"""Entry point of a vatic streaming job, for the local mini-cluster and for ``flink run --python`` alike.

    python -m vatic.streaming.main '<JobSettings as JSON>'

Without an argument the settings come from ``VATIC_STREAM_*`` environment variables. ``resume_from`` (a
checkpoint or savepoint folder) restores state and source offsets from it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pyflink.datastream import StreamExecutionEnvironment

from vatic.serving.config import load_service
from vatic.streaming.job import build, flink_configuration
from vatic.streaming.settings import JobSettings


def latest_checkpoint(root: Path) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` folder with ``_metadata``) under ``root``, if any."""
    done = [p.parent for p in root.glob("*/chk-*/_metadata")]
    if not done:
        return None
    return max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])))


def run(settings: JobSettings | list[JobSettings], *, resume_from: Path | None = None, local: bool = True) -> None:
    """Build and execute one job with a pipeline per service; blocks until it ends (bounded input, cancellation or
    failure). The first service's settings configure the job (checkpoints, parallelism, latency)."""
    # A process that ran a local job before has served its Python workers itself (PyFlink's loopback mode) and
    # carries PYFLINK_GATEWAY_DISABLED, which its children inherit: this is a client, so it may launch a gateway.
    os.environ.pop("PYFLINK_GATEWAY_DISABLED", None)
    # Python workers as processes, also in the local mini-cluster: PyFlink's default there ("loopback") runs
    # every subtask's Python code in this client process, on one GIL, whatever the parallelism.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    services = settings if isinstance(settings, list) else [settings]
    first = services[0]
    config = load_service(first.service_dir, first.environment)
    conf = flink_configuration(config, first, local=local)
    if resume_from is not None:
        conf.set_string("execution.state-recovery.path", resume_from.resolve().as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    t_env = None
    for one in services:
        t_env = build(env, one, t_env)
    names = "+".join(load_service(s.service_dir, s.environment).service for s in services)
    env.execute(first.job_name or f"vatic-{names}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    payload = json.loads(args[0]) if args else {}
    resume = payload.pop("resume_from", None)
    local = payload.pop("local", True)
    services = payload.pop("services", None)
    settings = [JobSettings(**one) for one in services] if services else JobSettings(**payload)
    run(settings, resume_from=Path(resume) if resume else None, local=local)


if __name__ == "__main__":
    main()
