"""The synchronous door: a FastAPI gateway that enriches and predicts with the same core as the stream.

``POST /v1/services/{service}/predict`` takes the fields of the service's Kafka input event (entity keys and
raw fields) and answers with the same prediction event the stream would write; ``/v2/models/...`` passes V2
requests through to the model servers. See :mod:`vatic.serving.gateway.app`.
"""

from vatic.serving.gateway.app import create_app
from vatic.serving.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
