"""`vatic demo` on the real local stack: both use cases through the streaming job and the gateway; the last
line accounts for every event (in = predictions + dead-lettered, none lost). The drift act runs with 1 s windows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

VATIC = Path(__file__).resolve().parents[3] / ".venv" / "pipeline" / "bin" / "vatic"


def test_demo_accounts_for_every_event(full_stack):
    done = subprocess.run(
        [VATIC, "demo", "--events", "900", "--rate", "150", "--drift-window-s", "1"],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"demo: (\d+) events in, (\d+) predictions, (\d+) dead-lettered, 0 lost", last)
    assert match, last
    events_in, predictions, dead = (int(g) for g in match.groups())
    assert events_in == 2 * 900 + 6  # 900 per use case + 3 bad records each
    assert predictions + dead == events_in
    assert dead >= 6  # at least the deliberately bad records
    # the rollout act: a new fraud model version registered, staged and switched to while the stream runs
    switched = re.search(r"rollout fraud-detection: stage production moved from v(\d+) to v(\d+)", done.stdout)
    assert switched, done.stdout[-3000:]
    before, after = switched.groups()
    assert f"switched to v{after} in" in done.stdout
    answered = re.search(r"rollout fraud-detection: predictions (.*), one job throughout", done.stdout)
    assert answered, done.stdout[-3000:]
    assert f"by v{before}" in answered.group(1)
    assert f"by v{after}" in answered.group(1)
    assert "REST fraud-detection: 200" in done.stdout
    assert "REST product-categorization: 200" in done.stdout
    # the drift act: the monitor flags the shifted amounts, the retrained version is gated, and promoted if it passed
    flagged = re.search(
        r"drift fraud-detection: amount flagged in (\d+) of (\d+) window\(s\) after the shift", done.stdout
    )
    assert flagged, done.stdout[-3000:]
    assert int(flagged.group(1)) == int(flagged.group(2)) >= 1
    registered = re.search(r"retrain fraud-detection: registered fraud-detector v(\d+) from", done.stdout)
    assert registered, done.stdout[-3000:]
    judged = r"retrain fraud-detection: gate: roc_auc ([\d.]+) vs ([\d.]+) of serving v\d+ .*: (passed|refused)"
    gate = re.search(judged, done.stdout)
    assert gate, done.stdout[-3000:]
    new, serving, verdict = float(gate.group(1)), float(gate.group(2)), gate.group(3)
    assert (verdict == "passed") == (new >= serving - 0.01)
    if verdict == "passed":
        assert f"the model server switched to version {registered.group(1)} in" in done.stdout
    # one source of schema ids: the stack's registry; librdkafka's own lines stay out of the output
    assert "schemas: schema registry http://127.0.0.1:" in done.stdout
    assert not [line for line in (done.stdout + done.stderr).splitlines() if re.match(r"%\d\|", line)]
