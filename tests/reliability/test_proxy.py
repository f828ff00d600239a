"""The latency proxy of the reliability suite: bytes pass untouched, replies are delayed as told, in order."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.stack import LatencyProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[LatencyProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    latency = LatencyProxy("echo", ("127.0.0.1", server.server_address[1]), tmp_path)
    latency.start()
    try:
        yield latency
    finally:
        latency.stop()
        server.shutdown()
        server.server_close()


def _round_trip(sock: socket.socket, payload: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        received += sock.recv(65536)
    return received, time.monotonic() - started


def test_without_a_setting_bytes_pass_untouched_and_undelayed(proxy: LatencyProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        payload = bytes(range(256)) * 1000
        received, took = _round_trip(sock, payload)
    assert received == payload
    assert took < 1.0


def test_replies_are_delayed_in_the_configured_range_and_the_tail_by_its_own_delay(proxy: LatencyProxy) -> None:
    proxy.set(base_ms=[150, 200], slow_fraction=0.0, seed=1)
    time.sleep(0.3)  # the proxy re-reads its control file at most every 100 ms
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        waits = [_round_trip(sock, f"ping {i}".encode())[1] for i in range(5)]
        assert all(0.14 <= w < 0.6 for w in waits), waits
        proxy.set(base_ms=[0, 0], slow_fraction=1.0, slow_ms=400, seed=1)
        time.sleep(0.3)
        received, took = _round_trip(sock, b"slow")
        assert received == b"slow"
        assert took >= 0.39
        proxy.set()
        time.sleep(0.3)
        assert _round_trip(sock, b"fast")[1] < 0.2


def test_a_later_reply_never_overtakes_an_earlier_one(proxy: LatencyProxy) -> None:
    """Delays are drawn per reply; the order on a connection is kept (a RESP or HTTP stream must stay whole)."""
    proxy.set(base_ms=[0, 300], slow_fraction=0.0, seed=3)
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for i in range(20):
            sock.sendall(f"<{i:02d}>".encode())
            time.sleep(0.01)
        received = b""
        while len(received) < 80:
            received += sock.recv(65536)
    assert received == b"".join(f"<{i:02d}>".encode() for i in range(20))
