"""A standalone Flink session cluster on loopback: a JobManager and two TaskManagers (``flink_task_slots`` slots
each) from the Flink distribution that PyFlink ships (``site-packages/pyflink``), for jobs submitted with ``vatic
stream submit``.

Optional components of the local stack (JVM process sizes 1 GB + 2 x 1.5 GB, more with a job's Python workers):
``vatic stack up flink`` (or ``flink-jobmanager flink-taskmanager flink-taskmanager-2``) starts them, ``vatic stack
up --cluster`` too, ``vatic stack up`` alone does
not. ``vatic stack down`` stops them with the rest.

Contract:

* Each process is the distribution's own launch script in foreground mode (``bin/jobmanager.sh
  start-foreground``, ``bin/taskmanager.sh start-foreground``); the scripts compute the JVM memory options and
  ``exec`` into ``java``, so the PID (and the ownership token in its environment) is the JVM's. Nothing is
  written into the distribution: each component gets, under ``<home>/<component>/``,

  - ``conf/`` (``FLINK_CONF_DIR``): our ``config.yaml`` (written at every start from :class:`StackSettings`) and
    a console-only ``log4j-console.properties``, so that the whole log is ``<home>/<component>/<component>.log``;
  - ``lib/`` (``FLINK_LIB_DIR``): links to the distribution's ``lib/*.jar`` plus ``opt/flink-python-*.jar``.
    PyFlink's operators (``ExternalPythonProcessOperator``...) live in that jar, which the distribution keeps
    in ``opt/``; ``flink run --python`` puts it on the client's classpath only, so the cluster must have it.
    The Kafka connector is *not* added: each job ships it (``pipeline.jars``), and a second copy in ``lib/``
    would load its classes twice (child-first user class loader);
  - ``tmp/`` (``io.tmp.dirs``: blobs, Python worker folders).

* ``config.yaml``: every address is ``StackSettings.host`` (loopback); REST on ``flink_rest_port`` (8088), RPC on
  ``flink_jobmanager_rpc_port`` (6123) and ``flink_taskmanager_rpc_port`` (6122); data port, blob server and
  metrics query service on ephemeral ports; ``flink_task_slots`` (2) slots; process sizes
  ``flink_jobmanager_memory`` / ``flink_taskmanager_memory``; ``python.executable`` = this interpreter (the
  pipeline environment, where vatic and PyFlink are installed), so Python UDF workers import vatic; default
  checkpoint and savepoint folders ``<home>/flink/checkpoints`` and ``<home>/flink/savepoints``; ``env.java.home``
  from ``StackSettings.java``; the JVM options the distribution's own config carries (Java 17 ``--add-opens``).
* Metrics: each process serves Flink's Prometheus reporter (``/metrics``; the distribution's
  ``plugins/metrics-prometheus``) on its own port, ``flink_jobmanager_metrics_port`` (9250) and
  ``flink_taskmanager_metrics_port`` (9251; the TaskManager's endpoint carries the job's own metrics,
  :mod:`vatic.streaming.metrics`); 0 turns an endpoint off.
* Ready: the JobManager answers ``GET /overview`` on its REST port; the TaskManager is ready when the JobManager
  lists it (``GET /taskmanagers``, by its resource id ``vatic-<component>``) with all its slots. Starting the
  TaskManager without a JobManager answering is one :class:`StartFailed` line, as are a taken port
  (:class:`PortInUse`, naming the ``VATIC_STACK_*`` variable that moves it) and a missing ``java``
  (:class:`MissingDependency`).
* :meth:`stop` signals the process group (the JVM and the Python workers it launched), waits, SIGKILLs what
  remains; then any process still in the session we created that carries our token (a Python worker that
  outlived its JVM) is SIGKILLed through a pidfd. :func:`processes_with_token` of the component's
  :meth:`~_FlinkProcess.token` (read before stopping) is empty after :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from vatic.cli.stack.components import Component, _java
from vatic.cli.stack.process import kill_session, port_is_free
from vatic.cli.stack.settings import StackSettings
from vatic.schemas.errors import ConfigError, MissingDependency, PortInUse, StartFailed
from vatic.streaming.logconfig import logger_lines
from vatic.streaming.metrics import prometheus_reporter

__all__ = [
    "FLINK",
    "FlinkJobManager",
    "FlinkRest",
    "FlinkTaskManager",
    "FlinkTaskManager2",
    "flink_home",
    "java_home",
    "mini_cluster_lib",
]

#: what a REST call may take before the cluster counts as not answering
_REST_TIMEOUT_S = 5.0

#: console-only logging: the component's log file is the whole log (the distribution also writes a rolling file)
_LOG4J = (
    """\
