"""Schema registry credentials (HTTP basic auth) and TLS: our client and confluent-kafka's, against one real door.

What is tested against what: Apicurio's own authentication needs an OIDC server, which cannot run here. So the
door is a real HTTPS server of this module (uvicorn, a certificate for ``localhost`` signed by a CA generated
here with ``cryptography``) that checks basic auth like Confluent Schema Registry's ``BASIC`` authenticator
(401 + ``WWW-Authenticate`` without or with wrong credentials; 403 for a read-only user that writes) and
forwards every authorized request to the REAL registry of the local stack (Apicurio 3, Confluent API). Our
:class:`ConfluentSchemaRegistry`, configured from ``VATIC_SCHEMA_REGISTRY_*``, and confluent-kafka's own
``SchemaRegistryClient`` (``basic.auth.user.info``, ``ssl.ca.location``) talk to that door with the same
credentials: the outside party must accept what we accept and refuse what we refuse, and both must see the
same schema ids as the registry itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.fixtures.leaks import assert_absent, chain_text
from tests.fixtures.model_server import free_port
from tests.fixtures.pki import Pki, make_pki
from vatic.connectors.schema_registry import ConfluentSchemaRegistry, RegistryCredentials, schema_source
from vatic.schemas.canonical import canonical_json
from vatic.schemas.errors import ConfigError, CredentialsRejected, UntrustedCertificate

pytestmark = pytest.mark.stack

WRITER, WRITER_PASSWORD = "writer", "Wr1ter-s3cret"
READER, READER_PASSWORD = "reader", "Re4der-s3cret"
WRONG = "wr0ng-Passw0rd"
USERS = {WRITER: WRITER_PASSWORD, READER: READER_PASSWORD}
SECRETS = (WRITER_PASSWORD, READER_PASSWORD, WRONG)
ENV = ("VATIC_SCHEMA_REGISTRY_USERNAME", "VATIC_SCHEMA_REGISTRY_PASSWORD", "VATIC_SCHEMA_REGISTRY_CA_FILE")


class BasicAuthDoor:
    """ASGI app: basic auth in front of ``upstream`` (a Confluent-compatible API root); forwards the rest."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[str | None] = []  # the user of every request (None: no or bad credentials)

    @staticmethod
    def _user(headers: dict[bytes, bytes]) -> str | None:
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if USERS.get(user) == password else None

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        user = self._user(headers)
        self.seen.append(user)
        if user is None:
            await self._answer(send, 401, {"error_code": 40101, "message": "Unauthorized"}, realm=True)
            return
        if user == READER and scope["method"] != "GET":
            await self._answer(send, 403, {"error_code": 40301, "message": "User is denied operation"})
            return
        url = self.upstream + scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        forwarded = {k.decode(): v.decode() for k, v in headers.items() if k in (b"content-type", b"accept")}
        async with httpx.AsyncClient() as upstream:
            answer = await upstream.request(scope["method"], url, content=body, headers=forwarded)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [(b"content-type", answer.headers.get("content-type", "application/json").encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer.content})

    @staticmethod
    async def _answer(send: Callable[..., Any], status: int, payload: dict[str, Any], realm: bool = False) -> None:
        headers = [(b"content-type", b"application/vnd.schemaregistry.v1+json")]
        if realm:
            headers.append((b"www-authenticate", b'Basic realm="SchemaRegistry"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), dns_names=("localhost",))


@pytest.fixture(scope="module")
def door(registry_url: str, pki: Pki) -> Iterator[tuple[BasicAuthDoor, int]]:
    """The HTTPS basic-auth door in a thread: ``(app, port)``."""
    app = BasicAuthDoor(registry_url)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.key),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,  # keep-alive connections of the clients would hold the shutdown for 30 s
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield app, port
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def subject(registry_url: str) -> Iterator[str]:
    """A unique subject, deleted (soft, then permanently) from the real registry afterwards."""
    name = f"vatic-sec-{uuid.uuid4().hex[:10]}-value"
    yield name
    with httpx.Client(base_url=registry_url) as direct:
        direct.delete(f"/subjects/{name}")
        direct.delete(f"/subjects/{name}", params={"permanent": "true"})


def _env(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None, ca: Path | None) -> None:
    for name, value in zip(ENV, (user, password, ca), strict=True):
        if value is not None:
            monkeypatch.setenv(name, str(value))


def _schema(tag: str) -> dict[str, Any]:
    return {
        "type": "record",
        "name": f"Sec{tag}",
        "namespace": "dev.vatic.test",
        "fields": [{"name": "id", "type": "string"}],
    }


def _confluent(port: int, pki: Pki, user_info: str | None, host: str = "localhost") -> SchemaRegistryClient:
    conf = {"url": f"https://{host}:{port}", "ssl.ca.location": str(pki.ca), "max.retries": 0}
    if user_info is not None:
        conf["basic.auth.user.info"] = user_info
    return SchemaRegistryClient(conf)


# --- both clients agree, with the registry, through the door -------------------------------------------------------


def test_both_clients_register_and_read_through_the_door(
    door: tuple[BasicAuthDoor, int], pki: Pki, registry_url: str, subject: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = door
    _env(monkeypatch, WRITER, WRITER_PASSWORD, pki.ca)
    before = len(app.seen)
    with ConfluentSchemaRegistry(f"https://localhost:{port}") as ours:
        schema_id = ours.register(subject, _schema("A"))
        assert ours.latest(subject).schema_id == schema_id
        assert ours.get_compatibility(subject)
    assert app.seen[before:]
    assert set(app.seen[before:]) == {WRITER}  # every request authenticated as the writer

    # the registry itself holds what went through the door
    with ConfluentSchemaRegistry(registry_url, credentials=RegistryCredentials(username=None, password=None)) as direct:
        assert direct.latest(subject).schema_id == schema_id

    theirs = _confluent(port, pki, f"{WRITER}:{WRITER_PASSWORD}")
    assert json.loads(theirs.get_schema(schema_id).schema_str) == json.loads(canonical_json(_schema("A")))
    assert theirs.get_latest_version(subject).schema_id == schema_id
    second = theirs.register_schema(subject, Schema(json.dumps(_schema("B")), "AVRO"))
    with ConfluentSchemaRegistry(f"https://localhost:{port}") as ours:
        assert ours.latest(subject).schema_id == second
        assert ours.versions(subject) == [1, 2]


def test_the_job_and_the_cli_get_the_credentials_from_the_environment(
    door: tuple[BasicAuthDoor, int], pki: Pki, subject: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``schema_source`` (what the job, the CLI and the demo open) reads ``VATIC_SCHEMA_REGISTRY_*``."""
    _, port = door
    _env(monkeypatch, READER, READER_PASSWORD, pki.ca)
    source = schema_source(f"https://localhost:{port}", None)
    assert isinstance(source, ConfluentSchemaRegistry)
    with source, pytest.raises(CredentialsRejected, match="forbids user 'reader' to POST"):
        source.register(subject, _schema("C"))


# --- refusals: the same on both sides -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password", "expected", "status"),
    [
        (
            WRITER,
            WRONG,
            "refused the credentials of user 'writer' (HTTP 401 on POST /subjects/",
            401,
        ),
        (
            None,
            None,
            "requires credentials (HTTP 401 on POST /subjects/",
            401,
        ),
        (
            READER,
            READER_PASSWORD,
            "forbids user 'reader' to POST /subjects/",
            403,
        ),
    ],
    ids=["wrong-password", "no-credentials", "read-only-user"],
)
def test_refused_credentials(
    door: tuple[BasicAuthDoor, int],
    pki: Pki,
    subject: str,
    user: str | None,
    password: str | None,
    expected: str,
    status: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, port = door
    _env(monkeypatch, user, password, pki.ca)
    url = f"https://localhost:{port}"
    with ConfluentSchemaRegistry(url) as ours, pytest.raises(CredentialsRejected) as info:
        ours.register(subject, _schema("D"))
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.service == "schema-registry"
    assert err.endpoint == url
    assert str(err).startswith(f"schema registry {url} ")
    assert expected in str(err)
    assert "VATIC_SCHEMA_REGISTRY_USERNAME and VATIC_SCHEMA_REGISTRY_PASSWORD" in str(err)
    assert_absent(SECRETS, chain_text(err), caplog.text, repr(RegistryCredentials()))

    theirs = _confluent(port, pki, f"{user}:{password}" if user else None)
    with pytest.raises(SchemaRegistryError) as refused:
        theirs.register_schema(subject, Schema(json.dumps(_schema("D")), "AVRO"))
    assert refused.value.http_status_code == status


@pytest.mark.parametrize(
    ("host", "ca", "reason"),
    [
        ("localhost", "other_ca", "unable to get local issuer certificate"),
        ("127.0.0.1", "ca", "IP address mismatch"),
    ],
    ids=["untrusted-ca", "wrong-host-name"],
)
def test_untrusted_registry_certificate(
    door: tuple[BasicAuthDoor, int],
    pki: Pki,
    host: str,
    ca: str,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, port = door
    ca_file: Path = getattr(pki, ca)
    _env(monkeypatch, WRITER, WRITER_PASSWORD, ca_file)
    url = f"https://{host}:{port}"
    with ConfluentSchemaRegistry(url) as ours, pytest.raises(UntrustedCertificate) as info:
        ours.get_schema(1)
    message = str(info.value)
    assert message.startswith(f"schema registry {url} presented a TLS certificate that does not verify against ")
    assert f"VATIC_SCHEMA_REGISTRY_CA_FILE={ca_file.resolve()}" in message
    assert reason in message
    assert_absent(SECRETS, chain_text(info.value))

    theirs = SchemaRegistryClient({"url": url, "ssl.ca.location": str(ca_file), "max.retries": 0})
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED") as theirs_info:
        theirs.get_schema(1)
    assert type(theirs_info.value).__name__ == "ConnectError"


# --- settings refused before any request ------------------------------------------------------------------------


def test_settings_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (f"https://{WRITER}:{WRITER_PASSWORD}@localhost:1/", f"http://:{WRONG}@registry:8081"):
        with pytest.raises(ConfigError, match=r"carries credentials: .* set VATIC_SCHEMA_REGISTRY_USERNAME") as info:
            ConfluentSchemaRegistry(url)
        assert_absent(SECRETS, chain_text(info.value))
    _env(monkeypatch, WRITER, None, None)
    with pytest.raises(
        ConfigError, match="VATIC_SCHEMA_REGISTRY_USERNAME is set without VATIC_SCHEMA_REGISTRY_PASSWORD"
    ):
        ConfluentSchemaRegistry("https://localhost:1")
    monkeypatch.delenv("VATIC_SCHEMA_REGISTRY_USERNAME")
    _env(monkeypatch, None, WRONG, None)
    with pytest.raises(
        ConfigError, match="VATIC_SCHEMA_REGISTRY_PASSWORD is set without VATIC_SCHEMA_REGISTRY_USERNAME"
    ):
        ConfluentSchemaRegistry("https://localhost:1")
    monkeypatch.delenv("VATIC_SCHEMA_REGISTRY_PASSWORD")
    _env(monkeypatch, None, None, tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"VATIC_SCHEMA_REGISTRY_CA_FILE=.*missing\.pem is not a readable file"):
        ConfluentSchemaRegistry("https://localhost:1")
