"""The embedded schema sources: InMemorySchemaStore and the file-backed LocalSchemaStore."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vatic.schemas import (
    CompatibilityLevel,
    InMemorySchemaStore,
    LocalSchemaStore,
    SchemaSource,
    load_schema,
    topic_subject,
)
from vatic.schemas.canonical import fingerprint
from vatic.schemas.errors import ConfigError, IncompatibleSchemaError, InvalidSchemaError, SchemaNotFound
from vatic.schemas.source import EMBEDDED_ID_BASE


def rec(*fields: dict[str, Any], name: str = "Event") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "dev.vatic.test", "fields": list(fields)}


V1 = rec({"name": "id", "type": "string"})
V2 = rec({"name": "id", "type": "string"}, {"name": "score", "type": "double", "default": 0.0})
V3_DROPS_DEFAULT = rec({"name": "id", "type": "string"}, {"name": "score", "type": "double"})


@pytest.fixture(params=["memory", "local"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., InMemorySchemaStore]:
    def make(**options: Any) -> InMemorySchemaStore:
        if request.param == "memory":
            return InMemorySchemaStore(**options)
        return LocalSchemaStore(tmp_path / "registry", **options)

    return make


#: the id before an embedded store's first: its n-th new schema gets ``ID + n``
ID = EMBEDDED_ID_BASE - 1


def test_ids_start_where_registries_do_not_reach(make_store: Callable[..., InMemorySchemaStore]) -> None:
    """Registries count ids from 1; an embedded store from 2^30, so the two never name different schemas with
    one number, and an id an embedded store never issued is refused with a hint."""
    store = make_store()
    assert store.register("events-value", V1) == EMBEDDED_ID_BASE == 2**30
    with pytest.raises(SchemaNotFound, match=r"not issued by vatic's embedded schema store .* registry"):
        store.get_schema(1)


def test_both_stores_are_schema_sources(tmp_path: Path) -> None:
    assert isinstance(InMemorySchemaStore(), SchemaSource)
    assert isinstance(LocalSchemaStore(tmp_path), SchemaSource)


def test_ids_versions_and_lookups(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    assert store.register("events-value", V1) == ID + 1
    assert store.register("events-value", V2) == ID + 2
    assert store.versions("events-value") == [1, 2]

    latest = store.latest("events-value")
    assert (latest.subject, latest.version, latest.schema_id) == ("events-value", 2, ID + 2)
    assert fingerprint(latest.schema) == fingerprint(V2)
    assert store.get_version("events-value", 1).schema_id == ID + 1
    assert fingerprint(store.get_schema(ID + 1)) == fingerprint(V1)
    assert store.lookup("events-value", V1).version == 1
    assert store.subjects() == ["events-value"]


def test_same_schema_same_id(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    first = store.register("events-value", V1)
    respelled = json.loads(json.dumps(V1, sort_keys=True))
    respelled["name"] = "dev.vatic.test.Event"
    del respelled["namespace"]
    assert store.register("events-value", respelled) == first
    assert store.versions("events-value") == [1]  # no new version either
    assert store.register("archive-value", V1) == first  # ids are global
    assert store.versions("archive-value") == [1]


def test_not_found_errors(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    store.register("events-value", V1)
    with pytest.raises(SchemaNotFound) as caught:
        store.get_schema(99)
    assert caught.value.schema_id == 99
    with pytest.raises(SchemaNotFound):
        store.latest("nothing-value")
    with pytest.raises(SchemaNotFound):
        store.versions("nothing-value")
    with pytest.raises(SchemaNotFound) as version_missing:
        store.get_version("events-value", 2)
    assert version_missing.value.version == 2
    with pytest.raises(SchemaNotFound):
        store.lookup("events-value", V2)


def test_backward_transitive_by_default(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    assert store.get_compatibility("events-value") is CompatibilityLevel.BACKWARD_TRANSITIVE
    store.register("events-value", V1)
    store.register("events-value", V2)

    assert store.check_compatibility("events-value", V3_DROPS_DEFAULT)  # problems, nothing registered
    with pytest.raises(IncompatibleSchemaError) as caught:
        store.register("events-value", V3_DROPS_DEFAULT)
    assert any("score" in problem for problem in caught.value.problems)
    assert store.versions("events-value") == [1, 2]
    # the refused schema used no id
    assert store.register("other-value", rec({"name": "x", "type": "int"})) == ID + 3


def test_subject_level_overrides_the_default(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    store.register("events-value", V1)
    store.register("events-value", V2)
    store.set_compatibility("events-value", "backward")  # only the latest: v3 reads v2 data
    assert store.get_compatibility("events-value") is CompatibilityLevel.BACKWARD
    assert store.check_compatibility("events-value", V3_DROPS_DEFAULT) == []
    assert store.register("events-value", V3_DROPS_DEFAULT) == ID + 3
    assert store.get_compatibility("other-value") is CompatibilityLevel.BACKWARD_TRANSITIVE


def test_none_accepts_anything_valid(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store(default_compatibility="NONE")
    store.register("events-value", V1)
    assert store.register("events-value", rec({"name": "id", "type": "long"})) == ID + 2
    with pytest.raises(InvalidSchemaError):
        store.register("events-value", rec({"name": "id", "type": "uint64"}))
    with pytest.raises(ConfigError):
        store.set_compatibility("events-value", "MOSTLY")


def test_level_set_before_the_first_version(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    store.set_compatibility("events-value", CompatibilityLevel.FULL)
    store.register("events-value", V1)
    with pytest.raises(IncompatibleSchemaError):
        store.register("events-value", rec({"name": "id", "type": "string"}, {"name": "n", "type": "int"}))


def test_shipped_schemas_register(make_store: Callable[..., InMemorySchemaStore]) -> None:
    store = make_store()
    ids = [store.register(topic_subject(name), load_schema(name)) for name in ("transaction", "prediction")]
    assert ids == [ID + 1, ID + 2]
    assert topic_subject("transactions") == "transactions-value"
    assert topic_subject("transactions", key=True) == "transactions-key"


# -- LocalSchemaStore: the file -----------------------------------------------------------------------


def test_persists_across_instances(tmp_path: Path) -> None:
    first = LocalSchemaStore(tmp_path)
    first.register("events-value", V1)
    first.register("events-value", V2)
    first.set_compatibility("events-value", "FULL")
    first.set_compatibility("future-value", "FORWARD")  # a level for a subject without versions

    reopened = LocalSchemaStore(tmp_path)
    assert reopened.versions("events-value") == [1, 2]
    assert fingerprint(reopened.get_schema(ID + 2)) == fingerprint(V2)
    assert reopened.get_compatibility("events-value") is CompatibilityLevel.FULL
    assert reopened.get_compatibility("future-value") is CompatibilityLevel.FORWARD
    assert reopened.register("events-value", V1) == ID + 1
    assert reopened.register("more-value", rec({"name": "z", "type": "int"})) == ID + 3


def test_instances_see_each_others_writes(tmp_path: Path) -> None:
    writer, reader = LocalSchemaStore(tmp_path), LocalSchemaStore(tmp_path)
    reader.register("a-value", V1)
    writer.register("a-value", V2)
    assert reader.latest("a-value").version == 2
    assert reader.register("b-value", rec({"name": "z", "type": "int"})) == ID + 3


def test_a_store_file_of_the_old_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """Format 1 counted ids from 1 like a registry; reading it would keep the collision, so it is refused."""
    (tmp_path / "schemas.json").write_text(json.dumps({"format": "vatic-schema-store/1", "next_id": 2,
                                                       "schemas": {}, "subjects": {}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"older vatic.*delete it"):
        LocalSchemaStore(tmp_path).subjects()


def test_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "schemas.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="corrupt"):
        LocalSchemaStore(tmp_path).latest("a-value")


def test_threads_register_without_losing_versions(tmp_path: Path) -> None:
    store = LocalSchemaStore(tmp_path, default_compatibility="NONE")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(15):
                store.register(f"w{worker}-value", rec({"name": f"f{i}", "type": "int"}, name=f"W{worker}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reopened = LocalSchemaStore(tmp_path, default_compatibility="NONE")
    ids = [reopened.get_version(f"w{w}-value", v).schema_id for w in range(6) for v in range(1, 16)]
    assert sorted(ids) == list(range(ID + 1, ID + 91))


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from vatic.schemas import LocalSchemaStore

    directory, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = LocalSchemaStore(directory, default_compatibility="BACKWARD_TRANSITIVE")
    while not go.exists():
        time.sleep(0.001)
    shared = {"type": "record", "name": "Shared", "fields": [{"name": "id", "type": "string"}]}
    out = []
    for i in range(40):
        # its own subject, a shared subject both extend, and one schema both register
        own = {"type": "record", "name": name, "fields": [{"name": f"f{j}", "type": "int", "default": 0}
                                                          for j in range(i + 1)]}
        grown = {"type": "record", "name": "Grown", "fields": [
            {"name": f"{name}_{i}", "type": "int", "default": i}]}
        out.append(f"own {store.register(name + '-value', own)}")
        out.append(f"grown {store.register('grown-value', grown)}")
        out.append(f"shared {store.register('shared-value', shared)}")
    print("\\n".join(out))
    """
)


def test_two_processes_register_concurrently(tmp_path: Path) -> None:
    directory, go = tmp_path / "registry", tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(directory), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append([line.split() for line in out.splitlines()])

    store = LocalSchemaStore(directory)
    shared_ids = {int(i) for lines in outputs for kind, i in lines if kind == "shared"}
    assert len(shared_ids) == 1  # one schema, one id, whoever registered it first
    assert store.versions("shared-value") == [1]
    assert store.versions("alpha-value") == list(range(1, 41))
    assert store.versions("beta-value") == list(range(1, 41))
    assert store.versions("grown-value") == list(range(1, 81))  # no version lost to a race

    own_and_grown = [int(i) for lines in outputs for kind, i in lines if kind != "shared"]
    assert len(set(own_and_grown)) == 160  # every distinct schema got its own id
    all_ids = {
        store.get_version(s, v).schema_id
        for s in ("alpha-value", "beta-value", "grown-value")
        for v in store.versions(s)
    } | shared_ids
    assert all_ids == set(range(ID + 1, ID + 162))  # ids dense: nothing handed out twice or skipped
