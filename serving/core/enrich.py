"""Feature enrichment: one batched Feast lookup per batch of events, the missing-feature policy per event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vatic.connectors.features import FeatureClient, MissingFeaturePolicy
from vatic.schemas.errors import DataError, InvalidEntityKey, MissingFeatures
from vatic.serving.config.model import FeatureSpec


def policy_of(spec: FeatureSpec) -> MissingFeaturePolicy:
    """The connector-level policy equivalent to a service's ``features`` section."""
    return MissingFeaturePolicy(
        action=spec.on_missing,
        defaults={ref: spec.policy(ref).default for ref in spec.refs},
        per_feature={ref: policy.on_missing for ref, policy in spec.policies.items()},
    )


class Enricher:
    """Looks up a service's features for a batch of events.

    :meth:`lookup` returns, aligned with the input events: the feature values after the policy (defaults
    filled in), the missing flags (``{ref: status}`` of features that were not PRESENT), and
    ``{index: DataError}`` for events that must be dead-lettered (a rejected missing feature, a malformed
    entity key). Outages and deadlines raise (``FeatureStoreUnavailable``, ``DeadlineExceeded``).
    """

    def __init__(self, spec: FeatureSpec, client: FeatureClient) -> None:
        self.spec = spec
        self.client = client
        self.policy = policy_of(spec)
        self.refs = list(client.prepare(spec.refs))
        self._keys = list(spec.entities.items())

    @classmethod
    def from_spec(
        cls, spec: FeatureSpec, service_dir: Path, *, redis_url: str | None = None, **options: Any
    ) -> Enricher:
        """Open the Feast repository named by ``spec.repo`` (relative to the service folder).

        The online store is the repo's own, unless ``redis_url`` is given (deployment override) or the spec
        says ``online_store: redis`` with its ``redis_url``.
        """
        if redis_url is None and spec.online_store == "redis":
            redis_url = spec.redis_url
        options.setdefault("cache_ttl_s", spec.cache_ttl_ms / 1000)
        client = FeatureClient.from_repo(
            service_dir / spec.repo, redis_url=redis_url, deadline_s=spec.deadline_ms / 1000, **options
        )
        return cls(spec, client)

    async def lookup(
        self, events: Sequence[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[int, DataError]]:
        entities = [{key: event.get(field) for key, field in self._keys} for event in events]
        errors: dict[int, DataError] = {}
        try:
            lookup = await self.client.get(entities, self.refs)
        except InvalidEntityKey as exc:
            # dead-letter the malformed keys, look up the others
            for index, problem in exc.problems.items():
                errors[index] = InvalidEntityKey(problem, problems={index: problem})
            good = [i for i in range(len(events)) if i not in errors]
            sub = await self.client.get([entities[i] for i in good], self.refs) if good else []
            rows_by_index = dict(zip(good, sub, strict=True))
        else:
            rows_by_index = dict(enumerate(lookup))
        values: list[dict[str, Any]] = []
        flags: list[dict[str, str]] = []
        for index in range(len(events)):
            row = rows_by_index.get(index)
            if row is None:
                values.append({})
                flags.append({})
                continue
            try:
                applied = self.policy.apply(row)
            except MissingFeatures as exc:
                errors[index] = exc
                values.append({})
                flags.append({})
                continue
            values.append(dict(applied.values))
            flags.append({ref: status.value for ref, status in applied.missing.items()})
        return values, flags, errors

    async def aclose(self) -> None:
        await self.client.aclose()
