"""``vatic stream run | submit | jobs | cancel | savepoint | upgrade | tail``: the job on a mini-cluster or a Flink
cluster, its operations there (savepoints, upgrades through a savepoint), its outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vatic.cli.commands.schema import RegistryUrl, open_source, registry_url
from vatic.cli.stack.artifacts import Artifacts
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import ConfigError
from vatic.serving.config import load_service

if TYPE_CHECKING:
    from vatic.cli.stack.flink import FlinkRest
    from vatic.connectors.kafka import KafkaSettings
    from vatic.streaming.settings import JobSettings

app = typer.Typer(
    rich_markup_mode=None, help="Run the streaming job (local mini-cluster or a Flink cluster) and read its topics."
)

ServiceDir = Annotated[Path, typer.Argument(help="service folder (service.yaml + environment overlays)")]
Env = Annotated[str, typer.Option("--env", help="environment overlay: local, staging, production")]
ModelUrl = Annotated[
    str | None, typer.Option(help="model server base URL (default: the local stack's server for the service)")
]


def tool_kafka() -> KafkaSettings:
    """The Kafka the CLI's readers and writers (``stream tail``, ``dlq``, ``compare``) use: the broker at
    ``VATIC_STREAM_BOOTSTRAP_SERVERS``, else the local stack's."""
    from vatic.connectors.kafka import KafkaSettings

    bootstrap = os.environ.get("VATIC_STREAM_BOOTSTRAP_SERVERS")
    return KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else StackSettings().kafka()


def model_url_for(service_dir: Path, explicit: str | None) -> str:
    """``explicit``, else ``VATIC_STREAM_MODEL_URL``, else the local stack's model server of ``service_dir``."""
    if explicit:
        return explicit
    if os.environ.get("VATIC_STREAM_MODEL_URL"):
        return os.environ["VATIC_STREAM_MODEL_URL"]
    try:
        from vatic.cli.stack.services import MODEL_SERVERS

        stack = StackSettings()
        for component in MODEL_SERVERS.values():
            server = component(stack)
            if server.service_dir.resolve() == service_dir.resolve():
                return str(server.url)
    except (ImportError, AttributeError):
        pass
    raise ConfigError(f"no model server known for {service_dir}: pass --model-url http://host:port")


def _settings(
    service_dir: Path,
    env: str,
    model_url: str | None,
    *,
    bounded: bool,
    parallelism: int | None,
    checkpoint_dir: Path | None,
    schema_registry_url: str | None,
    local: bool,
    cluster: bool = False,
) -> dict[str, Any]:
    """The job settings' fields; ``cluster``: the local stack's three-node Kafka cluster instead of the broker that
    ``VATIC_STREAM_BOOTSTRAP_SERVERS`` / ``VATIC_KAFKA_BOOTSTRAP_SERVERS`` / the stack's single broker name."""
    stack = StackSettings()
    artifacts = Artifacts(stack.cache)
    # the mini-cluster needs the pinned connector; a cluster may have it in flink/lib instead
    jar = artifacts.require_flink_kafka_connector() if local else artifacts.flink_kafka_connector
    config = load_service(service_dir, env)
    broker = os.environ.get("VATIC_STREAM_BOOTSTRAP_SERVERS") or os.environ.get(
        "VATIC_KAFKA_BOOTSTRAP_SERVERS", stack.kafka_bootstrap
    )
    return {
        "service_dir": str(service_dir.resolve()),
        "environment": env,
        "bootstrap_servers": stack.kafka_cluster_bootstrap if cluster else broker,
        "model_url": model_url_for(service_dir, model_url),
        "redis_url": os.environ.get("VATIC_STREAM_REDIS_URL"),
        "schema_registry_url": registry_url(schema_registry_url),
        "schema_store": str(stack.home / "schemas"),
        "kafka_connector_jar": str(jar.resolve()) if jar.is_file() else None,
        "checkpoint_dir": str((checkpoint_dir or stack.home / "checkpoints" / config.service).resolve()),
        "parallelism": parallelism,
        "bounded": bounded,
    }


