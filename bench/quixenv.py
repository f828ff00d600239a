"""The Quix Streams peer's own environment, built on demand under ``.cache/bench/quix`` (ignored).

quixstreams 3.28.1 needs ``confluent-kafka<2.13`` (and ``pydantic<2.14``) while the pipeline environment pins
confluent-kafka 2.16.1, so it cannot live there. The environment is a venv of the pipeline's interpreter with
quixstreams installed from PyPI by ``uv`` (the versions the pipeline environment has are kept as constraints,
except the ones quixstreams pins lower) and the pipeline's site-packages added last (a ``.pth`` file running
``site.addsitedir``, so the pipeline's own ``.pth`` files, vatic's editable install among them, work too):
vatic's runtime dependencies (Feast, fastavro, httpx, ...) come from there; the environment's own confluent-kafka
and pydantic shadow the pipeline's. No PyFlink is imported.

:func:`quix_python` returns the environment's interpreter, or raises :class:`QuixUnavailable` with the one-line
reason (no uv, no network, an import that fails); the comparison is then recorded as skipped, never failed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.common import PIPELINE_PY, ROOT, say

QUIX_VERSION = "3.28.1"
ENV = ROOT / ".cache" / "bench" / "quix"
#: pipeline packages quixstreams pins lower: left out of the constraints
_UNPINNED = ("confluent-kafka", "pydantic", "pydantic-core", "pydantic-settings")


class QuixUnavailable(RuntimeError):
    """The Quix environment cannot be built or imported here: the message is the one-line reason."""


def _uv() -> str | None:
    for candidate in (ROOT / ".cache" / "tools" / "bin" / "uv", PIPELINE_PY.parent / "uv"):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("uv")


def _run(argv: list[str], what: str, timeout_s: float = 600) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuixUnavailable(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise QuixUnavailable(f"{what} failed: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout


def _check(python: Path) -> None:
    code = "import quixstreams, vatic.streaming.batch; print(quixstreams.__version__)"
    version = _run([str(python), "-c", code], "importing quixstreams and vatic in the Quix environment").strip()
    if version != QUIX_VERSION:
        raise QuixUnavailable(f"the Quix environment has quixstreams {version}, not {QUIX_VERSION}")


def quix_python(env: Path = ENV) -> Path:
    """The Quix environment's interpreter, built first if missing (a minute with a warm uv cache)."""
    python = env / "bin" / "python"
    ready = env / ".ready"
    if ready.is_file() and ready.read_text().strip() == QUIX_VERSION and python.is_file():
        _check(python)
        return python
    uv = _uv()
    if uv is None:
        raise QuixUnavailable("uv not found (make setup installs it into .cache/tools): cannot build the Quix env")
    if not PIPELINE_PY.is_file():
        raise QuixUnavailable(f"pipeline environment missing ({PIPELINE_PY}): run `make setup`")
    say(f"building the Quix Streams environment ({env}, quixstreams {QUIX_VERSION} from PyPI)")
    shutil.rmtree(env, ignore_errors=True)
    _run([uv, "venv", "-q", "-p", str(PIPELINE_PY.resolve()), str(env)], "uv venv")
    frozen = _run([uv, "pip", "freeze", "--python", str(PIPELINE_PY)], "uv pip freeze (pipeline environment)")
    constraints = env / "constraints.txt"
    constraints.write_text(
        "\n".join(
            line
            for line in frozen.splitlines()
            if "==" in line and line.split("==")[0].strip().lower().replace("_", "-") not in (*_UNPINNED, "vatic")
        )
        + "\n"
    )
    install = [uv, "pip", "install", "-q", "--python", str(python), f"quixstreams=={QUIX_VERSION}"]
    try:
        _run([*install, "-c", str(constraints)], f"installing quixstreams {QUIX_VERSION}")
    except QuixUnavailable:  # the pipeline's versions do not resolve with quixstreams': its own choices
        _run(install, f"installing quixstreams {QUIX_VERSION}")
    site = _run([str(PIPELINE_PY), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "site")
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], "site")
    # addsitedir, not a bare path: the pipeline's own .pth files (vatic's editable install) are processed too
    line = f"import site; site.addsitedir({site.strip()!r})\n"
    Path(purelib.strip(), "zz-vatic-pipeline.pth").write_text(line)
    _check(python)
    ready.write_text(QUIX_VERSION + "\n")
    return python
