"""FeatureClient against real Feast 0.67 feature repos materialized to SQLite and to the real local Redis.

Every test reads data that Feast itself wrote (``apply`` + ``materialize`` from a Parquet file generated here),
through both read paths: ``direct`` (our reads of Feast's bytes) and ``feast`` (Feast's SDK). Outage and
deadline tests use a private redis-server started (and paused/killed) by this module, never the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pytest
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.repo_config import RegistryConfig
from feast.types import Bool, Float32, Float64, Int64, String

from vatic.connectors.features import FeatureClient, FeatureStatus, MissingFeaturePolicy
from vatic.schemas.errors import (
    ConfigError,
    DataError,
    DeadlineExceeded,
    FeatureStoreUnavailable,
    InvalidEntityKey,
    MissingFeatures,
    Retryable,
)

PRESENT = FeatureStatus.PRESENT
NOT_FOUND = FeatureStatus.NOT_FOUND
STALE = FeatureStatus.OUTSIDE_MAX_AGE
NULL = FeatureStatus.NULL_VALUE

NOW = datetime.now(UTC).replace(microsecond=0)
SEGMENTS = ("gold", "silver", "bronze")
CUSTOMER_FEATURES = [
    "customer_stats:order_count_7d",
    "customer_stats:avg_amount",
    "customer_stats:segment",
]
ALL_FEATURES = [
    *CUSTOMER_FEATURES,
    "merchant_stats:fraud_rate_30d",
    "merchant_stats:country",
    "customer_merchant_stats:txn_count_30d",
]
DEVICE_FEATURES = ["device_stats:risk_score", "device_stats:is_emulator"]


# --- the feature repo ---------------------------------------------------------------------------------------


def _write_sources(data: Path) -> dict[str, Path]:
    data.mkdir(parents=True, exist_ok=True)
    fresh = NOW - timedelta(minutes=10)
    customers: list[dict[str, Any]] = [
        {
            "customer_id": f"c{i:03d}",
            "order_count_7d": i,
            "avg_amount": i + 0.25,
            "segment": SEGMENTS[i % 3],
            "event_timestamp": fresh,
        }
        for i in range(120)
    ]
    customers += [
        # an older row of c000: materialization must keep the latest one
        {
            "customer_id": "c000",
            "order_count_7d": 99,
            "avg_amount": 99.0,
            "segment": "old",
            "event_timestamp": NOW - timedelta(hours=5),
        },
        # older than customer_stats' 1-day TTL
        {
            "customer_id": "c_stale",
            "order_count_7d": 1,
            "avg_amount": 1.0,
            "segment": "gold",
            "event_timestamp": NOW - timedelta(days=3),
        },
        # nulls
        {"customer_id": "c_null", "order_count_7d": None, "avg_amount": 2.5, "segment": None, "event_timestamp": fresh},
    ]
    frame = pd.DataFrame(customers)
    frame["order_count_7d"] = frame["order_count_7d"].astype("Int64")
    paths = {"customers": data / "customers.parquet"}
    frame.to_parquet(paths["customers"])

    merchants = pd.DataFrame(
        {
            "merchant_id": [f"m{i}" for i in range(10)],
            "fraud_rate_30d": [i / 100 for i in range(10)],
            "country": ["DE", "FR", "US", "NL", "IT", "ES", "PL", "SE", "AT", "BE"],
            # 30 days old, but merchant_stats has no TTL: never stale
            "event_timestamp": [NOW - timedelta(days=30)] * 10,
        }
    )
    paths["merchants"] = data / "merchants.parquet"
    merchants.to_parquet(paths["merchants"])

    pairs = pd.DataFrame(
        {
            "customer_id": ["c000", "c001", "c002"],
            "merchant_id": ["m0", "m1", "m0"],
            "txn_count_30d": [3, 4, 5],
            "event_timestamp": [NOW - timedelta(hours=1)] * 3,
        }
    )
    paths["pairs"] = data / "pairs.parquet"
    pairs.to_parquet(paths["pairs"])

    devices = pd.DataFrame(
        {
            "device_id": pd.Series([1001, 1002, 2**40], dtype="int64"),
            "risk_score": pd.Series([0.5, 0.25, 0.75], dtype="float32"),
            "is_emulator": [False, True, False],
            "event_timestamp": [NOW - timedelta(minutes=1)] * 3,
        }
    )
    paths["devices"] = data / "devices.parquet"
    devices.to_parquet(paths["devices"])
    return paths


def _definitions(paths: dict[str, Path]) -> list[Any]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
    device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.INT64)

    def source(name: str) -> FileSource:
        return FileSource(name=f"{name}_source", path=str(paths[name]), timestamp_field="event_timestamp")

    return [
        customer,
        merchant,
        device,
        FeatureView(
            name="customer_stats",
            entities=[customer],
            ttl=timedelta(days=1),
            schema=[
                Field(name="customer_id", dtype=String),
                Field(name="order_count_7d", dtype=Int64),
                Field(name="avg_amount", dtype=Float64),
                Field(name="segment", dtype=String),
            ],
            source=source("customers"),
        ),
        FeatureView(
            name="merchant_stats",
            entities=[merchant],
            ttl=timedelta(0),
            schema=[
                Field(name="merchant_id", dtype=String),
                Field(name="fraud_rate_30d", dtype=Float64),
                Field(name="country", dtype=String),
            ],
            source=source("merchants"),
        ),
        FeatureView(
            name="customer_merchant_stats",
            entities=[customer, merchant],
            ttl=timedelta(days=7),
            schema=[
                Field(name="customer_id", dtype=String),
                Field(name="merchant_id", dtype=String),
                Field(name="txn_count_30d", dtype=Int64),
            ],
            source=source("pairs"),
        ),
        FeatureView(
            name="device_stats",
            entities=[device],
            ttl=timedelta(days=1),
            schema=[
                Field(name="device_id", dtype=Int64),
                Field(name="risk_score", dtype=Float32),
                Field(name="is_emulator", dtype=Bool),
            ],
            source=source("devices"),
        ),
    ]


def _redis_connection_string(url: str) -> str:
    parsed = urlparse(url)
    db = (parsed.path or "/0").lstrip("/") or "0"
    return f"{parsed.hostname}:{parsed.port or 6379},db={db}"


def _write_yaml(repo: Path, project: str, online: str) -> None:
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry:\n  path: data/registry.db\n  cache_ttl_seconds: 0\n"
        f"online_store:\n{online}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )


@pytest.fixture(scope="module")
def project() -> str:
    """A Feast project name of its own, so that our Redis keys never collide with anyone else's."""
    return f"vt{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, redis_url: str, project: str) -> Iterator[dict[str, Path]]:
    """Two feature repos (SQLite and the shared Redis) with the same definitions, applied and materialized."""
    root = tmp_path_factory.mktemp("feast")
    paths = _write_sources(root / "sources")
    online = {
        "sqlite": "  type: sqlite\n  path: data/online_store.db\n",
        "redis": f'  type: redis\n  connection_string: "{_redis_connection_string(redis_url)}"\n',
    }
    repos: dict[str, Path] = {}
    stores: list[FeatureStore] = []
    for kind, online_yaml in online.items():
        repo = root / kind
        (repo / "data").mkdir(parents=True)
        _write_yaml(repo, project, online_yaml)
        store = FeatureStore(repo_path=str(repo))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.apply(_definitions(paths))
            store.materialize(start_date=NOW - timedelta(days=40), end_date=NOW + timedelta(minutes=1))
        repos[kind] = repo
        stores.append(store)
    yield repos
    for store in stores:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.teardown()  # removes this project's keys from the shared Redis


