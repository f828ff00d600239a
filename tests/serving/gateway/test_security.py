"""The REST path's front door: bearer-token authentication and the body-size limit, on the real gateway process
(``vatic gateway`` under uvicorn) spoken to over raw sockets, so that the HTTP framing itself can lie (a
Content-Length that does not match the body, chunked bodies, both at once), and on the ASGI app in-process for
servers that do not check the framing for us.

(test_gateway.py covers the common cases - a missing or wrong token, a declared or streamed oversized body;
these are the edges.)
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.gateway.test_gateway import TOKEN, Gateway, iris_service
from vatic.serving.gateway import GatewaySettings, create_app

LIMIT = 65536  # VATIC_GATEWAY_MAX_BODY_BYTES of test_gateway.Gateway
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = ["/v2/health/live", "/v2/health/ready", "/healthz", "/metrics", "/openapi.json", "/docs"]
PROTECTED = [
    ("GET", "/v1/services"),
    ("GET", "/v1/services/iris"),
    ("POST", "/v1/services/iris/predict"),
    ("POST", "/v2/models/iris/infer"),
    ("POST", "/v2/models/iris/versions/1/infer"),
    ("GET", "/v2/models/iris"),
    ("GET", "/v2/models/iris/ready"),
]
ROW = {"sl": 5.1, "sw": 3.5, "pl": 1.4, "pw": 0.2}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway serving the iris service, whose model server is down: no model is needed to test the door."""
    root = tmp_path_factory.mktemp("security")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    gw = Gateway(
        ["--service", str(iris_service(root / "iris")), "--endpoint", f"iris=http://127.0.0.1:{closed}"],
        root / "gw.log",
    )
    yield gw
    gw.stop()


def _raw(gw: Gateway, request: bytes, *, read_timeout: float = 10.0) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes on one connection and parse every HTTP response that comes back before it closes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=read_timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)  # the server may answer and close before the whole body is sent
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return _responses(data)


def _responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while data.startswith(b"HTTP/1.1 "):
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        size = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:size]))
        data = rest[size:]
    return out


