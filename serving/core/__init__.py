"""The transport-free core shared by the streaming job and the REST gateway.

enrich (Feast) -> build V2 request -> call the model -> prediction events; per-event failures as data.
No PyFlink, FastAPI, confluent_kafka or MLServer imports here (tests/test_packaging.py checks).
"""

from vatic.serving.core.predictor import BatchResult, Failure, FeatureReader, Predictor
from vatic.serving.core.records import SourceRecord, dead_letter
from vatic.serving.core.retry import RetryPolicy

__all__ = ["BatchResult", "Failure", "FeatureReader", "Predictor", "RetryPolicy", "SourceRecord", "dead_letter"]
