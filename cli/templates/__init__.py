"""Project templates of ``vatic init`` (copier): ``project/`` scaffolds a serving layer.

The template is package data; :func:`project_template` is its folder. Its Python files end in ``.jinja`` (they
are templates, not modules of this package).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LIBRARIES", "TIERS", "project_template"]

TIERS = ("no-code", "low-code", "full-custom")
LIBRARIES = ("sklearn", "xgboost", "lightgbm", "torch", "custom")


def project_template() -> Path:
    """The folder of the copier template of a serving layer project."""
    return Path(__file__).resolve().parent / "project"