def _request(path: str, body: bytes, *headers: str, method: str = "POST") -> bytes:
    """One raw HTTP/1.1 request; ``Connection: close`` so that the server ends the exchange after answering."""
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --- authentication ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer  {TOKEN}"],
)
def test_protected_routes_answer_401_with_a_json_body_and_the_scheme(
    gateway: Gateway, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = httpx.request(method, gateway.url + path, headers=headers, content=b"{}" if method == "POST" else None)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="vatic"'
    assert response.json() == {"error": "unauthorized", "message": "missing or wrong bearer token"}
    assert TOKEN not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_right_token_passes_whatever_the_case_of_the_scheme(gateway: Gateway, scheme: str) -> None:
    """RFC 7235: the auth scheme is case-insensitive; the token itself is compared exactly."""
    response = httpx.get(gateway.url + "/v1/services", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200, response.text
    assert [s["service"] for s in response.json()["services"]] == ["iris"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/health/../../v1/services",
        "/healthz/../v1/services",
        "/metrics/../v1/services",
        "/v2/health%2F..%2F..%2Fv1%2Fservices",
    ],
)
def test_an_open_prefix_does_not_open_other_routes(gateway: Gateway, path: str) -> None:
    """Open routes are matched by prefix: dot segments and encoded slashes after one reach no protected route
    (uvicorn does not normalise paths, and the router matches the literal path)."""
    answers = _raw(gateway, _request(path, b"", method="GET"))
    assert [status for status, _, _ in answers] in ([401], [404]), answers


@pytest.mark.parametrize("path", OPEN)
def test_health_metrics_and_docs_need_no_token(gateway: Gateway, path: str) -> None:
    response = httpx.get(gateway.url + path)
    assert response.status_code in (200, 503), response.text  # ready: 503, the model server is down
    if path == "/v2/health/ready":
        assert response.json() == {"ready": False, "services": {"iris": False}}  # nothing sensitive


def test_a_wrong_token_is_refused_before_the_body_is_read(gateway: Gateway) -> None:
    """An unauthenticated client cannot make the gateway buffer a body: 401 at once, even for an oversized one."""
    answers = _raw(gateway, _request("/v1/services/iris/predict", b"x" * 10, f"Content-Length: {LIMIT * 50}"))
    assert [status for status, _, _ in answers] == [401]


# --- the body limit ---------------------------------------------------------------------------------------------


def test_a_declared_oversized_body_is_413_before_it_is_sent(gateway: Gateway) -> None:
    answers = _raw(
        gateway,
        _request("/v2/models/iris/infer", b"", f"Authorization: Bearer {TOKEN}", f"Content-Length: {LIMIT + 1}"),
    )
    assert answers[0][0] == 413
    assert json.loads(answers[0][2])["error"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/v1/services/iris/predict", "/v2/models/iris/infer"])
def test_a_chunked_body_of_many_small_chunks_is_413_once_past_the_limit(gateway: Gateway, path: str) -> None:
    chunk = b"x" * 1000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // 1000 + 2)) + b"0\r\n\r\n"
    answers = _raw(gateway, _request(path, body, f"Authorization: Bearer {TOKEN}", "Transfer-Encoding: chunked"))
    assert answers[0][0] == 413, answers
    assert json.loads(answers[0][2])["error"] == "payload_too_large"


def test_a_content_length_smaller_than_the_body_is_not_a_way_past_the_limit(gateway: Gateway) -> None:
    """The server reads only the declared bytes, and the rest is a malformed next request: uvicorn answers 400
    (or the first request's 422, not JSON). Never a 5xx, never a 200, and the gateway keeps serving."""
    body = b'{"sl": 1' + b" " * (LIMIT * 2)
    answers = _raw(
        gateway, _request("/v1/services/iris/predict", body, f"Authorization: Bearer {TOKEN}", "Content-Length: 8")
    )
    statuses = [status for status, _, _ in answers]
    assert statuses, "no answer"
    assert all(status in (400, 422) for status in statuses), answers
    assert httpx.get(gateway.url + "/v2/health/live").status_code == 200


def test_a_content_length_larger_than_the_body_waits_and_answers_nothing_wrong(gateway: Gateway) -> None:
    answers = _raw(
        gateway,
        _request("/v1/services/iris/predict", b'{"sl": 1}', f"Authorization: Bearer {TOKEN}", "Content-Length: 500"),
        read_timeout=2.0,
    )
    assert all(400 <= status < 500 for status, _, _ in answers), answers  # nothing, or a 4xx once it gives up
    assert httpx.get(gateway.url + "/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 8", "Transfer-Encoding: chunked"],  # request smuggling
        ["Content-Length: abc"],
        ["Content-Length: -1"],
        ["Content-Length: 8", "Content-Length: 9"],
    ],
)
def test_ambiguous_framing_is_refused(gateway: Gateway, framing: list[str]) -> None:
    answers = _raw(
        gateway, _request("/v1/services/iris/predict", b'{"sl": 1}', f"Authorization: Bearer {TOKEN}", *framing)
    )
    assert answers, "no answer"
    assert all(400 <= status < 500 for status, _, _ in answers), answers
    assert answers[0][0] != 200


def test_a_lying_content_length_is_caught_by_the_app_itself(tmp_path: Path) -> None:
    """Under a server that does not enforce Content-Length (the app receives whatever is sent), the gateway
    counts the bytes it is given: a body that declares 10 bytes and streams 3 x the limit is a 413."""
    from starlette.testclient import TestClient

    settings = GatewaySettings(services=[iris_service(tmp_path / "iris")], auth_token=TOKEN, max_body_bytes=4096)

    def body() -> Iterator[bytes]:
        yield from [b"x" * 4096] * 3

    with TestClient(create_app(settings)) as client:
        for path in ("/v1/services/iris/predict", "/v2/models/iris/infer"):
            response = client.post(path, content=body(), headers={**AUTH, "content-length": "10"})
            assert response.status_code == 413, (path, response.text)
            assert response.json()["error"] == "payload_too_large"
