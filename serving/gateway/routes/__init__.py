"""The gateway's REST routers, thin: each reads the app's :class:`~vatic.serving.gateway.state.GatewayState`,
calls a transport-free core and translates its answer (errors: :mod:`vatic.serving.gateway.errors`; what each
route answers: :mod:`vatic.serving.gateway.openapi`).

* :mod:`.health` - liveness, readiness, metrics (always open);
* :mod:`.services` - what is served and the enriched predict, one documented operation per service;
* :mod:`.v2` - the Open Inference (V2) surface, passed through to the model servers.
"""

from __future__ import annotations

from fastapi import Request

from vatic.serving.gateway.state import GatewayState


def state_of(request: Request) -> GatewayState:
    """The state of the app serving ``request``."""
    state: GatewayState = request.app.state.gateway
    return state