def _create_topics(service_dir: Path, env: str, bootstrap: str | None, partitions: int | None = None) -> None:
    """Create the service's missing topics: ``partitions`` each (default: the parallelism, at least 2), as many
    replicas as the cluster has brokers up to 3, and ``min.insync.replicas`` 2 with 3 replicas (one broker may be
    lost without losing an acknowledged record or refusing writes)."""
    from vatic.connectors.kafka import KafkaSettings, broker_count, ensure_topics

    config = load_service(service_dir, env)
    assert config.streaming is not None
    spec = config.streaming
    topics = [spec.input_topic, *config.written_topics]
    kafka = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
    replication = min(3, broker_count(kafka))
    created = ensure_topics(
        topics,
        partitions=partitions or max(2, spec.parallelism),
        replication=replication,
        config={"min.insync.replicas": "2"} if replication >= 3 else None,
        settings=kafka,
    )
    if created:
        typer.echo(f"created topics: {', '.join(created)} (replication {replication})", err=True)


@app.command()
def run(
    service_dirs: Annotated[
        list[Path], typer.Argument(help="service folder(s); several services run as one job, one pipeline each")
    ],
    env: Env = "local",
    model_url: Annotated[
        list[str] | None,
        typer.Option(help="model server base URL, one per service in order (default: the local stack's servers)"),
    ] = None,
    bounded: Annotated[bool, typer.Option(help="stop at the input topic's end offsets (backfills, tests)")] = False,
    parallelism: Annotated[int | None, typer.Option(min=1, help="override streaming.parallelism")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="default: .vatic/checkpoints/<services>")] = None,
    resume: Annotated[bool, typer.Option(help="restore from the newest retained checkpoint")] = True,
    schema_registry_url: RegistryUrl = None,
    create_topics: Annotated[bool, typer.Option(help="create the services' topics when missing")] = True,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Prometheus endpoint of the job (default: VATIC_STREAM_METRICS_PORT, then 9249); 0: none",
        ),
    ] = None,
) -> None:
    """Run the job in the embedded local mini-cluster (blocks until it ends or Ctrl-C).

    The job runs in a child process; if the mini-cluster loses its TaskManager it is restarted from the newest
    checkpoint (a few times in a row at most), as a cluster would start a new TaskManager.
    """
    from vatic.streaming.settings import JobSettings

    urls = list(model_url or [])
    if urls and len(urls) != len(service_dirs):
        raise ConfigError(f"--model-url given {len(urls)} time(s) for {len(service_dirs)} service(s): give one each")
    names = "+".join(load_service(d, env).service for d in service_dirs)
    checkpoints = checkpoint_dir or StackSettings().home / "checkpoints" / names
    services = []
    for index, service_dir in enumerate(service_dirs):
        payload = _settings(
            service_dir, env, urls[index] if urls else None, bounded=bounded, parallelism=parallelism,
            checkpoint_dir=checkpoints, schema_registry_url=schema_registry_url, local=True,
        )  # fmt: skip
        if create_topics:
            _create_topics(service_dir, env, payload["bootstrap_servers"])
        if metrics_port is not None:
            payload["metrics_port"] = metrics_port
        services.append(JobSettings(**payload))
    run_local(services, checkpoints, resume=resume)


def run_local(services: list[JobSettings], checkpoints: Path, *, resume: bool) -> None:
    """Run a job (pipelines or drift monitors) in a supervised local mini-cluster; blocks until it ends. The
    Flink log, the log4j configuration and the JVM's temporary files live beside ``checkpoints``."""
    from vatic.streaming.logconfig import file_log4j
    from vatic.streaming.main import latest_checkpoint
    from vatic.streaming.minicluster import run_supervised

    # the mini-cluster's log (task failures, restarts) goes next to the job's checkpoints, not into PyFlink's
    # install folder where every job on the machine would overwrite it
    logs = Path(os.environ.setdefault("FLINK_LOG_DIR", str(checkpoints.with_name(checkpoints.name + ".logs"))))
    logs.mkdir(parents=True, exist_ok=True)
    if "LOG4J_PROPERTIES" not in os.environ:  # PyFlink's launcher reads it; ours never logs worker environments
        log4j = logs / "log4j-vatic.properties"
        log4j.write_text(file_log4j(), encoding="utf-8")
        os.environ["LOG4J_PROPERTIES"] = str(log4j)
    typer.echo(f"flink log: {logs}", err=True)
    _private_jvm_tmp(checkpoints.with_name(checkpoints.name + ".tmp"))
    url = services[0].schema_registry_url
    typer.echo(f"schemas: {f'schema registry {url}' if url else f'embedded schema store {services[0].schema_store}'}",
               err=True)  # fmt: skip
    for one in services:
        what = "drift monitor" if one.job == "monitor" else f"model {one.model_url}"
        typer.echo(f"running {one.service_dir.name} ({what})", err=True)
    if services[0].metrics_port:
        _reporter_on_classpath()
        typer.echo(f"metrics: http://127.0.0.1:{services[0].metrics_port}/metrics (Prometheus)", err=True)
    code = run_supervised(
        services,
        lambda: latest_checkpoint(checkpoints),
        resume=resume,
        announce=lambda line: typer.echo(line, err=True),
    )
    if code != 0:
        raise typer.Exit(code)


