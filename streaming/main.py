"""Entry point of a vatic streaming job, for the local mini-cluster and for ``flink run --python`` alike.

    python -m vatic.streaming.main '<JobSettings as JSON>'

Without an argument the settings come from ``VATIC_STREAM_*`` environment variables. ``resume_from`` (a
checkpoint or savepoint folder) restores state and source offsets from it.
"""

from __future__ import annotations

import json
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


def run(settings: JobSettings, *, resume_from: Path | None = None, local: bool = True) -> None:
    """Build and execute the job; blocks until it ends (bounded input, cancellation or failure)."""
    config = load_service(settings.service_dir, settings.environment)
    conf = flink_configuration(config, settings, local=local)
    if resume_from is not None:
        conf.set_string("execution.state-recovery.path", resume_from.resolve().as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    build(env, settings)
    env.execute(settings.job_name or f"vatic-{config.service}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    payload = json.loads(args[0]) if args else {}
    resume = payload.pop("resume_from", None)
    local = payload.pop("local", True)
    settings = JobSettings(**payload)
    run(settings, resume_from=Path(resume) if resume else None, local=local)


if __name__ == "__main__":
    main()