# written by vatic (cli/stack/flink.py): console only, captured in <home>/<component>/<component>.log
monitorInterval = 30
rootLogger.level = ${env:ROOT_LOG_LEVEL:-INFO}
rootLogger.appenderRef.console.ref = ConsoleAppender
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
appender.console.name = ConsoleAppender
appender.console.type = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
"""
    + "\n".join(logger_lines())
    + "\n"
)


def flink_home() -> Path:
    """The Flink distribution inside the installed ``pyflink`` package; :class:`MissingDependency` when absent."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        raise MissingDependency(
            f"PyFlink is not installed in this environment ({sys.executable}): run `make setup` and use the "
            "pipeline environment (.venv/pipeline)"
        )
    home = Path(spec.origin).resolve().parent
    missing = [p for p in ("bin/jobmanager.sh", "bin/taskmanager.sh", "opt") if not (home / p).exists()]
    if missing or not list((home / "lib").glob("flink-dist-*.jar")):
        raise MissingDependency(f"the Flink distribution in {home} is incomplete ({', '.join(missing) or 'lib'})")
    return home


def java_home(settings: StackSettings) -> Path:
    """JAVA_HOME of ``StackSettings.java`` (symlinks resolved); :class:`MissingDependency` when java is absent."""
    return Path(os.path.realpath(_java(settings))).parent.parent


