"""Where schemas live: the :class:`SchemaSource` protocol and the embedded stores.

A schema source hands out global schema ids (what the Confluent wire format carries), keeps the versions of
each subject, and refuses a new version that breaks the subject's compatibility level. Implementations:

* :class:`LocalSchemaStore` - the embedded default: one JSON file in a directory, shared safely by threads
  and by processes on the same host (``fcntl`` lock);
* :class:`InMemorySchemaStore` - the same rules in process memory (tests, notebooks);
* ``vatic.connectors.schema_registry.ConfluentSchemaRegistry`` - a Confluent-compatible registry over REST.

Contract shared by all of them:

* ids are positive ints, never reused; the same schema (same :func:`~vatic.schemas.canonical.fingerprint`)
  gets the same id under every subject; registering a schema a subject already has returns its id and adds
  no version; the embedded stores hand out ids from :data:`EMBEDDED_ID_BASE` (2^30) up, a range registries
  (which count from 1) do not reach, so a record written against a registry is never read with an embedded
  store's schema of the same number: its id is unknown there and the record is refused, naming the id;
* versions of a subject count from 1 in registration order;
* a subject with no level of its own uses the source's default level;
* errors: :class:`SchemaNotFound` (no such id/subject/version), :class:`InvalidSchemaError` (not valid Avro),
  :class:`IncompatibleSchemaError` (refused by the compatibility level), :class:`SchemaSourceUnavailable`
  (cannot reach the source right now: retry), :class:`ConfigError` for anything else about the setup.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vatic.schemas import compat
from vatic.schemas.canonical import AvroSchema, fingerprint, validate
from vatic.schemas.compat import CompatibilityLevel
from vatic.schemas.errors import ConfigError, IncompatibleSchemaError, SchemaNotFound

__all__ = [
    "InMemorySchemaStore",
    "LocalSchemaStore",
    "RegisteredSchema",
    "SchemaSource",
    "topic_subject",
]

_FORMAT = "vatic-schema-store/2"
#: the first id an embedded store hands out (format 1 counted from 1, as registries do)
EMBEDDED_ID_BASE = 1 << 30


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    schema: AvroSchema


@runtime_checkable
class SchemaSource(Protocol):
    """What the codec and the tooling need from a schema registry. See the module docstring for errors."""

    def get_schema(self, schema_id: int) -> AvroSchema:
        """The schema registered under a global id; SchemaNotFound when there is none."""
        ...

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register ``schema`` as the next version of ``subject`` (idempotent) and return its global id."""
        ...

    def lookup(self, subject: str, schema: AvroSchema) -> RegisteredSchema:
        """The version of ``subject`` holding ``schema``, without registering; SchemaNotFound when none."""
        ...

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of ``subject``; SchemaNotFound for an unknown subject."""
        ...

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        """One version of ``subject``; SchemaNotFound when it does not exist."""
        ...

    def versions(self, subject: str) -> list[int]:
        """The version numbers of ``subject``, ascending; SchemaNotFound for an unknown subject."""
        ...

    def get_compatibility(self, subject: str) -> CompatibilityLevel:
        """The level applied to ``subject`` (its own, else the source's default)."""
        ...

    def set_compatibility(self, subject: str, level: CompatibilityLevel | str) -> None:
        """Set the level of ``subject`` (the subject need not exist yet)."""
        ...

    def check_compatibility(self, subject: str, schema: AvroSchema) -> list[str]:
        """Why registering ``schema`` under ``subject`` would be refused now; empty when it would not."""
        ...


def topic_subject(topic: str, *, key: bool = False) -> str:
    """The subject of a topic's values (or keys) under Confluent's default TopicNameStrategy."""
    return f"{topic}-{'key' if key else 'value'}"


@dataclass
class _State:
    """Everything a store knows; serialised as one JSON document."""

    next_id: int = EMBEDDED_ID_BASE
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema JSON text, as first registered
    ids: dict[str, int] = field(default_factory=dict)  # fingerprint -> id
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids, version = index + 1
    levels: dict[str, str] = field(default_factory=dict)  # subject -> compatibility level
    dirty: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "next_id": self.next_id,
            "schemas": {str(i): {"schema": text} for i, text in sorted(self.schemas.items())},
            "subjects": {
                name: {"versions": ids, **({"compatibility": self.levels[name]} if name in self.levels else {})}
                for name, ids in sorted(self.subjects.items())
            },
            "compatibility": {name: level for name, level in sorted(self.levels.items()) if name not in self.subjects},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> _State:
        if doc.get("format") == "vatic-schema-store/1":
            raise ValueError(
                "it was written by an older vatic, with ids from 1 that a schema registry hands out too: delete it "
                "(vatic registers its schemas again on first use; records written with its old ids are refused)"
            )
        if doc.get("format") != _FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        state = cls(next_id=int(doc["next_id"]))
        for key, entry in doc["schemas"].items():
            text = entry["schema"]
            state.schemas[int(key)] = text
            state.ids[fingerprint(json.loads(text))] = int(key)
        for name, entry in doc["subjects"].items():
            state.subjects[name] = [int(i) for i in entry["versions"]]
            if "compatibility" in entry:
                state.levels[name] = entry["compatibility"]
        state.levels.update(doc.get("compatibility", {}))
        return state


class InMemorySchemaStore:
    """A :class:`SchemaSource` in process memory: ids from :data:`EMBEDDED_ID_BASE`, compatibility enforced on
    register.

    Thread-safe (one lock). ``default_compatibility`` applies to subjects without a level of their own; it
    defaults to BACKWARD_TRANSITIVE, so that a consumer on the newest schema reads the whole topic history.
    """

    def __init__(
        self,
        *,
        default_compatibility: CompatibilityLevel | str = CompatibilityLevel.BACKWARD_TRANSITIVE,
    ) -> None:
        self.default_compatibility = CompatibilityLevel.parse(default_compatibility)
        self._lock = threading.RLock()
        self._state = _State()
        self._texts: dict[int, str] = {}  # id -> text; ids are immutable, so this never goes stale

    # -- storage hooks (LocalSchemaStore persists) ----------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_State]:
        with self._lock:
            yield self._state

    @contextlib.contextmanager
    def _writing(self) -> Iterator[_State]:
        with self._lock:
            yield self._state
            self._state.dirty = False

    # -- SchemaSource ------------------------------------------------------------------------------------

    def get_schema(self, schema_id: int) -> AvroSchema:
        """The schema with this id; SchemaNotFound when there is none. Returns a new object each call."""
        text = self._texts.get(schema_id)
        if text is None:
            with self._reading() as state:
                text = state.schemas.get(schema_id)
            if text is None:
                raise SchemaNotFound(self._unknown_id(schema_id), schema_id=schema_id)
            self._texts[schema_id] = text
        loaded: AvroSchema = json.loads(text)
        return loaded

    def register(self, subject: str, schema: AvroSchema) -> int:
        """Register ``schema`` under ``subject``; see :class:`SchemaSource`.

        Raises InvalidSchemaError for an invalid schema and IncompatibleSchemaError (with ``problems``) when
        the subject's level refuses it; nothing is stored then.
        """
        _check_subject(subject)
        validate(schema)
        print_ = fingerprint(schema)
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        with self._writing() as state:
            ids = state.subjects.get(subject, [])
            existing = state.ids.get(print_)
            if existing is not None and existing in ids:
                return existing
            level = CompatibilityLevel(state.levels.get(subject, self.default_compatibility))
            history = [json.loads(state.schemas[i]) for i in ids]
            problems = compat.check(schema, history, level)
            if problems:
                raise IncompatibleSchemaError(
                    f"schema refused for subject {subject!r} under {level.value}: {problems[0]}"
                    + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                    problems=problems,
                )
            if existing is None:
                existing = state.next_id
                state.next_id += 1
                state.schemas[existing] = text
                state.ids[print_] = existing
            state.subjects.setdefault(subject, []).append(existing)
            state.dirty = True
            return existing

    def lookup(self, subject: str, schema: AvroSchema) -> RegisteredSchema:
        """The version of ``subject`` that holds ``schema``; SchemaNotFound when none does."""
        print_ = fingerprint(schema)
        with self._reading() as state:
            schema_id = state.ids.get(print_)
            ids = state.subjects.get(subject, [])
            if schema_id is None or schema_id not in ids:
                raise SchemaNotFound(f"schema is not registered under subject {subject!r}", subject=subject)
            return self._registered(state, subject, ids.index(schema_id) + 1)

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version of ``subject``."""
        with self._reading() as state:
            return self._registered(state, subject, len(self._ids(state, subject)))

    def get_version(self, subject: str, version: int) -> RegisteredSchema:
        """Version ``version`` (from 1) of ``subject``."""
        with self._reading() as state:
            return self._registered(state, subject, version)

    def versions(self, subject: str) -> list[int]:
        """``[1, ..., n]`` for a subject with n versions."""
        with self._reading() as state:
            return list(range(1, len(self._ids(state, subject)) + 1))

    def get_compatibility(self, subject: str) -> CompatibilityLevel:
        """The subject's own level, else :attr:`default_compatibility`."""
        with self._reading() as state:
            return CompatibilityLevel(state.levels.get(subject, self.default_compatibility))

    def set_compatibility(self, subject: str, level: CompatibilityLevel | str) -> None:
        """Set the level of ``subject``; later registrations are checked against it."""
        _check_subject(subject)
        resolved = CompatibilityLevel.parse(level)
        with self._writing() as state:
            if state.levels.get(subject) != resolved.value:
                state.levels[subject] = resolved.value
                state.dirty = True

    def check_compatibility(self, subject: str, schema: AvroSchema) -> list[str]:
        """The problems :meth:`register` would refuse ``schema`` for; empty when it would be accepted."""
        validate(schema)
        with self._reading() as state:
            history = [json.loads(state.schemas[i]) for i in state.subjects.get(subject, [])]
            level = CompatibilityLevel(state.levels.get(subject, self.default_compatibility))
        if fingerprint(schema) in {fingerprint(old) for old in history}:
            return []
        return compat.check(schema, history, level)

    def subjects(self) -> list[str]:
        """Every subject with at least one version, sorted."""
        with self._reading() as state:
            return sorted(state.subjects)

    # -- helpers --------------------------------------------------------------------------------------------

    def _unknown_id(self, schema_id: int) -> str:
        if schema_id < EMBEDDED_ID_BASE:
            return (
                f"schema id {schema_id} was not issued by vatic's embedded schema store ({self._where()}); a schema "
                "registry hands out ids like it: point vatic at that registry (--schema-registry-url or "
                "VATIC_SCHEMA_REGISTRY_URL)"
            )
        return f"no schema with id {schema_id} in vatic's embedded schema store ({self._where()})"

    def _where(self) -> str:
        return "in memory"

    @staticmethod
    def _ids(state: _State, subject: str) -> list[int]:
        ids = state.subjects.get(subject)
        if not ids:
            raise SchemaNotFound(f"no subject {subject!r}", subject=subject)
        return ids

    def _registered(self, state: _State, subject: str, version: int) -> RegisteredSchema:
        ids = self._ids(state, subject)
        if not 1 <= version <= len(ids):
            raise SchemaNotFound(
                f"subject {subject!r} has no version {version} (it has 1..{len(ids)})",
                subject=subject,
                version=version,
            )
        schema_id = ids[version - 1]
        return RegisteredSchema(subject, version, schema_id, json.loads(state.schemas[schema_id]))


class LocalSchemaStore(InMemorySchemaStore):
    """The embedded schema source: ``<directory>/schemas.json``, shared by threads and processes.

    Every operation takes an ``fcntl.flock`` on ``<directory>/schemas.lock`` (shared to read, exclusive to
    change), re-reads the file if another process replaced it, and writes changes atomically (temporary file,
    fsync, rename), so two processes registering at once never lose a version or hand out one id twice. The
    lock is process-local on network filesystems without flock support: keep the directory on a local disk.
    Schemas by id are cached in memory (ids are immutable). The default level is not stored in the file: pass
    the same ``default_compatibility`` to every store that opens a directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        default_compatibility: CompatibilityLevel | str = CompatibilityLevel.BACKWARD_TRANSITIVE,
    ) -> None:
        super().__init__(default_compatibility=default_compatibility)
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the schema store directory {self.directory}: {exc}") from exc
        self.path = self.directory / "schemas.json"
        self._lock_path = self.directory / "schemas.lock"
        self._seen: bytes | None = None  # the file's bytes when last read or written

    @contextlib.contextmanager
    def _flocked(self, mode: int) -> Iterator[_State]:
        with self._lock:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, mode)
                self._reload()
                yield self._state
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_State]:
        with self._flocked(fcntl.LOCK_SH) as state:
            yield state

    @contextlib.contextmanager
    def _writing(self) -> Iterator[_State]:
        with self._flocked(fcntl.LOCK_EX) as state:
            try:
                yield state
            except BaseException:
                self._seen = None  # memory may be half-changed: re-read the file next time
                raise
            if state.dirty:
                self._save(state)
                state.dirty = False

    def _where(self) -> str:
        return str(self.path)

    def _reload(self) -> None:
        """Re-read the file when its bytes changed (cheap: compares raw bytes, parses only on change)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._state, self._seen = _State(), None
            return
        if raw == self._seen:
            return
        try:
            self._state = _State.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"schema store {self.path} is corrupt: {exc}") from exc
        self._seen = raw

    def _save(self, state: _State) -> None:
        data = json.dumps(state.to_json(), indent=1, ensure_ascii=False).encode()
        fd, tmp = tempfile.mkstemp(prefix=".schemas.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._seen = data


def _check_subject(subject: str) -> None:
    if not subject or not subject.strip():
        raise ConfigError("a subject name must not be empty")