def _private_jvm_tmp(folder: Path) -> None:
    """Point the mini-cluster JVM's temporary files (``java.io.tmpdir``: the table planner's extracted jar, about
    44 MB, the Python distribution, shuffle, blob and I/O folders) at ``folder``, emptied first.

    A JVM deletes these on a clean exit only; a killed one leaves them behind. Kept beside the job's checkpoints,
    what a killed run left is swept by the next run of the same job instead of piling up in the system's temp
    folder. A path with whitespace cannot travel in ``JVM_ARGS`` (PyFlink's launcher splits it on whitespace):
    then the JVM keeps its default."""
    if any(c.isspace() for c in str(folder.resolve())):
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["JVM_ARGS"] = f"{os.environ.get('JVM_ARGS', '')} -Djava.io.tmpdir={folder.resolve()}".strip()


def _reporter_on_classpath() -> None:
    """Put the pinned Prometheus reporter on the classpath of the job's mini-cluster (it ignores ``plugins/``):
    ``FLINK_LIB_DIR`` of the job process, which PyFlink's launcher reads when ``FLINK_HOME`` is set."""
    from vatic.cli.stack.flink import flink_home, mini_cluster_lib

    stack = StackSettings()
    reporter = Artifacts(stack.cache).require_prometheus_reporter()
    os.environ.setdefault("FLINK_HOME", str(flink_home()))
    os.environ["FLINK_LIB_DIR"] = str(mini_cluster_lib(stack, [reporter]))


FromSavepoint = Annotated[
    str | None,
    typer.Option(
        help="restore state and source offsets from this savepoint (or retained checkpoint): a path or file: URI",
        show_default=False,
    ),
]
Cluster = Annotated[
    bool,
    typer.Option(
        "--cluster", help="read and write the local stack's three-node Kafka cluster (`vatic stack up --cluster`)"
    ),
]
Partitions = Annotated[
    int | None,
    typer.Option(min=1, help="partitions of the topics created (default: the parallelism, at least 2)"),
]