def _distribution_java_opts(home: Path) -> str:
    """``env.java.opts.all`` of the distribution's own config (the ``--add-opens`` Flink needs on Java 17)."""
    try:
        loaded = yaml.safe_load((home / "conf" / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    node: Any = loaded
    for key in ("env", "java", "opts", "all"):
        node = node.get(key) if isinstance(node, dict) else None
    if node is None:
        node = loaded.get("env.java.opts.all", "") if isinstance(loaded, dict) else ""
    return str(node or "")


def _variable(field: str) -> str:
    """The environment variable of a :class:`StackSettings` field."""
    return f"VATIC_STACK_{field.upper()}"


def mini_cluster_lib(settings: StackSettings, jars: list[Path]) -> Path:
    """A ``FLINK_LIB_DIR`` for the local job's mini-cluster: links to the distribution's ``lib/*.jar`` plus
    ``jars`` (the metrics reporter: a mini-cluster loads reporters from its classpath, never from ``plugins/``).

    Shared by every local job of the stack's home and safe to build while another job starts: links are added or
    replaced one by one, never the folder at once."""
    folder = settings.home / "flink" / "mini-cluster-lib"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {jar.name: jar.resolve() for jar in [*sorted((flink_home() / "lib").glob("*.jar")), *jars]}
    for entry in folder.iterdir():
        if entry.name not in wanted or not entry.is_symlink() or entry.resolve() != wanted[entry.name]:
            entry.unlink(missing_ok=True)
    for name, jar in wanted.items():
        link = folder / name
        if not link.is_symlink():
            with contextlib.suppress(FileExistsError):  # another job made the same link meanwhile
                link.symlink_to(jar)
    return folder


class FlinkRest:
    """The few calls of Flink's REST API vatic needs (overview, task managers, jobs, cancel, savepoints).

    ``address`` is ``host:port`` or a URL. Every method raises :class:`ConfigError` with one line when the
    JobManager does not answer or answers an error.
    """

    def __init__(self, address: str, timeout_s: float = _REST_TIMEOUT_S) -> None:
        self.url = (address if "://" in address else f"http://{address}").rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = httpx.request(method, f"{self.url}{path}", json=body, timeout=self.timeout_s, trust_env=False)
        except httpx.HTTPError as exc:
            raise ConfigError(f"no Flink JobManager answers at {self.url} ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 400:
            errors = _errors(response)
            raise ConfigError(f"Flink REST {method} {path}: HTTP {response.status_code} {errors}".strip())
        return response.json() if response.content else None

    def overview(self) -> dict[str, Any]:
        """``GET /overview``: task managers, slots (total, available), jobs by state, Flink version."""
        return dict(self._call("GET", "/overview"))

    def taskmanagers(self) -> list[dict[str, Any]]:
        """``GET /taskmanagers``: id, slotsNumber, freeSlots... of every registered TaskManager."""
        return list(self._call("GET", "/taskmanagers").get("taskmanagers", []))

    def jobs(self) -> list[dict[str, Any]]:
        """``GET /jobs/overview``: jid, name, state, start-time, tasks... of every job the cluster knows."""
        return list(self._call("GET", "/jobs/overview").get("jobs", []))

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/<id>``: state and vertices (name, parallelism, status) of one job."""
        return dict(self._call("GET", f"/jobs/{_job_id(job_id)}"))

    def exceptions(self, job_id: str) -> list[dict[str, Any]]:
        """``GET /jobs/<id>/exceptions``: the failures the job restarted from (empty for a healthy job)."""
        history = self._call("GET", f"/jobs/{_job_id(job_id)}/exceptions").get("exceptionHistory", {})
        return list(history.get("entries", []))

    def cancel(self, job_id: str) -> None:
        """``PATCH /jobs/<id>?mode=cancel``: ask the cluster to cancel a job (it answers 202 at once)."""
        self._call("PATCH", f"/jobs/{_job_id(job_id)}?mode=cancel")

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/<id>/checkpoints``: counts, the latest completed checkpoint and what the job restored from
        (``latest.restored.external_path``, ``is_savepoint``)."""
        return dict(self._call("GET", f"/jobs/{_job_id(job_id)}/checkpoints"))

    def savepoint(self, job_id: str, directory: str | None, *, stop: bool, timeout_s: float) -> str:
        """Take a savepoint of a running job and return its location (a ``file:`` URI on a local cluster).

        ``stop``: stop-with-savepoint (``POST /jobs/<id>/stop``: the sources stop, a last savepoint is taken and
        the job ends FINISHED, its sinks' transactions committed); else ``POST /jobs/<id>/savepoints`` and the job
        runs on. ``directory`` None: the cluster's ``execution.checkpointing.savepoint-dir``. Polls the operation
        until it completes; one-line :class:`ConfigError` when it fails or ``timeout_s`` passes.
        """
        jid = _job_id(job_id)
        body: dict[str, Any] = {"drain": False} if stop else {"cancel-job": False}
        if directory is not None:
            body["targetDirectory" if stop else "target-directory"] = directory
        trigger = self._call("POST", f"/jobs/{jid}/stop" if stop else f"/jobs/{jid}/savepoints", body)["request-id"]
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._call("GET", f"/jobs/{jid}/savepoints/{trigger}")
            if answer.get("status", {}).get("id") == "COMPLETED":
                operation = answer.get("operation") or {}
                if "location" in operation:
                    return str(operation["location"])
                cause = operation.get("failure-cause") or {}
                lines = str(cause.get("stack-trace") or cause.get("class") or "unknown cause").strip().splitlines()
                raise ConfigError(f"the savepoint of job {jid} failed: {lines[0][:300] if lines else cause}")
            if time.monotonic() > deadline:
                raise ConfigError(f"the savepoint of job {jid} is not done after {timeout_s:.0f}s (trigger {trigger})")
            time.sleep(0.2)

    def wait_job(self, job_id: str, states: set[str], timeout_s: float) -> dict[str, Any]:
        """Poll the job until its state is one of ``states``; :class:`ConfigError` when time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            detail = self.job(job_id)
            if detail.get("state") in states:
                return detail
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"job {job_id} is {detail.get('state')} after {timeout_s:.0f}s, not {' or '.join(sorted(states))}"
                )
            time.sleep(0.2)


def _job_id(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise ConfigError(f"{job_id!r} is not a Flink job id (32 hex digits)")
    return job_id


def _errors(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        return " ".join(response.text.split())[:200]
    # the first error's first line, without the Java exception class (the rest is the server's stack trace)
    first = str(errors[0]).strip().splitlines()[0] if errors and str(errors[0]).strip() else ""
    return re.sub(r"^[\w.$]+(Exception|Error): ", "", first)[:300]


class _FlinkProcess(Component):
    """A Flink JVM started by the distribution's launch script in foreground mode."""

    script: str  # bin/<script> start-foreground
    #: (port, name of the setting that moves it) for every port the process binds
    _port_settings: tuple[tuple[str, str], ...]
    #: the setting of the process's Prometheus endpoint (0: none)
    _metrics_port_setting: str

    @property
    def metrics_port(self) -> int:
        return int(getattr(self.settings, self._metrics_port_setting))

    @property
    def ports(self) -> list[int]:
        ports = [int(getattr(self.settings, field)) for field, _ in self._port_settings]
        return [*ports, self.metrics_port] if self.metrics_port else ports

    @property
    def rest(self) -> FlinkRest:
        """The REST API of the cluster's JobManager."""
        return FlinkRest(f"{self.settings.host}:{self.settings.flink_rest_port}")

    @property
    def conf_dir(self) -> Path:
        return self.process.dir / "conf"

    @property
    def lib_dir(self) -> Path:
        return self.process.dir / "lib"

    @property
    def tmp_dir(self) -> Path:
        return self.process.dir / "tmp"

    @property
    def resource_id(self) -> str:
        return f"vatic-{self.name}"

    def argv(self) -> list[str]:
        _java(self.settings)  # one line when java is missing, before anything starts
        return ["bash", str(flink_home() / "bin" / self.script), "start-foreground"]

    def env(self) -> dict[str, str]:
        return {
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LIB_DIR": str(self.lib_dir),
            "FLINK_LOG_DIR": str(self.process.dir),
            "FLINK_PID_DIR": str(self.process.dir),
            "FLINK_IDENT_STRING": "vatic",
            "JAVA_HOME": str(java_home(self.settings)),
            "_FLINK_HOME_DETERMINED": "",  # an inherited value would point the scripts at another distribution
        }

    def flink_config(self) -> dict[str, Any]:
        """The flat ``config.yaml`` keys both processes share (the JobManager's address is in both)."""
        s = self.settings
        home = flink_home()
        flink_dir = s.home / "flink"
        return {
            "env.java.home": str(java_home(s)),
            "env.java.opts.all": _distribution_java_opts(home),
            "jobmanager.bind-host": s.host,
            "jobmanager.rpc.address": s.host,
            "jobmanager.rpc.port": s.flink_jobmanager_rpc_port,
            "jobmanager.memory.process.size": s.flink_jobmanager_memory,
            "jobmanager.execution.failover-strategy": "region",
            "taskmanager.bind-host": s.host,
            "taskmanager.host": s.host,
            "taskmanager.rpc.port": s.flink_taskmanager_rpc_port,
            "taskmanager.resource-id": f"vatic-{FlinkTaskManager.name}",
            "taskmanager.numberOfTaskSlots": s.flink_task_slots,
            "taskmanager.memory.process.size": s.flink_taskmanager_memory,
            "parallelism.default": s.flink_task_slots,
            "rest.address": s.host,
            "rest.bind-address": s.host,
            "rest.port": s.flink_rest_port,
            "io.tmp.dirs": str(self.tmp_dir),
            "web.tmpdir": str(self.tmp_dir / "web"),
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            "execution.checkpointing.dir": (flink_dir / "checkpoints").resolve().as_uri(),
            "execution.checkpointing.savepoint-dir": (flink_dir / "savepoints").resolve().as_uri(),
            **(prometheus_reporter(self.metrics_port) if self.metrics_port else {}),
        }

    def prepare(self) -> None:
        home = flink_home()
        for folder in (self.conf_dir, self.lib_dir, self.tmp_dir, self.settings.home / "flink"):
            folder.mkdir(parents=True, exist_ok=True)
        header = "# written by vatic (cli/stack/flink.py) from VATIC_STACK_* settings at each start\n"
        body = yaml.safe_dump(self.flink_config(), sort_keys=False, default_flow_style=False, width=1 << 16)
        (self.conf_dir / "config.yaml").write_text(header + body, encoding="utf-8")
        (self.conf_dir / "log4j-console.properties").write_text(_LOG4J, encoding="utf-8")
        for entry in self.lib_dir.iterdir():
            if not entry.is_symlink():
                raise ConfigError(f"{self.name}: {entry} is not one of vatic's links; remove it")
            entry.unlink()
        python_jars = sorted((home / "opt").glob("flink-python-*.jar"))
        if not python_jars:
            raise MissingDependency(f"flink-python jar not found in {home / 'opt'}: reinstall apache-flink")
        for jar in [*sorted((home / "lib").glob("*.jar")), python_jars[-1]]:
            (self.lib_dir / jar.name).symlink_to(jar)
        # blobs and Python worker folders of an earlier run
        for entry in self.tmp_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def start(self) -> bool:
        """Start unless running and wait until ready; True if this call started it. One-line errors."""
        if self.process.pid() is None:
            settings = [*self._port_settings, (self._metrics_port_setting, _variable(self._metrics_port_setting))]
            for (field, variable), port in zip(settings, self.ports, strict=False):
                if not port_is_free(self.settings.host, port):
                    raise PortInUse(
                        f"{self.name}: port {port} on {self.settings.host} ({field}) is taken by another process; "
                        f"stop it or move vatic's {self.name} with {variable}=<free port>"
                    )
        return super().start()

    def stop(self) -> bool:
        """Stop the JVM and every process it launched (Python workers); True when it was running."""
        recorded = self.process.recorded() or {}
        leader, token = recorded.get("pid"), recorded.get("token")
        stopped = self.process.stop()
        if isinstance(leader, int) and isinstance(token, str) and token:
            kill_session(leader, token)
        return stopped

    def token(self) -> str | None:
        """The ownership token of the running process (every process it launches inherits it), or None."""
        token = (self.process.recorded() or {}).get("token")
        return token if isinstance(token, str) and token else None


class FlinkJobManager(_FlinkProcess):
    """The standalone session cluster's JobManager (``StandaloneSessionClusterEntrypoint``): REST + RPC."""

    name = "flink-jobmanager"
    script = "jobmanager.sh"
    _port_settings = (
        ("flink_rest_port", "VATIC_STACK_FLINK_REST_PORT"),
        ("flink_jobmanager_rpc_port", "VATIC_STACK_FLINK_JOBMANAGER_RPC_PORT"),
    )
    _metrics_port_setting = "flink_jobmanager_metrics_port"

    def ready(self) -> bool:
        return "flink-version" in self.rest.overview()

    def describe(self) -> str:
        try:
            o = self.rest.overview()
        except ConfigError:
            return f"Flink JobManager http://{self.settings.host}:{self.settings.flink_rest_port}"
        return (
            f"Flink {o.get('flink-version')} JobManager {self.rest.url}: {o.get('taskmanagers')} TaskManager(s), "
            f"{o.get('slots-available')}/{o.get('slots-total')} slots free, {o.get('jobs-running')} job(s) running"
        )


class FlinkTaskManager(_FlinkProcess):
    """The cluster's first TaskManager (``TaskManagerRunner``) with ``flink_task_slots`` slots; needs the
    JobManager."""

    name = "flink-taskmanager"
    script = "taskmanager.sh"
    _port_settings = (("flink_taskmanager_rpc_port", "VATIC_STACK_FLINK_TASKMANAGER_RPC_PORT"),)
    _metrics_port_setting = "flink_taskmanager_metrics_port"

    def flink_config(self) -> dict[str, Any]:
        """The shared keys with this TaskManager's own RPC port and resource id."""
        return {
            **super().flink_config(),
            "taskmanager.rpc.port": self.ports[0],
            "taskmanager.resource-id": self.resource_id,
        }

    def start(self) -> bool:
        if self.process.pid() is None:
            try:
                self.rest.overview()
            except ConfigError:
                raise StartFailed(
                    f"{self.name}: no Flink JobManager answers at {self.rest.url}; start it first "
                    "(`vatic stack up flink` starts both)"
                ) from None
        return super().start()

    def registered(self) -> dict[str, Any] | None:
        """This TaskManager as the JobManager lists it, or None."""
        return next((tm for tm in self.rest.taskmanagers() if tm.get("id") == self.resource_id), None)

    def ready(self) -> bool:
        me = self.registered()
        return me is not None and me.get("slotsNumber") == self.settings.flink_task_slots

    def describe(self) -> str:
        try:
            me = self.registered()
        except ConfigError:
            me = None
        if me is None:
            return f"Flink TaskManager (not registered at {self.rest.url})"
        return f"Flink TaskManager {me.get('freeSlots')}/{me.get('slotsNumber')} slots free, JobManager {self.rest.url}"


class FlinkTaskManager2(FlinkTaskManager):
    """The cluster's second TaskManager: the same as the first on its own RPC and metrics ports, so that a job
    spreads over two processes (a TaskManager lost takes half the slots, not all)."""

    name = "flink-taskmanager-2"
    _port_settings = (("flink_taskmanager2_rpc_port", "VATIC_STACK_FLINK_TASKMANAGER2_RPC_PORT"),)
    _metrics_port_setting = "flink_taskmanager2_metrics_port"


#: the cluster's components in start order (optional stack components: not started by a plain `vatic stack up`):
#: one JobManager and two TaskManagers of ``flink_task_slots`` slots each
FLINK: dict[str, type[Component]] = {
    FlinkJobManager.name: FlinkJobManager,
    FlinkTaskManager.name: FlinkTaskManager,
    FlinkTaskManager2.name: FlinkTaskManager2,
}


# --- the session sweep ------------------------------------------------------------------------------------
