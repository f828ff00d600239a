"""Import Feast without its process-wide Prometheus side effect (see the package docstring)."""

from __future__ import annotations

import os

import prometheus_client  # noqa: F401 - fixes prometheus_client's single-process mode before Feast sets the env

_MULTIPROC = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
_before = {name: os.environ.get(name) for name in _MULTIPROC}

import feast.metrics  # noqa: E402, F401 - the import that sets the variables

for _name, _value in _before.items():
    if _value is None:
        os.environ.pop(_name, None)
