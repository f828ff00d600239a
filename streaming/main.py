"""Entry point of a vatic streaming job, for the local mini-cluster and for Flink's own tooling alike.

    python -m vatic.streaming.main --service-dir examples/fraud_detection/service --env local \
        --model-url http://127.0.0.1:8090
    flink run --python .../vatic/streaming/main.py --service-dir /opt/vatic/service --env production ...
    flink run -pym vatic.streaming.main --service-dir ...

``--job monitor`` runs the services' drift monitors instead of their pipelines (:mod:`vatic.streaming.monitor`).
One option per setting (``--help`` lists them; :mod:`vatic.streaming.settings`); options left out come from
``VATIC_STREAM_*`` environment variables. ``--resume-from`` (a checkpoint or savepoint folder) restores state
and source offsets. Outside ``flink run`` the job runs in an embedded mini-cluster, whose TaskManager the
process watches: it exits with :data:`~vatic.streaming.minicluster.EXIT_CLUSTER_LOST` when it is lost (see
:mod:`vatic.streaming.minicluster`, which restarts it).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pydantic import ValidationError
from pyflink.datastream import StreamExecutionEnvironment

from vatic.schemas.errors import PortInUse, VaticError
from vatic.serving.config import load_service
from vatic.streaming import monitor
from vatic.streaming.job import build, check_kafka, flink_configuration
from vatic.streaming.minicluster import exit_cluster_lost, watch_task_managers
from vatic.streaming.settings import JobSettings, parse_job_arguments


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
    configs = [
        monitor.monitor_config(one) if one.job == "monitor" else load_service(one.service_dir, one.environment)
        for one in services
    ]
    monitoring = services[0].job == "monitor"
    for config, one in zip(configs, services, strict=True):
        # a refused identity or a missing ACL stops here, before Flink would restart on it
        (monitor.check_kafka if monitoring else check_kafka)(config, one)
    first = services[0]
    if local:
        first = _metrics_port(first)
    conf = flink_configuration(configs[0], first, local=local)
    if monitoring:
        monitor.monitor_configuration(configs[0], conf)
    if resume_from is not None:
        conf.set_string("execution.state-recovery.path", resume_from.resolve().as_uri())
    if local:
        port = _free_port()
        conf.set_string("rest.bind-address", "127.0.0.1")
        conf.set_string("rest.address", "127.0.0.1")
        conf.set_string("rest.bind-port", str(port))
        watch_task_managers(port, exit_cluster_lost)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    t_env = None
    for one in services:
        t_env = (monitor.build if monitoring else build)(env, one, t_env)
    names = "+".join(config.service for config in configs) + ("-monitor" if monitoring else "")
    try:
        env.execute(first.job_name or f"vatic-{names}")
    except Py4JJavaError as exc:  # Flink gave up: the restart attempts are spent (or a failure it never retries)
        raise VaticError(f"the job failed and Flink gave up restarting it: {root_cause(exc)}") from None


def root_cause(error: Py4JJavaError) -> str:
    """The innermost cause of a failed job, in one line: a Python error raised in a worker (the last line of
    its traceback) or the deepest Java exception."""
    cause = error.java_exception
    while cause.getCause() is not None and cause.getCause() != cause:
        cause = cause.getCause()
    text = str(cause.toString())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    python = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Unavailable|Exceeded)\b.*:", line)]
    return (python[-1] if python else lines[0] if lines else text)[:500]


def _metrics_port(settings: JobSettings) -> JobSettings:
    """The settings with a metrics port the local job can bind: a taken port given on purpose (option or
    ``VATIC_STREAM_METRICS_PORT``) is one :class:`PortInUse` line; the default port taken (another local job
    serves it) is one warning line and no endpoint for this job, which still runs (Flink itself would only log
    that its reporter failed)."""
    port = settings.metrics_port
    if not port or port_bindable(port):
        return settings
    if "metrics_port" in settings.model_fields_set:
        raise PortInUse(
            f"the job's metrics port {port} is taken by another process: pass --metrics-port <free port> "
            "(VATIC_STREAM_METRICS_PORT), or 0 for no metrics endpoint"
        )
    print(
        f"vatic: the default metrics port {port} is taken (another local job?): this job runs without a metrics "
        "endpoint; pass --metrics-port <free port> to get one",
        file=sys.stderr,
        flush=True,
    )
    return settings.model_copy(update={"metrics_port": 0})


def port_bindable(port: int) -> bool:
    """Whether ``port`` can be bound on every interface (where a job's Prometheus reporter listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))  # the reporter listens on every interface
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the job; a vatic error (or invalid settings) is one line on stderr and
    exit status 2."""
    try:
        job = parse_job_arguments(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"vatic: invalid job settings: {problems}", file=sys.stderr)
        sys.exit(2)
    # a Flink client (flink run) runs this program with its gateway's port set: the job goes to its cluster
    local = job.local if job.local is not None else "PYFLINK_GATEWAY_PORT" not in os.environ
    try:
        run(job.services, resume_from=job.resume_from, local=local)
    except VaticError as exc:
        print(f"vatic: {exc.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