@app.command()
def submit(
    service_dir: ServiceDir,
    env: Env = "local",
    model_url: ModelUrl = None,
    jobmanager: Annotated[
        str | None, typer.Option(help="REST address host:port of the JobManager (default: the local stack's, :8088)")
    ] = None,
    parallelism: Annotated[int | None, typer.Option(min=1, help="override streaming.parallelism")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint folder the cluster can write")] = None,
    bounded: Annotated[bool, typer.Option(help="stop at the input topic's end offsets")] = False,
    detached: Annotated[bool, typer.Option(help="return once the cluster accepted the job")] = False,
    create_topics: Annotated[bool, typer.Option(help="create the service's topics when missing")] = True,
    schema_registry_url: RegistryUrl = None,
    from_savepoint: FromSavepoint = None,
    cluster: Cluster = False,
    partitions: Partitions = None,
) -> None:
    """Submit the job to a standalone (session) Flink cluster with the distribution's `flink run --python`.

    Prints the JobID on stdout as soon as the cluster has accepted the job. With --detached it returns then;
    otherwise it waits until the job ends and exits non-zero unless the job FINISHED. Before submitting it checks
    that the JobManager answers and has a free slot per parallel subtask (a job short of slots would wait).
    The Python workers run with this interpreter (the pipeline environment); the Kafka connector jar travels with
    the job (``pipeline.jars``); the cluster needs PyFlink's flink-python jar in its lib/ (``vatic stack up flink``).
    --from-savepoint restores the job's state and source offsets from a savepoint (or retained checkpoint);
    --cluster reads and writes the local stack's three-node Kafka cluster (``vatic stack up --cluster``).
    """
    from vatic.cli.stack.flink import FlinkRest

    address = jobmanager or StackSettings().flink_jobmanager
    rest = FlinkRest(address)
    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: nothing to submit")
    wanted = parallelism or config.streaming.parallelism
    _check_slots(rest, wanted)
    settings = _cluster_settings(
        service_dir, env, model_url, bounded=bounded, parallelism=wanted, checkpoint_dir=checkpoint_dir,
        schema_registry_url=schema_registry_url, cluster=cluster,
    )  # fmt: skip
    if create_topics:
        _create_topics(service_dir, env, settings.bootstrap_servers, partitions)
    flink_submit(settings, address, wanted, detached=detached, label=config.service, from_savepoint=from_savepoint)


def _cluster_settings(
    service_dir: Path, env: str, model_url: str | None, *, bounded: bool, parallelism: int,
    checkpoint_dir: Path | None, schema_registry_url: str | None, cluster: bool,
) -> JobSettings:  # fmt: skip
    """The settings of a job for a Flink cluster; ``cluster``: on the local stack's Kafka cluster."""
    from vatic.streaming.settings import JobSettings

    return JobSettings(**_settings(
        service_dir, env, model_url, bounded=bounded, parallelism=parallelism, checkpoint_dir=checkpoint_dir,
        schema_registry_url=schema_registry_url, local=False, cluster=cluster,
    ))  # fmt: skip


def flink_submit(
    settings: JobSettings,
    address: str,
    parallelism: int,
    *,
    detached: bool,
    label: str,
    from_savepoint: str | None = None,
) -> str:
    """Submit the job of ``settings`` (pipeline or monitor) with the distribution's ``flink run`` to the cluster
    whose JobManager's REST address is ``address``: prints the JobID on stdout once accepted; unless ``detached``,
    waits for the end and exits non-zero unless the job FINISHED. ``from_savepoint``: ``flink run
    --fromSavepoint`` (state and source offsets restored; state no operator of the job claims is refused, never
    dropped). ``flink run``'s whole output goes to ``<home>/flink/client/submit-<label>.out``. Returns the JobID."""
    import pyflink

    from vatic.cli.stack.flink import FlinkRest, java_home
    from vatic.streaming import main as entry
    from vatic.streaming.settings import job_arguments

    stack = StackSettings()
    rest = FlinkRest(address)
    logs = stack.home / "flink" / "client"
    logs.mkdir(parents=True, exist_ok=True)
    argv = [
        str(Path(pyflink.__file__).parent / "bin" / "flink"), "run", "--jobmanager", address,
        "--python", str(Path(entry.__file__).resolve()),
        "--pyExecutable", sys.executable, "--pyClientExecutable", sys.executable,
        "--parallelism", str(parallelism),
    ]  # fmt: skip
    if detached:
        argv.append("--detached")
    if from_savepoint is not None:
        argv += ["--fromSavepoint", from_savepoint]
    argv += job_arguments([settings], local=False)  # the program's own arguments, as a person would type them
    child_env = {**os.environ, "JAVA_HOME": str(java_home(stack)), "FLINK_LOG_DIR": str(logs)}
    child_env.pop("PYFLINK_GATEWAY_DISABLED", None)  # set by an earlier local run in this process: we are a client
    transcript = logs / f"submit-{label}.out"  # the whole `flink run` output of the last submit

    def announce(job_id: str) -> None:
        typer.echo(job_id)
        typer.echo(f"submitted {label} to {rest.url} as job {job_id} (parallelism {parallelism})", err=True)

    code, job_id = _flink_run(argv, child_env, transcript, announce)
    if code != 0:
        raise ConfigError(f"flink run failed ({code}): {_flink_failure(transcript.read_text())} (output: {transcript})")
    if job_id is None:
        raise ConfigError(f"flink run printed no JobID (output: {transcript})")
    if not detached:
        state = rest.job(job_id).get("state")
        typer.echo(f"job {job_id} {state}", err=True)
        if state != "FINISHED":
            raise typer.Exit(1)
    return job_id


def _check_slots(rest: FlinkRest, wanted: int, wait_s: float = 0.0) -> None:
    """One line when the JobManager does not answer or has fewer free slots than the job's parallelism (after
    ``wait_s``: slots a job just gave back take a moment to show as free)."""
    deadline = time.monotonic() + wait_s
    overview = rest.overview()
    while int(overview.get("slots-available", 0)) < wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        overview = rest.overview()
    if int(overview.get("slots-available", 0)) < wanted:
        raise ConfigError(
            f"the Flink cluster at {rest.url} has {overview.get('slots-available')} free slot(s) of "
            f"{overview.get('slots-total')} ({overview.get('taskmanagers')} TaskManager(s)); the job needs {wanted} "
            "(its parallelism): cancel a job (vatic stream cancel), add slots or pass a lower --parallelism"
        )


def _flink_run(
    argv: list[str], env: dict[str, str], transcript: Path, announce: Callable[[str], None]
) -> tuple[int, str | None]:
    """Run ``flink run`` with its output copied to ``transcript``; ``announce`` the JobID as soon as it is
    printed. Returns (exit code, JobID or None). Ctrl-C stops waiting (the job keeps running) with exit 130."""
    job_id = None
    with transcript.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                found = _JOB_ID.search(line) if job_id is None else None
                if found:
                    job_id = found.group(1)
                    announce(job_id)
            return proc.wait(), job_id
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            if job_id is not None:
                typer.echo(f"stopped waiting; job {job_id} still runs: vatic stream cancel {job_id}", err=True)
            raise typer.Exit(130) from None


_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")

#: wrappers around the cause that `flink run` prints for a failed Python program
_WRAPPERS = ("ProgramAbortException", "Python process exits with code", "ProgramInvocationException")


def _flink_failure(output: str) -> str:
    """The most specific error line of `flink run`'s output: the innermost Java cause or the Python exception."""
    lines = [line.strip() for line in output.splitlines()]
    errors = [
        line.removeprefix("Caused by: ")
        for line in lines
        if re.match(r"^(Caused by: )?[\w.$]*(Error|Exception)\b", line) and not any(w in line for w in _WRAPPERS)
    ]
    if errors:
        return errors[-1][:400]
    meaningful = [line for line in lines if line and not line.startswith(("at ", "..."))]
    return meaningful[-1][:400] if meaningful else "no output"


JobManager = Annotated[
    str | None, typer.Option(help="REST address host:port of the JobManager (default: the local stack's, :8088)")
]


@app.command()
def jobs(
    jobmanager: JobManager = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="also finished, cancelled and failed jobs")] = False,
) -> None:
    """List the jobs of a Flink cluster (REST): job id, state, tasks, name."""
    from vatic.cli.stack.flink import FlinkRest

    rest = FlinkRest(jobmanager or StackSettings().flink_jobmanager)
    done = {"FINISHED", "CANCELED", "FAILED"}
    for job in sorted(rest.jobs(), key=lambda j: int(j.get("start-time", 0))):
        if all_jobs or job.get("state") not in done:
            tasks = job.get("tasks", {})
            typer.echo(
                f"{job.get('jid')}  {job.get('state'):<11} {tasks.get('total', '?'):>3} tasks  {job.get('name')}"
            )


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="the JobID `vatic stream submit` printed")],
    jobmanager: JobManager = None,
    wait_s: Annotated[float, typer.Option(min=0, help="wait this long for CANCELED (0: do not wait)")] = 60.0,
) -> None:
    """Cancel a job on a Flink cluster (REST ``PATCH /jobs/<id>?mode=cancel``); waits until it is CANCELED.
    Its retained checkpoints stay (RETAIN_ON_CANCELLATION)."""
    from vatic.cli.stack.flink import FlinkRest

    rest = FlinkRest(jobmanager or StackSettings().flink_jobmanager)
    rest.cancel(job_id)
    if wait_s > 0:
        state = rest.wait_job(job_id, {"CANCELED", "FAILED", "FINISHED"}, wait_s).get("state")
        typer.echo(f"job {job_id} {state}", err=True)
    else:
        typer.echo(f"job {job_id} cancelling", err=True)


