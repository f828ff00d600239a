"""The synchronous door: a FastAPI gateway that enriches and predicts with the same core as the stream.

``POST /v1/services/{service}/predict`` takes the fields of the service's Kafka input event (entity keys and
raw fields) and answers with the same prediction event the stream would write; ``/v2/models/...`` passes V2
requests through to the model servers. See :mod:`vatic.serving.gateway.app`.

Security: per-client credentials, authorization and rate limits on both doors (:mod:`.auth`); TLS and mTLS on
both doors (``VATIC_GATEWAY_TLS_*``, :class:`GatewaySettings`); model servers reached over ``https://`` are
verified with ``VATIC_GATEWAY_MODEL_CA_FILE``. Every model-server tier serves TLS given a certificate
(docs/decisions/0009-tls-on-model-servers.md).
"""

from vatic.serving.gateway.app import create_app
from vatic.serving.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
