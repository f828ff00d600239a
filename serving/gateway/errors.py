"""One place that maps vatic's error taxonomy to HTTP answers: a JSON body, never a stack trace.

=========================================  ======  ==========================================
error                                      status  body ``error``
=========================================  ======  ==========================================
invalid request body / event field          422    ``invalid_request`` (+ ``field``)
V2 inputs the model's declaration refuses   400    (V2 form: ``{"error": "model <m>: ..."}``)
DataError of the event (features, model)    422    the error class (+ ``stage``, ``step``)
unknown service / model                     404    ``not_found``
over the body limit                         413    ``payload_too_large``
missing or wrong bearer token               401    ``unauthorized`` (+ ``WWW-Authenticate``)
a service the client may not call           403    ``forbidden``
the client over its rate limit              429    ``rate_limited`` (+ ``Retry-After``)
DeadlineExceeded                            504    ``deadline_exceeded``
other Retryable (down, not ready)           503    the error class (+ ``Retry-After``)
ConfigError at request time                 503    ``misconfigured`` (the service cannot answer now;
                                                    e.g. an https model server whose certificate does
                                                    not verify: ``ModelServerUntrusted``)
anything else                               500    ``internal_error`` (logged with the request id)
=========================================  ======  ==========================================

401, 403 and 429 are answered by the middleware (:mod:`vatic.serving.gateway.auth`), before the body is read.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import ORJSONResponse

from vatic.schemas.errors import ConfigError, DataError, DeadlineExceeded, Retryable, ServiceNotFound


def problem(status: int, error: str, message: str, **extra: Any) -> ORJSONResponse:
    headers = {}
    retry_after = extra.pop("retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = {"error": error, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return ORJSONResponse(body, status_code=status, headers=headers)


def from_exception(exc: Exception) -> ORJSONResponse:
    if isinstance(exc, ServiceNotFound):
        return problem(404, exc.error_class, exc.message)
    if isinstance(exc, DataError):
        return problem(422, exc.error_class, exc.message, stage=exc.stage, step=exc.step)
    if isinstance(exc, DeadlineExceeded):
        return problem(504, "deadline_exceeded", exc.message, stage=exc.stage, step=exc.step)
    if isinstance(exc, Retryable):
        return problem(
            503, exc.error_class, exc.message, stage=exc.stage, step=exc.step, retry_after=exc.retry_after or 1.0
        )
    if isinstance(exc, ConfigError):
        return problem(503, "misconfigured", exc.message, stage=exc.stage, retry_after=5.0)
    return problem(500, "internal_error", "the gateway failed to handle the request; see its log")
