"""Redis AUTH (password, ACL user) and TLS for the FeatureClient, against REAL redis-servers of this module.

What is tested against what:

* ``auth``: Debian's ``redis-server`` (plaintext) with ``requirepass`` and two ACL users: ``reader`` (may read)
  and ``pinger`` (may only ping);
* ``tls``: a second ``redis-server`` with ``port 0`` and a ``tls-port`` only, a certificate for ``localhost``
  signed by a CA generated in this test (``cryptography``), ``tls-auth-clients no``, and ``requirepass``.

Features are written by Feast itself (``materialize``) through :func:`secure_feature_store`, so the write path
authenticates too; they are read through both read paths (``direct``: our reader; ``feast``: Feast's SDK with
our clients), blocking and async. Settings come from the environment (``VATIC_REDIS_*``), as in production.
Every failure test also checks that the password is neither in the error, its chain, nor the captured logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from feast.infra.online_stores.redis import RedisOnlineStoreConfig

from tests.fixtures.feast_repo import FEATURES, build_repo
from tests.fixtures.leaks import assert_absent, chain_text
from tests.fixtures.pki import Pki, make_pki
from vatic.connectors.features import FeatureClient
from vatic.connectors.features.redis_security import RedisSecurity, redis_connection
from vatic.schemas.errors import (
    ConfigError,
    CredentialsRejected,
    FeatureStoreUnavailable,
    UntrustedCertificate,
)

PASSWORD = "s3cret-Adm1n-pw"
READER_PASSWORD = "r3ader-pw-9f2"
WRONG = "not-the-Password-7"
SECRETS = (PASSWORD, READER_PASSWORD, WRONG)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A redis-server of this module, configured by a file (so no password is on its command line)."""

    def __init__(self, folder: Path, lines: list[str], *, port: int, tls: Pki | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        conf = folder / "redis.conf"
        conf.write_text("\n".join(["bind 127.0.0.1", 'save ""', "appendonly no", f"dir {folder}", *lines]) + "\n")
        self.log = folder / "redis.log"
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        probe = redis.Redis(
            host="localhost",
            port=port,
            password=PASSWORD,
            socket_timeout=1,
            **(dict(ssl=True, ssl_ca_certs=str(tls.ca), ssl_check_hostname=True) if tls else {}),
        )
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if probe.ping():
                    probe.close()
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), dns_names=("localhost",))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[dict[str, Server]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    acl = [
        f"requirepass {PASSWORD}",
        f"user reader on >{READER_PASSWORD} ~* +@read +@connection",
        f"user pinger on >{READER_PASSWORD} ~* +@connection",
    ]
    root = tmp_path_factory.mktemp("redis")
    auth_port = _free_port()
    auth = Server(root / "auth", [f"port {auth_port}", *acl], port=auth_port)
    tls_port = _free_port()
    tls_lines = [
        "port 0",
        f"tls-port {tls_port}",
        f"tls-cert-file {pki.cert}",
        f"tls-key-file {pki.key}",
        f"tls-ca-cert-file {pki.ca}",
        "tls-auth-clients no",
        f"requirepass {PASSWORD}",
    ]
    try:
        tls = Server(root / "tls", tls_lines, port=tls_port, tls=pki)
    except Exception:
        auth.stop()
        raise
    yield {"auth": auth, "tls": tls}
    auth.stop()
    tls.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, Server], pki: Pki) -> Path:
    """A Feast repo (registry + SQLite store), materialized by Feast into both servers through our clients."""
    root = build_repo(tmp_path_factory.mktemp("feast") / "repo", customers=5)
    now = datetime.now(UTC)
    writers = [
        (f"redis://localhost:{servers['auth'].port}/0", RedisSecurity(password=PASSWORD)),
        (f"rediss://localhost:{servers['tls'].port}/0", RedisSecurity(password=PASSWORD, ca_file=pki.ca)),
    ]
    for url, security in writers:
        with FeatureClient.from_repo(root, redis_url=url, redis_security=security) as writer:
            writer.feature_store.materialize(start_date=now - timedelta(days=10), end_date=now + timedelta(minutes=1))
    return root


