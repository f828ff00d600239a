"""Online features from Feast: batched lookups with per-entity statuses, deadlines and a missing-feature policy.

Runs in the pipeline environment (Feast 0.67, Redis or SQLite online store)::

    client = FeatureClient.from_repo("feature_repo")
    lookup = await client.get(
        [{"customer_id": "c1", "merchant_id": "m9"}, ...],
        ["customer_stats:order_count_7d", "merchant_stats:fraud_rate_30d"],
    )
    for row in lookup:
        row = policy.apply(row)  # MissingFeaturePolicy: defaults + missing flag, or MissingFeatures

Importing Feast has a process-wide side effect: ``feast.metrics`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
temporary folder it deletes at exit, which switches prometheus_client into multiprocess mode and leaks into
every child process (an MLServer started afterwards then fails its metrics with FileNotFoundError). vatic does
not run Feast's feature server, so :mod:`vatic.connectors.features._isolation` imports prometheus_client first
and takes the variables back out after Feast is imported.
"""

from vatic.connectors.features import _isolation  # noqa: F401 - must run before Feast is imported
from vatic.connectors.features.client import FeatureClient, ReadPath
from vatic.connectors.features.model import (
    EntityFeatures,
    FeatureLookup,
    FeatureStatus,
    MissingAction,
    MissingFeaturePolicy,
)

__all__ = [
    "EntityFeatures",
    "FeatureClient",
    "FeatureLookup",
    "FeatureStatus",
    "MissingAction",
    "MissingFeaturePolicy",
    "ReadPath",
]
