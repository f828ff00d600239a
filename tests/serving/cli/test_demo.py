"""`vatic demo` against the real broker: every event comes back or is dead-lettered, none is lost."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"


def test_demo_round_trips_both_use_cases(kafka_bootstrap):
    done = subprocess.run([VATIC, "demo", "--events", "250", "--bad", "2"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"demo: 502 events in, 500 round-tripped, 2 dead-lettered, 0 lost", last), last
    assert done.stdout.count("dead-letter: stage=decode DecodeError") == 2
