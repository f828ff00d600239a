"""The job's recovery settings, chosen together (docs/decisions/0001-recovery-bounds.md): restart back-off and
attempts, checkpoint timeout, the sinks' delivery timeout. Used by the job (:mod:`vatic.streaming.job`) and by
the rendered FlinkDeployment, so both run with the same; this module imports no PyFlink."""

from __future__ import annotations

from vatic.serving.config import ServiceConfig

#: the sinks' producers: how long a record may wait for the broker before its send fails the task
DELIVERY_TIMEOUT_MS = 60_000


def recovery_settings(config: ServiceConfig) -> dict[str, str]:
    """The restart strategy of the job (how it fits the other timeouts: the docstring of
    :mod:`vatic.streaming.job`)."""
    assert config.streaming is not None
    return {
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "10 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "1 min",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(config.streaming.restart_attempts),
    }


def checkpoint_timeout_s(config: ServiceConfig) -> float:
    """How long one checkpoint may take: a batch holds the barrier while it retries (retry budget, plus two
    model deadlines for the attempts in flight), a sink's flush as long as its producer waits for the broker,
    and 30 s for the rest."""
    assert config.streaming is not None
    return max(config.streaming.retry.budget_s + 2 * config.timeout_s, DELIVERY_TIMEOUT_MS / 1000) + 30