SavepointDir = Annotated[
    str | None,
    typer.Option(
        "--dir",
        help="folder (path or URI) the cluster writes the savepoint to (default: the cluster's "
        "execution.checkpointing.savepoint-dir; the local stack's is .vatic/flink/savepoints)",
        show_default=False,
    ),
]


@app.command()
def savepoint(
    job_id: Annotated[str, typer.Argument(help="the JobID `vatic stream submit` printed")],
    jobmanager: JobManager = None,
    directory: SavepointDir = None,
    stop: Annotated[
        bool, typer.Option("--stop", help="stop the job with the savepoint (its sinks commit, nothing is replayed)")
    ] = False,
    timeout_s: Annotated[float, typer.Option(min=1, help="how long the savepoint may take")] = 300.0,
) -> None:
    """Take a savepoint of a running job (REST); prints its location on stdout. `vatic stream submit
    --from-savepoint LOCATION` starts a job from it."""
    from vatic.cli.stack.flink import FlinkRest

    rest = FlinkRest(jobmanager or StackSettings().flink_jobmanager)
    location = rest.savepoint(job_id, _uri(directory), stop=stop, timeout_s=timeout_s)
    typer.echo(location)
    typer.echo(f"savepoint of job {job_id}{' (job stopped)' if stop else ''}: {location}", err=True)


