"""What the gateway refuses to start with (one line, naming the setting and what to fix, never a secret), and
bearer JWTs: signed by the configured key, for the configured audience, naming the services they may call."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from tests.fixtures.pki import CA
from tests.serving.gateway.test_gateway import iris_service
from vatic.schemas.errors import ConfigError
from vatic.serving.gateway import GatewaySettings, create_app
from vatic.serving.gateway.auth import Authenticator

TOKEN = "a-client-token-that-must-never-be-echoed"
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()


def run_gateway(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``vatic gateway`` as an operator starts it; it must stop before serving."""
    service = iris_service(tmp_path / "iris")
    return subprocess.run(
        [sys.executable, "-m", "vatic.cli.main", "gateway", "--service", str(service), "--port", "1"],
        env={"PYTHONPATH": ":".join(filter(None, sys.path)), "PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("vatic: ")
    for text in expected:
        assert text in done.stderr, done.stderr
    assert TOKEN not in done.stderr


# --- TLS settings -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("pki"))


def test_a_certificate_without_its_key_stops_the_gateway_in_one_line(ca: CA, tmp_path: Path) -> None:
    pair = ca.issue("gw", server=True)
    done = run_gateway(tmp_path, {"VATIC_GATEWAY_TLS_CERT_FILE": str(pair.cert)})
    assert_one_line(done, "VATIC_GATEWAY_TLS_CERT_FILE is set without VATIC_GATEWAY_TLS_KEY_FILE")
    done = run_gateway(tmp_path, {"VATIC_GATEWAY_TLS_KEY_FILE": str(pair.key)})
    assert_one_line(done, "VATIC_GATEWAY_TLS_KEY_FILE is set without VATIC_GATEWAY_TLS_CERT_FILE")


@pytest.mark.parametrize("problem", ["client CA without TLS", "key of another certificate", "absent file", "bad CA"])
def test_tls_files_that_cannot_serve_are_one_config_error(ca: CA, tmp_path: Path, problem: str) -> None:
    pair, other = ca.issue("gw", server=True), ca.issue("gw2", server=True)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    settings: dict[str, Any] = {
        "client CA without TLS": {"tls_client_ca_file": ca.cert_file},
        "key of another certificate": {"tls_cert_file": pair.cert, "tls_key_file": other.key},
        "absent file": {"tls_cert_file": tmp_path / "absent.pem", "tls_key_file": pair.key},
        "bad CA": {"tls_cert_file": pair.cert, "tls_key_file": pair.key, "tls_client_ca_file": junk},
    }[problem]
    with pytest.raises(ConfigError) as caught:
        GatewaySettings(**settings).uvicorn_tls()
    assert "\n" not in caught.value.message
    assert "VATIC_GATEWAY_TLS_" in caught.value.message


def test_uvicorn_gets_client_certificates_required_with_a_client_ca(ca: CA) -> None:
    import ssl

    pair = ca.issue("gw", server=True)
    plain = GatewaySettings().uvicorn_tls()
    tls = GatewaySettings(tls_cert_file=pair.cert, tls_key_file=pair.key).uvicorn_tls()
    mutual = GatewaySettings(tls_cert_file=pair.cert, tls_key_file=pair.key, tls_client_ca_file=ca.cert_file)
    assert plain == {}
    assert tls == {"ssl_certfile": str(pair.cert), "ssl_keyfile": str(pair.key)}
    assert mutual.uvicorn_tls()["ssl_cert_reqs"] == ssl.CERT_REQUIRED


# --- the clients file ---------------------------------------------------------------------------------------------


def entry(**overrides: Any) -> dict[str, Any]:
    return {"name": "checkout", "token_sha256": DIGEST, "services": ["iris"], **overrides}


BAD_FILES: dict[str, tuple[Any, str]] = {
    "not YAML": ("clients: [\n  - name: x\n  services: ]", "not YAML at line"),
    "no clients": ({"client": [entry()]}, "clients"),
    "empty": ({"clients": []}, "clients"),
    "a token where its digest belongs": ({"clients": [entry(token_sha256=TOKEN)]}, "clients[0].token_sha256"),
    "no services": ({"clients": [entry(services=[])]}, "clients[0].services"),
    "unknown key": ({"clients": [entry(token=TOKEN)]}, "clients[0].token"),
    "a negative rate": ({"clients": [entry(rate_limit={"requests_per_s": -1})]}, "rate_limit.requests_per_s"),
    "a name twice": ({"clients": [entry(), entry(token_sha256="0" * 64)]}, "clients[1].name"),
    "a token twice": ({"clients": [entry(), entry(name="other")]}, "clients[1].token_sha256"),
    "the reserved name": ({"clients": [entry(name="shared-token")]}, "clients[0].name"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_malformed_clients_file_is_one_line_naming_the_entry(tmp_path: Path, case: str) -> None:
    document, where = BAD_FILES[case]
    path = tmp_path / "clients.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        Authenticator.from_settings(GatewaySettings(clients_file=path))
    message = caught.value.message
    assert "\n" not in message
    assert f"VATIC_GATEWAY_CLIENTS_FILE={path}" in message
    assert where in message
    assert TOKEN not in message


def test_a_missing_clients_file_and_a_token_shared_with_a_client_stop_the_command(tmp_path: Path) -> None:
    done = run_gateway(tmp_path, {"VATIC_GATEWAY_CLIENTS_FILE": str(tmp_path / "absent.yaml")})
    assert_one_line(done, "absent.yaml", "mount the clients Secret there")
    clients = tmp_path / "clients.yaml"
    clients.write_text(yaml.safe_dump({"clients": [entry()]}))
    done = run_gateway(tmp_path, {"VATIC_GATEWAY_CLIENTS_FILE": str(clients), "VATIC_GATEWAY_AUTH_TOKEN": TOKEN})
    assert_one_line(done, "a client's token is the shared token")


# --- bearer JWTs --------------------------------------------------------------------------------------------------

AUDIENCE = "vatic-gateway"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path_factory.mktemp("jwt") / "jwt.pub"
    public.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def token(private: Any, *, algorithm: str = "ES256", **claims: Any) -> str:
    now = datetime.datetime.now(datetime.UTC)
    body = {"sub": "batch-scorer", "aud": AUDIENCE, "exp": now + datetime.timedelta(minutes=5), **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, private, algorithm=algorithm)


@pytest.fixture(scope="module")
def jwt_app(keys: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = GatewaySettings(
        services=[iris_service(tmp_path_factory.mktemp("jwt-service") / "iris")],
        jwt_key_file=keys[1],
        jwt_audience=AUDIENCE,
        jwt_algorithms=["ES256"],
        log_requests=False,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_jwt_for_the_audience_names_the_services_it_may_call(jwt_app: Any, keys: tuple[Any, Path]) -> None:
    allowed = {"Authorization": f"Bearer {token(keys[0], services=['iris'])}"}
    assert jwt_app.get("/v1/services/iris", headers=allowed).status_code == 200
    everything = {"Authorization": f"Bearer {token(keys[0], services='*')}"}
    assert jwt_app.get("/v1/services/iris", headers=everything).status_code == 200
    nothing = jwt_app.get("/v1/services/iris", headers={"Authorization": f"Bearer {token(keys[0])}"})
    assert nothing.status_code == 403
    assert nothing.json()["error"] == "forbidden"
    assert "batch-scorer" in nothing.json()["message"]


def test_jwts_the_gateway_must_not_accept_are_401(jwt_app: Any, keys: tuple[Any, Path]) -> None:
    private = keys[0]
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    stranger = ec.generate_private_key(ec.SECP256R1())
    refused = {
        "another audience": token(private, services="*", aud="someone-else"),
        "expired": token(private, services="*", exp=past),
        "no expiry": token(private, services="*", exp=None),
        "no subject": token(private, services="*", sub=None),
        "another key": token(stranger, services="*"),
        "unsigned": jwt.encode({"sub": "x", "aud": AUDIENCE, "services": "*"}, None, algorithm="none"),
    }
    for case, value in refused.items():
        response = jwt_app.get("/v1/services/iris", headers={"Authorization": f"Bearer {value}"})
        assert response.status_code == 401, case
        assert response.json()["error"] == "unauthorized"
        assert value not in response.text


def test_a_jwt_key_that_does_not_fit_its_algorithms_or_no_audience_stops_the_start(
    keys: tuple[Any, Path], tmp_path: Path
) -> None:
    service = [iris_service(tmp_path / "iris")]
    with pytest.raises(ConfigError, match="does not fit VATIC_GATEWAY_JWT_ALGORITHMS=RS256"):
        create_app(GatewaySettings(services=service, jwt_key_file=keys[1], jwt_audience=AUDIENCE))
    with pytest.raises(ConfigError, match="without VATIC_GATEWAY_JWT_AUDIENCE"):
        create_app(GatewaySettings(services=service, jwt_key_file=keys[1], jwt_algorithms=["ES256"]))
