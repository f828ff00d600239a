"""Start, watch and stop one local server process by its PID file - and never anybody else's process.

Contract:

* :meth:`ManagedProcess.start` launches the command detached (its own session and process group), writes its
  output to ``<home>/<name>/<name>.log`` and records ``{pid, argv, token, started}`` in
  ``<home>/<name>/<name>.pid``. The child's environment carries ``VATIC_MANAGED_TOKEN=<token>``, a random value
  that survives ``exec`` (launch scripts such as Flink's ``jobmanager.sh`` exec into ``java``).
* A PID file alone proves nothing (PIDs are reused): a process counts as ours only while
  ``/proc/<pid>/environ`` holds the recorded token (or, for PID files without one, ``/proc/<pid>/cmdline``
  still equals the recorded argv). :meth:`stop` signals nothing else.
* :meth:`stop` sends SIGTERM to the process group, waits, then SIGKILLs it; the PID file goes last.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vatic.connectors import procfs
from vatic.schemas.errors import StartFailed


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: inherited variables that would tie a server's metrics to a folder owned by another process (Feast sets them)
_NOT_INHERITED = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def _child_environment(extra: dict[str, str] | None) -> dict[str, str]:
    """The parent's environment minus per-process settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(extra or {})
    return env


TOKEN_VARIABLE = "VATIC_MANAGED_TOKEN"  # noqa: S105 - a variable name, not a secret


def has_token(pid: int, token: str) -> bool:
    """True when ``pid``'s environment carries the ownership token ``token``."""
    return f"{TOKEN_VARIABLE}={token}".encode() in procfs.environ(pid)


def processes_with_token(token: str) -> list[int]:
    """Live (not zombie) processes whose environment carries the ownership token ``token``."""
    return [pid for pid in procfs.pids() if (s := procfs.stat(pid)) is not None and s.alive and has_token(pid, token)]


def kill_session(leader: int, token: str, timeout_s: float = 10.0) -> None:
    """SIGKILL what is left of the session ``leader`` created (a server started with ``start_new_session``), once
    the leader itself has exited.

    A PID cannot be reused while it is still a session id, so a process in session ``leader`` descends from our
    server; it must also carry the server's ownership token in its environment (inherited by every child). The
    signal goes through a pidfd opened before the check, so it reaches exactly the process that was checked.
    """
    stat = procfs.stat(leader)
    if stat is not None and stat.alive:
        return  # the leader still runs (stop could not end it): leave its session alone
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = [pid for pid in processes_with_token(token) if (s := procfs.stat(pid)) and s.session == leader]
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                fd = os.pidfd_open(pid)
                try:
                    s = procfs.stat(pid)
                    if s is not None and s.session == leader and has_token(pid, token):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                finally:
                    os.close(fd)
        time.sleep(0.05)


@dataclass
class ManagedProcess:
    """One supervised server process of the local stack."""

    name: str
    home: Path

    @property
    def dir(self) -> Path:
        return self.home / self.name

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    def recorded(self) -> dict[str, object] | None:
        """The PID file's content, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.pid_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def pid(self) -> int | None:
        """The PID of our running process, or None. Verifies the command line, not just the PID."""
        data = self.recorded()
        if data is None:
            return None
        pid, token = data.get("pid"), data.get("token")
        if not isinstance(pid, int) or (s := procfs.stat(pid)) is None or not s.alive:
            return None
        if isinstance(token, str) and token and has_token(pid, token):
            return pid
        # some servers rewrite their environ/argv area for a process title (redis-server): fall back to the
        # command line recorded at start or once the server was ready, or to our own child handle
        if procfs.cmdline(pid) in (data.get("argv"), data.get("cmdline")):
            return pid
        popen: subprocess.Popen[bytes] | None = getattr(self, "_popen", None)
        if popen is not None and popen.pid == pid and popen.poll() is None:
            return pid
        return None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Launch ``argv`` detached; returns its PID. Raises :class:`StartFailed` if it dies at once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        with self.log_file.open("ab") as log:
            log.write(f"\n--- vatic: starting {self.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.dir,
                env={**_child_environment(env), TOKEN_VARIABLE: token},
                start_new_session=True,
            )
        record = {"pid": proc.pid, "argv": list(argv), "token": token, "started": time.time()}
        self.pid_file.write_text(json.dumps(record), encoding="utf-8")
        self._popen = proc
        return proc.pid

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``probe`` until it returns True; raise :class:`StartFailed` if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StartFailed(f"{self.name} exited during start-up; last log lines: {self.log_tail()}")
            with contextlib.suppress(Exception):
                if probe():
                    self._record_cmdline()
                    return
            time.sleep(0.2)
        raise StartFailed(
            f"{self.name} was not ready after {timeout_s:.0f}s (log: {self.log_file}); "
            f"last log lines: {self.log_tail()}"
        )

    def _record_cmdline(self) -> None:
        """Remember the command line the ready server shows (after any process-title rewrite)."""
        data = self.recorded()
        pid = data.get("pid") if data is not None else None
        if data is None or not isinstance(pid, int):
            return
        data["cmdline"] = procfs.cmdline(pid)
        self.pid_file.write_text(json.dumps(data), encoding="utf-8")

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop our process (SIGTERM, then SIGKILL after ``timeout_s``). Returns True if one was running.

        Ownership is verified once, before the first signal; from then on we wait for that PID to be gone (a
        process that is exiting loses its command line before it disappears).
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout_s):
            self._signal(pid, signal.SIGKILL)
            self._wait_gone(pid, 30.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._reap()
            if (s := procfs.stat(pid)) is None or not s.alive:
                return True
            time.sleep(0.05)
        return False

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to our running process only (used by fault tests: SIGSTOP/SIGCONT/SIGKILL)."""
        pid = self.pid()
        if pid is None:
            raise StartFailed(f"{self.name} is not running")
        os.kill(pid, sig)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        # We started the process as the leader of its own group: signal the group so children go too.
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        popen: subprocess.Popen[bytes] | None = getattr(self, "_popen", None)
        if popen is not None:
            popen.poll()
