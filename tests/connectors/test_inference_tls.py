"""The V2 client against a real model server over TLS (the full-custom tier, served as it is deployed with
``VATIC_MODEL_TLS_CERT_FILE``/``_KEY_FILE``), with certificates made in the test: a server signed by the CA
the client trusts answers; one the client cannot verify is ``ModelServerUntrusted``, a configuration error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.pki import CA
from tests.serving.gateway.tls_model import TlsModelServer
from vatic.connectors.inference import Datatype, InferenceClient, InferenceRequest, Tensor, tls_context
from vatic.schemas.errors import ConfigError, ModelServerUnavailable, ModelServerUntrusted

ROWS = Tensor("input-0", Datatype.FP64, (2, 4), [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, CA]:
    root = tmp_path_factory.mktemp("pki")
    return CA(root / "trusted"), CA(root / "rogue", "rogue CA")


@pytest.fixture(scope="module")
def server(pki: tuple[CA, CA], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsModelServer]:
    ca, _ = pki
    srv = TlsModelServer(tmp_path_factory.mktemp("model"), ca.issue("model-server", server=True), ca.cert_file)
    yield srv
    srv.stop()


def infer(url: str, **options: object) -> list[int]:
    async def go() -> list[int]:
        async with InferenceClient(url, deadline_s=10.0, **options) as client:  # type: ignore[arg-type]
            response = await client.infer("iris", InferenceRequest(inputs=(ROWS,)))
            return [row["predict"] for row in response.split(2)]

    return asyncio.run(go())


def test_an_https_server_signed_by_the_trusted_ca_answers(server: TlsModelServer, pki: tuple[CA, CA]) -> None:
    assert server.url.startswith("https://")
    assert infer(server.url, verify=tls_context(pki[0].cert_file)) == [0, 2]


def test_a_server_the_ca_file_does_not_trust_is_a_config_error_naming_the_server(
    server: TlsModelServer, pki: tuple[CA, CA]
) -> None:
    with pytest.raises(ModelServerUntrusted) as caught:
        infer(server.url, verify=tls_context(pki[1].cert_file))
    assert isinstance(caught.value, ConfigError)  # not retried: retrying cannot make the server trusted
    assert caught.value.url == server.url
    assert "does not verify" in caught.value.message
    assert "VATIC_GATEWAY_MODEL_CA_FILE" in caught.value.message


def test_without_a_ca_file_the_system_cas_decide(server: TlsModelServer) -> None:
    """The test CA is in no system store: the default client refuses the server."""
    with pytest.raises(ModelServerUntrusted):
        infer(server.url)


def test_a_certificate_for_another_host_does_not_verify(pki: tuple[CA, CA], tmp_path: Path) -> None:
    """Signed by the trusted CA, but for model.internal only: the client reaching 127.0.0.1 refuses it."""
    ca = pki[0]
    srv = TlsModelServer(tmp_path, ca.issue("elsewhere", server=True, hosts=("model.internal",)), None)
    try:
        with pytest.raises(ModelServerUntrusted) as caught:
            infer(srv.url, verify=tls_context(ca.cert_file))
        assert "mismatch" in caught.value.message or "match" in caught.value.message
    finally:
        srv.stop()


def test_a_plain_http_client_of_a_tls_server_is_an_outage_not_a_trust_error(server: TlsModelServer) -> None:
    """http:// to a TLS port: the server drops the connection; that is no certificate problem."""
    with pytest.raises(ModelServerUnavailable):
        infer(server.url.replace("https://", "http://"))


def test_a_ca_file_that_is_not_a_ca_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    for path in (bad, tmp_path / "absent.pem"):
        with pytest.raises(ConfigError) as caught:
            tls_context(path)
        assert str(path) in caught.value.message
        assert "\n" not in caught.value.message


def test_the_custom_tier_refuses_a_certificate_without_its_key(pki: tuple[CA, CA], tmp_path: Path) -> None:
    pair = pki[0].issue("lonely", server=True)
    for env in ({"VATIC_MODEL_TLS_CERT_FILE": str(pair.cert)}, {"VATIC_MODEL_TLS_KEY_FILE": str(pair.key)}):
        done = subprocess.run(
            [sys.executable, "-m", "vatic.serving.runtimes.custom", "nowhere:app"],
            env={**env, "PYTHONPATH": ":".join(sys.path)}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert "set both or neither" in done.stderr