def _uri(directory: str | None) -> str | None:
    """A folder for the cluster: a URI as given, a path made absolute (``file:`` URI)."""
    if directory is None or "://" in directory or directory.startswith("file:"):
        return directory
    return Path(directory).resolve().as_uri()


def running_job(rest: FlinkRest, name: str) -> str:
    """The JobID of the one job named ``name`` that is not ended; one-line :class:`ConfigError` for none or several."""
    ended = {"FINISHED", "CANCELED", "FAILED"}
    found = [j for j in rest.jobs() if j.get("name") == name and j.get("state") not in ended]
    if not found:
        raise ConfigError(f"no running job named {name} on {rest.url}: submit it first (vatic stream submit)")
    if len(found) > 1:
        ids = ", ".join(str(j.get("jid")) for j in found)
        raise ConfigError(f"{len(found)} jobs named {name} run on {rest.url} ({ids}): pass --job <JobID>")
    return str(found[0]["jid"])


@app.command()
def upgrade(
    service_dir: ServiceDir,
    env: Env = "local",
    model_url: ModelUrl = None,
    jobmanager: JobManager = None,
    job: Annotated[
        str | None, typer.Option(help="JobID of the running job (default: the one named vatic-<service>)")
    ] = None,
    parallelism: Annotated[
        int | None, typer.Option(min=1, help="the new job's parallelism (default: streaming.parallelism)")
    ] = None,
    directory: SavepointDir = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint folder the cluster can write")] = None,
    schema_registry_url: RegistryUrl = None,
    cluster: Cluster = False,
    timeout_s: Annotated[float, typer.Option(min=1, help="how long the savepoint and the restart may take")] = 300.0,
) -> None:
    """Upgrade a running job to the service folder's current config and code: stop it with a savepoint, then
    submit the new job from that savepoint (same state, same source offsets: nothing lost, nothing twice),
    optionally at another parallelism. Prints the new JobID on stdout.

    The job's operator ids are stable across versions (named operators, the same SQL plan), so its state maps onto
    the new job; state the new job cannot claim makes the submit fail rather than being dropped. If the new job
    does not start, the savepoint stays: the message says how to start from it.
    """
    from vatic.cli.stack.flink import FlinkRest

    address = jobmanager or StackSettings().flink_jobmanager
    rest = FlinkRest(address)
    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section: nothing to upgrade")
    old = job or running_job(rest, f"vatic-{config.service}")
    wanted = parallelism or config.streaming.parallelism
    total = int(rest.overview().get("slots-total", 0))
    if wanted > total:
        raise ConfigError(
            f"the Flink cluster at {rest.url} has {total} slot(s); the new job needs {wanted} (its parallelism): "
            "add TaskManagers or pass a lower --parallelism (the running job was left alone)"
        )
    settings = _cluster_settings(
        service_dir, env, model_url, bounded=False, parallelism=wanted, checkpoint_dir=checkpoint_dir,
        schema_registry_url=schema_registry_url, cluster=cluster,
    )  # fmt: skip
    location = rest.savepoint(old, _uri(directory), stop=True, timeout_s=timeout_s)
    typer.echo(f"stopped job {old} with savepoint {location}", err=True)
    try:
        _check_slots(rest, wanted, wait_s=30)
        new = flink_submit(settings, address, wanted, detached=True, label=config.service, from_savepoint=location)
        restored = _wait_restored(rest, new, timeout_s)
    except (ConfigError, typer.Exit):
        typer.echo(
            f"the new job did not start; the state is safe in {location}: `vatic stream submit {service_dir} "
            f"--from-savepoint {location}` starts from it",
            err=True,
        )
        raise
    typer.echo(f"job {new} restored from {restored} at parallelism {wanted} (was job {old})", err=True)


