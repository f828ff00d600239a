"""The Linux process table (``/proc``), read by the local stack's supervisor and the job's mini-cluster watchdog.

Every reader returns None (or an empty answer) for a process that is gone: a PID can exit between two reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcStat", "cmdline", "environ", "pids", "stat"]

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` vatic uses."""

    state: str  # R, S, D, Z (zombie), ...
    parent: int
    group: int
    session: int

    @property
    def alive(self) -> bool:
        """Running or sleeping, not a zombie waiting to be reaped."""
        return self.state != "Z"


def stat(pid: int) -> ProcStat | None:
    """State, parent, process group and session of ``pid``; None when it is gone."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        return ProcStat(fields[0], int(fields[1]), int(fields[2]), int(fields[3]))
    except (OSError, IndexError, ValueError):
        return None


def pids() -> list[int]:
    """Every PID in the table now."""
    return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]


def environ(pid: int) -> list[bytes]:
    """``NAME=value`` entries of ``pid``'s environment (empty when gone or not ours to read)."""
    try:
        return (_PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid``; None when it is gone (or a kernel thread)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part] or None
