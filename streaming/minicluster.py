"""The job on the embedded mini-cluster, supervised: what ``vatic stream run`` runs.

A Flink TaskManager that meets an error while it cleans up a failed task stops for good ("FATAL - exception
in exception handler"; the Kafka sink's writer rethrows, on close, a send failure recorded after the task had
already failed). On a cluster its process exits and Kubernetes or the operator starts a new one; the embedded
mini-cluster has one TaskManager and starts none, so the job would stay RUNNING with no slot to run in,
answering nothing, forever. This module gives the local job what a cluster gives a real one:

* :func:`watch_task_managers` (in the job's process): when the mini-cluster has lost every TaskManager while a
  job still runs, it says so in one line, kills the job's processes and exits with :data:`EXIT_CLUSTER_LOST`;
* :func:`run_supervised` (in ``vatic stream run``): runs the job in a child process and, when it exits with
  that code, starts it again from the newest retained checkpoint (exactly-once sinks abort what the lost run
  left open), after a back-off, at most ``max_restarts`` times in a row before it gives up loudly.

Any other exit of the job (success, a failure Flink gave up on, Ctrl-C) ends the supervisor with that code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vatic.connectors import procfs
from vatic.streaming.settings import JobSettings, job_arguments

#: exit code of a job process whose mini-cluster lost its TaskManager (EX_TEMPFAIL: run it again)
EXIT_CLUSTER_LOST = 75

_ACTIVE = frozenset({"CREATED", "INITIALIZING", "RUNNING", "RESTARTING"})


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def cluster_lost(port: int) -> bool | None:
    """True when a job is still active on the mini-cluster at ``port`` but no TaskManager is registered;
    None when the cluster does not answer (starting or stopping)."""
    try:
        jobs = _get(port, "/jobs/overview").get("jobs", [])
        managers = _get(port, "/taskmanagers").get("taskmanagers", [])
    except (OSError, ValueError):
        return None
    return any(job.get("state") in _ACTIVE for job in jobs) and not managers


def watch_task_managers(
    port: int, on_lost: Callable[[], None], *, interval_s: float = 1.0, confirmations: int = 3
) -> threading.Thread:
    """A daemon thread that calls ``on_lost`` once the cluster has been lost for ``confirmations`` checks in a
    row, after it had had a TaskManager (a cluster that is still starting is not lost)."""

    def watch() -> None:
        started, lost = False, 0
        while True:
            state = cluster_lost(port)
            if state is False:
                started, lost = True, 0
            elif state and started:
                lost += 1
                if lost >= confirmations:
                    on_lost()
                    return
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="vatic-taskmanager-watchdog", daemon=True)
    thread.start()
    return thread


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for child in procfs.pids():
        if (stat := procfs.stat(child)) is not None:
            children.setdefault(stat.parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def exit_cluster_lost() -> None:
    """Say why, kill this process's descendants (the Flink JVM, the Python workers) and exit with
    :data:`EXIT_CLUSTER_LOST`. Never returns."""
    print(
        "vatic: the local Flink cluster lost its TaskManager (a fatal error in the task's cleanup, see the Flink "
        "log); the job cannot run any more: exiting so that it restarts from its newest checkpoint",
        file=sys.stderr,
        flush=True,
    )
    for pid in reversed(descendants(os.getpid())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(EXIT_CLUSTER_LOST)


def job_command(services: list[JobSettings], resume_from: Path | None) -> list[str]:
    """The job process: ``python -m vatic.streaming.main --service-dir ...`` with this interpreter."""
    return [sys.executable, "-m", "vatic.streaming.main", *job_arguments(services, resume_from=resume_from, local=True)]


def run_supervised(
    services: list[JobSettings],
    latest_checkpoint: Callable[[], Path | None],
    *,
    resume: bool,
    max_restarts: int = 5,
    backoff_s: tuple[float, float] = (1.0, 10.0),
    healthy_after_s: float = 120.0,
    announce: Callable[[str], None] | None = None,
    command: Callable[[list[JobSettings], Path | None], list[str]] = job_command,
) -> int:
    """Run the job process (``command(services, resume_from)``, :func:`job_command` by default) until it exits
    for another reason than a lost cluster; return its exit code. Each start resumes from
    ``latest_checkpoint()`` (the first one only if ``resume``).

    Restarts back off from ``backoff_s[0]``, doubling up to ``backoff_s[1]``; a run that lasted
    ``healthy_after_s`` resets the count and the back-off. After ``max_restarts`` restarts in a row the
    supervisor gives up and returns :data:`EXIT_CLUSTER_LOST`.
    """
    say = announce or (lambda line: print(line, file=sys.stderr, flush=True))
    restarts, backoff = 0, backoff_s[0]
    first = True
    while True:
        checkpoint = latest_checkpoint() if (resume or not first) else None
        if checkpoint is not None:
            say(f"resuming from {checkpoint}")
        started = time.monotonic()
        code = _run_child(command(services, checkpoint))
        first = False
        if code != EXIT_CLUSTER_LOST:
            return code
        if time.monotonic() - started >= healthy_after_s:
            restarts, backoff = 0, backoff_s[0]
        restarts += 1
        if restarts > max_restarts:
            say(f"vatic: the local Flink cluster was lost {restarts} times in a row; giving up (see the Flink log)")
            return EXIT_CLUSTER_LOST
        say(f"vatic: restarting the job in {backoff:.0f} s (restart {restarts} of at most {max_restarts} in a row)")
        time.sleep(backoff)
        backoff = min(backoff_s[1], backoff * 2)


def _run_child(argv: list[str]) -> int:
    """Run the job process in this process group, so that a signal to the group (Ctrl-C in a terminal, a
    ``kill`` of the group) reaches it directly; forward a SIGTERM sent to this process alone. Returns its exit
    code (128 + the signal's number when a signal ended it)."""
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward), signal.SIGINT: signal.getsignal(signal.SIGINT)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child got it from the terminal and stops on its own
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    return 128 - code if code < 0 else code
