"""Every typed error vatic raises maps to a documented gateway answer: a DataError (the request's fault) to a 4xx,
an outage to 503/504, a configuration problem to 503 - never a 500 - with a body of the documented Problem form.

The classes are found, not listed: every subclass of ``VaticError`` defined by the modules the gateway runs, so a
new error class is checked the day it is added.
"""

from __future__ import annotations

import importlib
import json

import pytest
from jsonschema import Draft202012Validator

from vatic.schemas.errors import ConfigError, DataError, Retryable, VaticError
from vatic.serving.gateway.errors import from_exception
from vatic.serving.gateway.openapi import PROBLEM

MODULES = [
    "vatic.schemas.errors",
    "vatic.schemas.validate",
    "vatic.schemas.errors",
    "vatic.connectors.inference",
    "vatic.connectors.features",
    "vatic.connectors.kafka",
    "vatic.connectors.schema_registry",
    "vatic.connectors.registry",
    "vatic.serving.core.predictor",
    "vatic.serving.core.batcher",
    "vatic.serving.core.enrich",
    "vatic.serving.runtimes.repository",
]


def _all_errors() -> list[type[VaticError]]:
    for name in MODULES:
        importlib.import_module(name)
    found: list[type[VaticError]] = []
    todo: list[type[VaticError]] = [VaticError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted({c for c in found if c.__module__.startswith("vatic.")}, key=lambda c: c.__qualname__)


ERRORS = _all_errors()


def _instance(cls: type[VaticError]) -> VaticError:
    """An instance without calling the subclass's constructor (their keyword arguments differ)."""
    exc = cls.__new__(cls)
    VaticError.__init__(exc, f"{cls.__name__} happened")
    return exc


def test_the_error_classes_are_found() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"DecodeError", "InvalidRecord", "ModelRejected", "MissingFeatures", "DeadlineExceeded"} <= names
    assert len(ERRORS) >= 25


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_typed_error_has_a_documented_non_500_answer(cls: type[VaticError]) -> None:
    response = from_exception(_instance(cls))
    body = json.loads(response.body)
    Draft202012Validator(PROBLEM).validate(body)
    if issubclass(cls, DataError):
        assert 400 <= response.status_code < 500
        assert body["error"] == cls.__name__
    elif issubclass(cls, Retryable):
        assert response.status_code in (503, 504)
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
    elif issubclass(cls, ConfigError):
        assert response.status_code == 503
    else:
        assert cls is VaticError
    assert response.status_code != 500 or cls is VaticError
    assert "Traceback" not in response.body.decode()