@pytest.fixture(params=["direct", "feast"])
def read_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VATIC_REDIS_PASSWORD", "VATIC_REDIS_USERNAME", "VATIC_REDIS_CA_FILE"):
        monkeypatch.delenv(name, raising=False)


def _read_both(client: FeatureClient) -> list[Any]:
    """c1's features, read blocking and async (the async client is another connection)."""

    async def read_async() -> Any:
        try:
            return await client.get([{"customer_id": "c1"}], FEATURES)
        finally:
            await client.aclose()

    with client:
        return [client.get_sync([{"customer_id": "c1"}], FEATURES), asyncio.run(read_async())]


def _errors(client: FeatureClient) -> list[BaseException]:
    """The errors of a blocking and an async read of c1."""
    caught: list[BaseException] = []

    async def read_async() -> None:
        try:
            await client.get([{"customer_id": "c1"}], FEATURES, deadline_s=5)
        finally:
            await client.aclose()

    with client:
        for read in (
            lambda: client.get_sync([{"customer_id": "c1"}], FEATURES, deadline_s=5),
            lambda: asyncio.run(read_async()),
        ):
            with pytest.raises(ConfigError) as info:
                read()
            caught.append(info.value)
    return caught


# --- reads over AUTH and TLS ---------------------------------------------------------------------------------


