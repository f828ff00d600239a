"""Feast definitions of the fraud_detection use case, for the ``feast`` CLI run in this folder.

The objects are those :func:`vatic.examples.feast_repo.definitions` builds (what ``prepare`` applies),
over the Parquet files under ``$VATIC_STACK_HOME/usecases/fraud_detection/data``.
"""

from vatic.examples.feast_repo import definitions
from vatic.examples.layout import case_home

for _object in definitions("fraud_detection", case_home("fraud_detection") / "data"):
    globals()[_object.name] = _object
del _object