def _wait_restored(rest: FlinkRest, job_id: str, timeout_s: float) -> str:
    """Wait until the job runs and has restored a savepoint; its path. One line when it fails or restarts."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = rest.job(job_id).get("state")
        if state in ("FAILED", "CANCELED", "FINISHED"):
            raise ConfigError(f"job {job_id} is {state} right after the upgrade: see the JobManager's log")
        restored = (rest.checkpoints(job_id).get("latest") or {}).get("restored") or {}
        if state == "RUNNING" and restored.get("external_path"):
            return str(restored["external_path"])
        if time.monotonic() > deadline:
            raise ConfigError(f"job {job_id} has not restored its savepoint after {timeout_s:.0f}s (state {state})")
        time.sleep(0.5)


@app.command()
def tail(
    service_dir: ServiceDir,
    env: Env = "local",
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="read the dead-letter topic")] = False,
    from_beginning: Annotated[bool, typer.Option(help="start at the earliest offset")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="stop after this many records")] = None,
    timeout_s: Annotated[float | None, typer.Option(help="stop after this long without records")] = None,
    schema_registry_url: RegistryUrl = None,
    dedupe: Annotated[
        bool,
        typer.Option(
            "--dedupe",
            help="print each output once: drop replays (at-least-once) by event id / source position "
            "(vatic.connectors.dedupe), within the last --dedupe-capacity records and --dedupe-window-s seconds",
        ),
    ] = False,
    dedupe_capacity: Annotated[int, typer.Option(min=1, help="identities remembered by --dedupe")] = 200_000,
    dedupe_window_s: Annotated[float, typer.Option(min=1, help="how long --dedupe remembers one")] = 600.0,
) -> None:
    """Print prediction (or dead-letter) records of a service as JSON lines, as they arrive (read_committed).

    With --dedupe, a record whose identity (``vatic-event-id`` for a prediction, ``vatic-source`` for a dead
    letter) was printed within the window is skipped, and the number skipped is said on stderr at the end.
    """
    from vatic.connectors.dedupe import SeenKeys, identity
    from vatic.connectors.kafka import Consumer
    from vatic.schemas import AvroCodec, load_schema, topic_subject

    config = load_service(service_dir, env)
    if config.streaming is None:
        raise ConfigError(f"service {config.service} has no streaming section")
    topic = config.streaming.dead_letter_topic if dead_letters else config.streaming.output_topic
    schema = "dead_letter" if dead_letters else "prediction"
    source, _ = open_source(schema_registry_url)
    codec = AvroCodec(source, topic_subject(topic), load_schema(schema))
    settings = tool_kafka()
    reset = "earliest" if from_beginning else "latest"
    consumer = Consumer([topic], f"vatic-tail-{uuid.uuid4().hex[:8]}", settings, config={"auto.offset.reset": reset})
    seen = 0
    recent = SeenKeys(dedupe_capacity, dedupe_window_s) if dedupe else None
    idle_since = time.monotonic()
    try:
        while limit is None or seen < limit:
            records = consumer.poll_batch(100, timeout=0.5)
            if not records:
                if timeout_s is not None and time.monotonic() - idle_since > timeout_s:
                    break
                continue
            idle_since = time.monotonic()
            for record in records:
                if recent is not None:
                    key = identity(record.headers, record.key)
                    if key is not None and not recent.first(key):
                        continue
                value = codec.decode(record.value or b"")
                typer.echo(json.dumps(value, default=_bytes_repr))
                seen += 1
                if limit is not None and seen >= limit:
                    break
    finally:
        consumer.close()
        if recent is not None:
            typer.echo(f"--dedupe: {recent.duplicates} duplicate(s) skipped", err=True)


def _bytes_repr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