def test_reads_over_auth_and_tls(
    repo: Path, servers: dict[str, Server], pki: Pki, read_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VATIC_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("VATIC_REDIS_CA_FILE", str(pki.ca))
    url = f"rediss://localhost:{servers['tls'].port}/0"
    client = FeatureClient.from_repo(repo, redis_url=url, read_path=read_path, deadline_s=5)  # type: ignore[arg-type]
    assert client.source == ("redis" if read_path == "direct" else "feast-sdk")
    for lookup in _read_both(client):
        assert lookup[0].values == {"customer_stats:orders_7d": 1, "customer_stats:avg_amount": 1.5}
        assert lookup[0].complete


def test_the_ca_file_alone_turns_tls_on(
    repo: Path, servers: dict[str, Server], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VATIC_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("VATIC_REDIS_CA_FILE", str(pki.ca))
    client = FeatureClient.from_repo(repo, redis_url=f"redis://localhost:{servers['tls'].port}/0", deadline_s=5)
    for lookup in _read_both(client):
        assert lookup[0].values["customer_stats:orders_7d"] == 1


def test_reads_as_an_acl_user(
    repo: Path, servers: dict[str, Server], read_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VATIC_REDIS_USERNAME", "reader")
    monkeypatch.setenv("VATIC_REDIS_PASSWORD", READER_PASSWORD)
    url = f"redis://localhost:{servers['auth'].port}/0"
    client = FeatureClient.from_repo(repo, redis_url=url, read_path=read_path, deadline_s=5)  # type: ignore[arg-type]
    for lookup in _read_both(client):
        assert lookup[0].values["customer_stats:avg_amount"] == 1.5


# --- credentials refused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"VATIC_REDIS_PASSWORD": WRONG}, "refused the credentials of user 'default': check VATIC_REDIS_PASSWORD"),
        (
            {"VATIC_REDIS_USERNAME": "reader", "VATIC_REDIS_PASSWORD": WRONG},
            "refused the credentials of user 'reader'",
        ),
        ({}, "requires authentication and no password was set: set VATIC_REDIS_PASSWORD"),
        (
            {"VATIC_REDIS_USERNAME": "pinger", "VATIC_REDIS_PASSWORD": READER_PASSWORD},
            "ACL user 'pinger' may not read the feature keys",
        ),
    ],
    ids=["wrong-password", "wrong-user-password", "no-password", "no-permission"],
)
def test_refused_credentials(
    repo: Path,
    servers: dict[str, Server],
    read_path: str,
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = servers["auth"].port
    client = FeatureClient.from_repo(repo, redis_url=f"redis://localhost:{port}/0", read_path=read_path)  # type: ignore[arg-type]
    for err in _errors(client):
        assert type(err) is CredentialsRejected
        assert err.service == "redis"
        assert err.endpoint == f"localhost:{port}"
        assert err.stage == "enrich"
        assert str(err).startswith(f"redis at localhost:{port}")
        assert expected in str(err)
        assert_absent(SECRETS, chain_text(err))
    assert_absent(SECRETS, caplog.text)


def test_a_password_for_a_server_without_one(
    repo: Path, tmp_path: Path, read_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    server = Server(tmp_path / "open", [f"port {port}", f"requirepass {PASSWORD}"], port=port)
    try:
        redis.Redis(port=port, password=PASSWORD).config_set("requirepass", "")
        monkeypatch.setenv("VATIC_REDIS_PASSWORD", WRONG)
        client = FeatureClient.from_repo(repo, redis_url=f"redis://localhost:{port}/0", read_path=read_path)  # type: ignore[arg-type]
        for err in _errors(client):
            assert type(err) is CredentialsRejected
            assert "has no password configured for user 'default', but VATIC_REDIS_PASSWORD is set" in str(err)
            assert_absent(SECRETS, chain_text(err))
    finally:
        server.stop()


# --- certificates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ca", "reason"),
    [
        ("localhost", "other_ca", "self-signed certificate in certificate chain"),  # redis sends its CA too
        ("127.0.0.1", "ca", "IP address mismatch"),
    ],
    ids=["untrusted-ca", "wrong-host-name"],
)
def test_untrusted_server_certificate(
    repo: Path,
    servers: dict[str, Server],
    pki: Pki,
    read_path: str,
    host: str,
    ca: str,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ca_file = getattr(pki, ca)
    monkeypatch.setenv("VATIC_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("VATIC_REDIS_CA_FILE", str(ca_file))
    port = servers["tls"].port
    client = FeatureClient.from_repo(repo, redis_url=f"rediss://{host}:{port}/0", read_path=read_path)  # type: ignore[arg-type]
    for err in _errors(client):
        assert type(err) is UntrustedCertificate
        assert err.endpoint == f"{host}:{port}"
        message = str(err)
        assert f"redis at {host}:{port} presented a TLS certificate that does not verify against" in message
        assert f"VATIC_REDIS_CA_FILE={ca_file.resolve()}" in message
        assert reason in message
        assert_absent(SECRETS, chain_text(err))
    assert_absent(SECRETS, caplog.text)


@pytest.mark.parametrize("tls_client", [True, False], ids=["tls-to-plaintext", "plaintext-to-tls"])
def test_a_tls_mismatch_is_an_outage_and_leaks_nothing(
    repo: Path, servers: dict[str, Server], pki: Pki, tls_client: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither side of a TLS/plaintext mismatch says so: a plaintext Redis waits for a command line in the TLS
    ClientHello (the handshake times out), a TLS Redis closes the connection. Both look like an outage, so
    they stay retryable ``FeatureStoreUnavailable`` (the job retries, then fails loudly)."""
    monkeypatch.setenv("VATIC_REDIS_PASSWORD", PASSWORD)
    if tls_client:
        monkeypatch.setenv("VATIC_REDIS_CA_FILE", str(pki.ca))
    port = servers["auth" if tls_client else "tls"].port
    client = FeatureClient.from_repo(repo, redis_url=f"redis://localhost:{port}/0", store_timeout_s=0.5)
    with client, pytest.raises(FeatureStoreUnavailable) as info:
        client.get_sync([{"customer_id": "c1"}], FEATURES, deadline_s=5)
    assert_absent(SECRETS, chain_text(info.value))


# --- settings that are refused before any connection -------------------------------------------------------


def test_a_password_in_the_url_is_refused_without_echoing_it(repo: Path) -> None:
    for url in (f"redis://:{PASSWORD}@localhost:6379/0", f"rediss://admin:{PASSWORD}@localhost:6379/0"):
        with pytest.raises(ConfigError, match=r"carries credentials: .* set VATIC_REDIS_PASSWORD") as info:
            FeatureClient.from_repo(repo, redis_url=url)
        assert_absent(SECRETS, chain_text(info.value))


def test_settings_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(connection_string: str) -> None:
        redis_connection(RedisOnlineStoreConfig(connection_string=connection_string))

    monkeypatch.setenv("VATIC_REDIS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"VATIC_REDIS_CA_FILE=.*missing\.pem is not a readable file"):
        connect("localhost:6379")
    monkeypatch.delenv("VATIC_REDIS_CA_FILE")
    monkeypatch.setenv("VATIC_REDIS_USERNAME", "reader")
    with pytest.raises(ConfigError, match="VATIC_REDIS_USERNAME is set without VATIC_REDIS_PASSWORD"):
        connect("localhost:6379")
    monkeypatch.delenv("VATIC_REDIS_USERNAME")
    with pytest.raises(ConfigError, match="ssl_cert_reqs=none; vatic always verifies"):
        connect("localhost:6379,ssl=true,ssl_cert_reqs=none")
    with pytest.raises(ConfigError, match="turns ssl_check_hostname off"):
        connect("localhost:6379,ssl=true,ssl_check_hostname=false")
    with pytest.raises(ConfigError, match="names no host:port") as info:
        connect(f"db=0,password={PASSWORD}")
    assert_absent(SECRETS, str(info.value))


def test_the_password_is_in_no_repr(
    repo: Path, servers: dict[str, Server], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VATIC_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("VATIC_REDIS_CA_FILE", str(pki.ca))
    security = RedisSecurity()
    assert security.password is not None
    assert security.password.get_secret_value() == PASSWORD
    url = f"rediss://localhost:{servers['tls'].port}/0"
    with FeatureClient.from_repo(repo, redis_url=url) as client:
        connection = redis_connection(client.feature_store.config.online_store)
        assert connection.tls
        assert connection.authenticated
        assert connection.ca_file == str(pki.ca.resolve())
        assert_absent(
            SECRETS,
            repr(security),
            str(security.model_dump()),
            repr(connection),
            repr(client.feature_store.config),
            client.feature_store.config.online_store.connection_string,
        )


# --- the local stack's Redis in secure mode (what `vatic stack up --secure` starts) ------------------------------


def test_the_stack_redis_serves_tls_with_a_password(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vatic.cli.stack.components import Redis, RedisTls
    from vatic.cli.stack.settings import StackSettings

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: apt-get install -y redis-server")
    pki = make_pki(tmp_path / "pki", dns_names=(), ips=("127.0.0.1",))
    settings = StackSettings(home=tmp_path / "home", redis_port=_free_port(), start_timeout_s=30)
    component = Redis(settings, secure=RedisTls(PASSWORD, pki.cert, pki.key, pki.ca))
    assert_absent(SECRETS, " ".join(component.argv()), repr(component.secure), component.describe())
    assert component.start()
    try:
        assert component.secure_config.stat().st_mode & 0o077 == 0  # the password file is the owner's only
        assert component.url == f"rediss://127.0.0.1:{settings.redis_port}/0"
        assert component.health().state == "up"
        for name, value in component.client_env().items():
            monkeypatch.setenv(name, value)
        with FeatureClient.from_repo(repo, redis_url=component.url, deadline_s=5) as writer:
            now = datetime.now(UTC)
            writer.feature_store.materialize(start_date=now - timedelta(days=10), end_date=now + timedelta(minutes=1))
        for lookup in _read_both(FeatureClient.from_repo(repo, redis_url=component.url, deadline_s=5)):
            assert lookup[0].values["customer_stats:orders_7d"] == 1
        # the plaintext port is closed: TLS only
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=settings.redis_port, password=PASSWORD, socket_timeout=2).ping()
    finally:
        component.stop()
