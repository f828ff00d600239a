"""Prometheus metrics of the gateway (scraped at ``/metrics``). Names follow Prometheus conventions."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class GatewayMetrics:
    """One registry per app (tests create several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vatic_gateway_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "vatic_gateway_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.client_requests = Counter(
            "vatic_gateway_client_requests",
            "Requests to protected routes by client name (anonymous: no known credential), door (rest, grpc) and "
            "answer (HTTP status, gRPC code)",
            ["client", "door", "status"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "vatic_gateway_errors", "Failed predictions by error class", ["service", "error_class", "stage"],
            registry=self.registry,
        )  # fmt: skip
        self.feature_misses = Counter(
            "vatic_gateway_feature_misses", "Features not present for an entity", ["service", "feature"],
            registry=self.registry,
        )  # fmt: skip
        self.predictions = Counter(
            "vatic_gateway_predictions", "Predictions by the model version that answered (canary, rollout)",
            ["service", "version"], registry=self.registry,
        )  # fmt: skip
        self.shadow_batches = Counter(
            "vatic_gateway_shadow_batches", "Micro-batches by what the shadow did: answered, failed, late",
            ["service", "state"], registry=self.registry,
        )  # fmt: skip
        self.shadow_predictions = Counter(
            "vatic_gateway_shadow_predictions", "Shadow answers (never returned to a caller)", ["service"],
            registry=self.registry,
        )  # fmt: skip
        self.shadow_compared = Counter(
            "vatic_gateway_shadow_compared", "Events both the serving model and the shadow answered", ["service"],
            registry=self.registry,
        )  # fmt: skip
        self.shadow_agreed = Counter(
            "vatic_gateway_shadow_agreed", "Of those, the events on which they agree", ["service"],
            registry=self.registry,
        )  # fmt: skip
        self.shadow_write_failures = Counter(
            "vatic_gateway_shadow_write_failures", "Shadow answers not written to the shadow topic", ["service"],
            registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "vatic_gateway_batch_size", "Events per model call (adaptive micro-batches)", ["service"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