@pytest.fixture(params=["sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["direct", "feast"])
def read_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(repos: dict[str, Path], kind: str, read_path: str) -> Iterator[FeatureClient]:
    with FeatureClient.from_repo(repos[kind], read_path=read_path, deadline_s=10) as the_client:  # type: ignore[arg-type]
        yield the_client


def _customer(i: int) -> dict[str, Any]:
    return {"customer_id": f"c{i:03d}"}


# --- values and statuses ------------------------------------------------------------------------------------


def test_read_path_in_use(client: FeatureClient, kind: str, read_path: str) -> None:
    assert client.source == (kind if read_path == "direct" else "feast-sdk")


def test_values_equal_what_was_materialized(client: FeatureClient) -> None:
    lookup = client.get_sync(
        [
            {"customer_id": "c000", "merchant_id": "m0"},
            {"customer_id": "c007", "merchant_id": "m3", "ignored": 1},
        ],
        ALL_FEATURES,
    )
    first, second = lookup
    assert dict(first.values) == {
        # the latest row of c000, not the older one
        "customer_stats:order_count_7d": 0,
        "customer_stats:avg_amount": 0.25,
        "customer_stats:segment": "gold",
        "merchant_stats:fraud_rate_30d": 0.0,
        "merchant_stats:country": "DE",
        "customer_merchant_stats:txn_count_30d": 3,
    }
    assert first.complete
    assert not first.missing
    assert set(first.statuses.values()) == {PRESENT}
    assert first.event_times["customer_stats"] == (NOW - timedelta(minutes=10)).timestamp()
    # merchant_stats has no TTL: a 30-day-old row is PRESENT
    assert first.event_times["merchant_stats"] == (NOW - timedelta(days=30)).timestamp()

    assert second.values["customer_stats:order_count_7d"] == 7
    assert second.values["customer_stats:avg_amount"] == 7.25
    assert second.values["customer_stats:segment"] == "silver"
    assert second.values["merchant_stats:country"] == "NL"
    # no row for the pair (c007, m3)
    assert second.values["customer_merchant_stats:txn_count_30d"] is None
    assert dict(second.missing) == {"customer_merchant_stats:txn_count_30d": NOT_FOUND}
    assert second.event_times["customer_merchant_stats"] is None
    assert lookup.features == tuple(ALL_FEATURES)


def test_int64_join_keys_float32_and_bool(client: FeatureClient) -> None:
    lookup = client.get_sync([{"device_id": 1001}, {"device_id": 1002}, {"device_id": 2**40}], DEVICE_FEATURES)
    assert [dict(row.values) for row in lookup] == [
        {"device_stats:risk_score": 0.5, "device_stats:is_emulator": False},
        {"device_stats:risk_score": 0.25, "device_stats:is_emulator": True},
        {"device_stats:risk_score": 0.75, "device_stats:is_emulator": False},
    ]
    assert all(row.complete for row in lookup)


def test_unknown_entity_is_not_found_not_an_error(client: FeatureClient) -> None:
    lookup = client.get_sync([{"customer_id": "nobody", "merchant_id": "m1"}], CUSTOMER_FEATURES)
    row = lookup[0]
    assert dict(row.statuses) == dict.fromkeys(CUSTOMER_FEATURES, NOT_FOUND)
    assert dict(row.missing) == dict.fromkeys(CUSTOMER_FEATURES, NOT_FOUND)
    assert set(row.values.values()) == {None}
    assert row.event_times == {"customer_stats": None}
    assert not row.complete


def test_stale_row_is_outside_max_age_and_withheld(client: FeatureClient) -> None:
    (row,) = client.get_sync([{"customer_id": "c_stale"}], CUSTOMER_FEATURES)
    assert dict(row.statuses) == dict.fromkeys(CUSTOMER_FEATURES, STALE)
    assert set(row.values.values()) == {None}
    assert row.event_times["customer_stats"] == (NOW - timedelta(days=3)).timestamp()


def test_null_values(client: FeatureClient) -> None:
    (row,) = client.get_sync([{"customer_id": "c_null"}], CUSTOMER_FEATURES)
    assert dict(row.statuses) == {
        "customer_stats:order_count_7d": NULL,
        "customer_stats:avg_amount": PRESENT,
        "customer_stats:segment": NULL,
    }
    assert row.values["customer_stats:avg_amount"] == 2.5
    assert row.values["customer_stats:order_count_7d"] is None
    assert set(row.missing) == {"customer_stats:order_count_7d", "customer_stats:segment"}


def test_repeated_entities_are_read_once(client: FeatureClient) -> None:
    entities = [
        {"customer_id": "c001", "merchant_id": "m1"},
        {"customer_id": "c002", "merchant_id": "m0"},
        {"customer_id": "c001", "merchant_id": "m1"},
        {"customer_id": "c001", "merchant_id": "m0"},
        {"customer_id": "c001", "merchant_id": "m1"},
    ]
    lookup = client.get_sync(entities, ALL_FEATURES)
    assert len(lookup) == 5
    # customers {c001, c002} + merchants {m1, m0} + pairs {(c001,m1), (c002,m0), (c001,m0)}
    assert lookup.unique_entities == 7
    assert lookup[0] is lookup[2] is lookup[4]
    assert lookup[0].values["customer_merchant_stats:txn_count_30d"] == 4
    assert lookup[1].values["customer_merchant_stats:txn_count_30d"] == 5
    assert lookup[3].missing == {"customer_merchant_stats:txn_count_30d": NOT_FOUND}
    assert lookup[3].values["customer_stats:order_count_7d"] == 1


def test_batch_of_100_entities(client: FeatureClient) -> None:
    entities = [_customer(i) for i in range(100)]
    lookup = client.get_sync(entities, CUSTOMER_FEATURES)
    assert len(lookup) == 100
    assert lookup.unique_entities == 100
    for i, row in enumerate(lookup):
        assert row.complete
        assert row.values == {
            "customer_stats:order_count_7d": i,
            "customer_stats:avg_amount": i + 0.25,
            "customer_stats:segment": SEGMENTS[i % 3],
        }


def test_async_get(client: FeatureClient) -> None:
    entities = [_customer(i) for i in range(64)] + [{"customer_id": "nobody"}, {"customer_id": "c_stale"}]

    async def run() -> list[Any]:
        try:
            # several lookups at once on one loop, then a second loop below
            return list(await asyncio.gather(*(client.get(entities, CUSTOMER_FEATURES) for _ in range(3))))
        finally:
            await client.aclose()

    lookups = asyncio.run(run())
    expected = client.get_sync(entities, CUSTOMER_FEATURES)
    for lookup in lookups:
        assert [dict(r.values) for r in lookup] == [dict(r.values) for r in expected]
        assert [dict(r.statuses) for r in lookup] == [dict(r.statuses) for r in expected]
    assert lookups[0][64].missing == dict.fromkeys(CUSTOMER_FEATURES, NOT_FOUND)
    assert lookups[0][65].missing == dict.fromkeys(CUSTOMER_FEATURES, STALE)

    # a new event loop gets its own connections
    again = asyncio.run(client.get(entities[:2], CUSTOMER_FEATURES))
    assert again[1].values["customer_stats:order_count_7d"] == 1


def test_empty_batch(client: FeatureClient) -> None:
    lookup = client.get_sync([], CUSTOMER_FEATURES)
    assert len(lookup) == 0
    assert lookup.features == tuple(CUSTOMER_FEATURES)


# --- same answers as Feast's SDK ----------------------------------------------------------------------------


MIXED = [
    {"customer_id": "c000", "merchant_id": "m0"},
    {"customer_id": "c_stale", "merchant_id": "m9"},
    {"customer_id": "c_null", "merchant_id": "zz"},
    {"customer_id": "nobody", "merchant_id": "m1"},
    {"customer_id": "c001", "merchant_id": "m1"},
    {"customer_id": "c000", "merchant_id": "m0"},
    *({"customer_id": f"c{i:03d}", "merchant_id": f"m{i % 10}"} for i in range(10, 110)),
]


def test_direct_path_returns_what_feasts_sdk_returns(repos: dict[str, Path], kind: str) -> None:
    with (
        FeatureClient.from_repo(repos[kind], read_path="direct", deadline_s=10) as direct,
        FeatureClient.from_repo(repos[kind], read_path="feast", deadline_s=10) as sdk,
    ):
        ours = direct.get_sync(MIXED, ALL_FEATURES)
        theirs = sdk.get_sync(MIXED, ALL_FEATURES)
        ours_async = asyncio.run(direct.get(MIXED, ALL_FEATURES))
        raw = sdk.feature_store.get_online_features(
            features=ALL_FEATURES, entity_rows=MIXED, full_feature_names=True
        ).to_dict()

    assert ours.source == kind
    assert theirs.source == "feast-sdk"
    for lookup in (theirs, ours_async):
        assert [dict(r.values) for r in ours] == [dict(r.values) for r in lookup]
        assert [dict(r.statuses) for r in ours] == [dict(r.statuses) for r in lookup]
        for a, b in zip(ours, lookup, strict=True):
            assert a.event_times.keys() == b.event_times.keys()
            for view, t in a.event_times.items():
                assert t == pytest.approx(b.event_times[view], abs=1e-6)

    # every PRESENT value is exactly the value Feast's own to_dict() gives
    present = 0
    for i, row in enumerate(ours):
        for ref, value in row.values.items():
            if row.statuses[ref] is PRESENT:
                assert raw[ref.replace(":", "__")][i] == value
                assert type(raw[ref.replace(":", "__")][i]) is type(value)
                present += 1
    assert present > 500


def test_repo_config_built_in_code(repos: dict[str, Path], project: str, redis_url: str) -> None:
    config = RepoConfig(
        project=project,
        provider="local",
        registry=RegistryConfig(path=str(repos["redis"] / "data" / "registry.db"), cache_ttl_seconds=0),
        online_store={"type": "redis", "connection_string": _redis_connection_string(redis_url)},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=repos["redis"],
    )
    with FeatureClient(config) as auto:
        assert auto.source == "redis"
        assert auto.get_sync([_customer(5)], CUSTOMER_FEATURES)[0].values["customer_stats:segment"] == "bronze"
    # the caller's config is not modified; the client's copy carries socket timeouts
    assert config.online_store.connection_string == _redis_connection_string(redis_url)
    with FeatureClient(config, deadline_s=0.25) as timed:
        assert "socket_timeout=0.25" in timed.feature_store.config.online_store.connection_string
        assert "socket_connect_timeout=0.25" in timed.feature_store.config.online_store.connection_string


# --- bad requests and bad configuration ---------------------------------------------------------------------


def test_invalid_entity_keys_name_the_bad_entities(client: FeatureClient) -> None:
    entities: list[dict[str, Any]] = [
        {"customer_id": "c001", "merchant_id": "m1"},
        {"merchant_id": "m1"},
        {"customer_id": None, "merchant_id": "m1"},
        {"customer_id": 17, "merchant_id": "m1"},
        {"customer_id": "c002", "merchant_id": "m2"},
    ]
    with pytest.raises(InvalidEntityKey) as info:
        client.get_sync(entities, ALL_FEATURES)
    assert isinstance(info.value, DataError)
    assert sorted(info.value.problems) == [1, 2, 3]
    assert "customer_id" in info.value.problems[3]
    assert "int" in info.value.problems[3]
    with pytest.raises(InvalidEntityKey):
        client.get_sync([{"device_id": True}], DEVICE_FEATURES)
    with pytest.raises(InvalidEntityKey):
        client.get_sync([{"device_id": "1001"}], DEVICE_FEATURES)


@pytest.mark.parametrize(
    "features",
    [
        ["no_such_view:x"],
        ["customer_stats:no_such_feature"],
        ["customer_stats"],
        ["customer_stats:a:b"],
        [],
        "customer_stats:segment",
    ],
)
def test_bad_feature_references_are_config_errors(client: FeatureClient, features: Any) -> None:
    with pytest.raises(ConfigError):
        client.get_sync([_customer(1)], features)


def test_unmaterialized_sqlite_store_is_a_config_error(repos: dict[str, Path], tmp_path: Path, read_path: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(repos["sqlite"], repo)
    (repo / "data" / "online_store.db").unlink()
    with FeatureClient.from_repo(repo, read_path=read_path) as empty, pytest.raises(ConfigError):  # type: ignore[arg-type]
        empty.get_sync([_customer(1)], CUSTOMER_FEATURES)


def test_missing_feature_store_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FeatureClient.from_repo(tmp_path)


def test_direct_path_refuses_a_redis_cluster(repos: dict[str, Path], project: str) -> None:
    config = RepoConfig(
        project=project,
        provider="local",
        registry=str(repos["redis"] / "data" / "registry.db"),
        online_store={"type": "redis", "redis_type": "redis_cluster", "connection_string": "127.0.0.1:7000"},
        entity_key_serialization_version=3,
    )
    with pytest.raises(ConfigError):
        FeatureClient(config, read_path="direct")
    with FeatureClient(config) as auto:
        assert auto.source == "feast-sdk"


def test_nonpositive_deadline_is_a_config_error(client: FeatureClient) -> None:
    with pytest.raises(ConfigError):
        client.get_sync([_customer(1)], CUSTOMER_FEATURES, deadline_s=0)


# --- the missing-feature policy on real lookups --------------------------------------------------------------


def test_missing_feature_policy_on_a_lookup(client: FeatureClient) -> None:
    lookup = client.get_sync(
        [{"customer_id": "c003"}, {"customer_id": "nobody"}, {"customer_id": "c_null"}], CUSTOMER_FEATURES
    )
    lenient = MissingFeaturePolicy(defaults={"customer_stats:order_count_7d": 0, "customer_stats:segment": "none"})
    complete, unknown, nulls = (lenient.apply(row) for row in lookup)
    assert complete is lookup[0]
    assert unknown.values == {
        "customer_stats:order_count_7d": 0,
        "customer_stats:avg_amount": None,
        "customer_stats:segment": "none",
    }
    assert unknown.missing == dict.fromkeys(CUSTOMER_FEATURES, NOT_FOUND)  # the missing flag survives
    assert nulls.values["customer_stats:avg_amount"] == 2.5
    assert nulls.values["customer_stats:segment"] == "none"

    strict = MissingFeaturePolicy(action="reject", per_feature={"customer_stats:segment": "default"})
    results = strict.apply_all(lookup)
    assert results[0] is lookup[0]
    assert isinstance(results[1], MissingFeatures)
    assert results[1].missing == dict.fromkeys(CUSTOMER_FEATURES, "NOT_FOUND")
    assert isinstance(results[2], MissingFeatures)
    assert results[2].missing == {"customer_stats:order_count_7d": "NULL_VALUE", "customer_stats:segment": "NULL_VALUE"}


# --- outages and deadlines: a locked SQLite file, a private redis-server -------------------------------------


def test_deadline_on_a_locked_sqlite_store(repos: dict[str, Path], tmp_path: Path, read_path: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(repos["sqlite"], repo)
    client = FeatureClient.from_repo(repo, read_path=read_path, deadline_s=0.2)  # type: ignore[arg-type]
    assert client.get_sync([_customer(1)], CUSTOMER_FEATURES)[0].complete
    writer = sqlite3.connect(repo / "data" / "online_store.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # what a committing writer holds: readers must wait
    try:
        with pytest.raises(DeadlineExceeded):
            asyncio.run(client.get([_customer(1)], CUSTOMER_FEATURES))  # inline (direct) or in a thread (SDK)
        with pytest.raises(DeadlineExceeded):
            asyncio.run(client.get([_customer(i) for i in range(50)], CUSTOMER_FEATURES))  # in a thread
        if read_path == "direct":  # Feast's own connection waits its 5 s busy timeout
            with pytest.raises(DeadlineExceeded):
                client.get_sync([_customer(1)], CUSTOMER_FEATURES)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert client.get_sync([_customer(2)], CUSTOMER_FEATURES, deadline_s=5)[0].complete
    client.close()


# --- outages and deadlines: a private redis-server ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test module's own, so that pausing or killing it disturbs nobody."""

    def __init__(self, tmp: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.port = _free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if probe.ping():
                    probe.close()
                    return
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def _client_on(repos: dict[str, Path], tmp_path: Path, port: int, read_path: str, **options: Any) -> FeatureClient:
    """A client of the Redis repo's registry whose online store is the private server (empty: NOT_FOUND)."""
    repo = tmp_path / "private-repo"
    if not repo.exists():
        shutil.copytree(repos["redis"], repo)
    text = (repo / "feature_store.yaml").read_text()
    start = text.index("connection_string:")
    end = text.index("\n", start)
    (repo / "feature_store.yaml").write_text(text[:start] + f'connection_string: "127.0.0.1:{port},db=0"' + text[end:])
    return FeatureClient.from_repo(repo, read_path=read_path, **options)  # type: ignore[arg-type]


def test_deadline_on_a_paused_redis_then_recovery(
    repos: dict[str, Path], tmp_path: Path, private_redis: PrivateRedis, read_path: str
) -> None:
    client = _client_on(repos, tmp_path, private_redis.port, read_path, deadline_s=0.3, store_timeout_s=30)
    entities = [_customer(1), _customer(2)]

    async def run() -> None:
        try:
            warm = await client.get(entities, CUSTOMER_FEATURES)
            assert warm[0].missing == dict.fromkeys(CUSTOMER_FEATURES, NOT_FOUND)
            private_redis.pause()
            try:
                with pytest.raises(DeadlineExceeded) as info:
                    await client.get(entities, CUSTOMER_FEATURES)
                assert isinstance(info.value, Retryable)
                assert info.value.deadline_s == 0.3
                with pytest.raises(DeadlineExceeded):
                    await client.get(entities, CUSTOMER_FEATURES, deadline_s=0.1)
            finally:
                private_redis.resume()
            # the abandoned reads did not poison the connection pool
            again = await client.get(entities, CUSTOMER_FEATURES, deadline_s=5)
            assert again[1].missing == dict.fromkeys(CUSTOMER_FEATURES, NOT_FOUND)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_store_timeout_on_a_paused_redis_blocking(
    repos: dict[str, Path], tmp_path: Path, private_redis: PrivateRedis, read_path: str
) -> None:
    with _client_on(repos, tmp_path, private_redis.port, read_path, deadline_s=30, store_timeout_s=0.3) as client:
        client.get_sync([_customer(1)], CUSTOMER_FEATURES)
        private_redis.pause()
        try:
            with pytest.raises(FeatureStoreUnavailable) as info:
                client.get_sync([_customer(1)], CUSTOMER_FEATURES)
            assert info.value.service == "redis"
            assert info.value.stage == "enrich"
        finally:
            private_redis.resume()
        assert client.get_sync([_customer(1)], CUSTOMER_FEATURES)[0].missing


def test_redis_down_is_feature_store_unavailable(
    repos: dict[str, Path], tmp_path: Path, private_redis: PrivateRedis, read_path: str
) -> None:
    client = _client_on(repos, tmp_path, private_redis.port, read_path, deadline_s=5, store_timeout_s=1)
    client.get_sync([_customer(1)], CUSTOMER_FEATURES)
    private_redis.stop()
    try:
        with pytest.raises(FeatureStoreUnavailable) as info:
            client.get_sync([_customer(1)], CUSTOMER_FEATURES)
        assert isinstance(info.value, Retryable)
        with pytest.raises(FeatureStoreUnavailable):
            asyncio.run(client.get([_customer(1)], CUSTOMER_FEATURES))

        # and it comes back: the next lookup after a restart succeeds
        private_redis.start()
        assert client.get_sync([_customer(1)], CUSTOMER_FEATURES)[0].missing
    finally:
        client.close()
