"""A latency-injecting TCP proxy (what Toxiproxy's ``latency`` toxic does), run as its own process.

    python -m tests.reliability.proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --control FILE

Bytes flow both ways untouched. Each chunk the upstream sends back is held for a delay drawn from the
control file's current setting before it is passed on, in order (a later chunk never overtakes an earlier
one on the same connection), so a slow server is simulated without pausing it. The control file is JSON,
re-read when it changes; absent or ``{}`` means no delay::

    {"base_ms": [20, 50], "slow_fraction": 0.05, "slow_ms": 400, "seed": 7}

``base_ms``: each reply's delay is uniform in this range; with probability ``slow_fraction`` it is
``slow_ms`` instead (a tail past the client's deadline). Delays come from a seeded generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any


class Latency:
    """The current delay setting, re-read from the control file at most every 100 ms."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.setting: dict[str, Any] = {}
        self.rng = random.Random(0)
        self._mtime: float | None = None
        self._checked = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < 0.1:
            return
        self._checked = now
        try:
            mtime = self.control.stat().st_mtime
        except OSError:
            self.setting, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._mtime = mtime
            with contextlib.suppress(OSError, ValueError):
                self.setting = json.loads(self.control.read_text(encoding="utf-8") or "{}")
                self.rng = random.Random(self.setting.get("seed", 0))

    def draw_s(self) -> float:
        self.refresh()
        s = self.setting
        if not s:
            return 0.0
        if self.rng.random() < float(s.get("slow_fraction", 0.0)):
            return float(s.get("slow_ms", 0.0)) / 1000
        lo, hi = s.get("base_ms", [0, 0])
        return self.rng.uniform(float(lo), float(hi)) / 1000


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: Latency | None) -> None:
    released = 0.0  # monotonic time the previous chunk was passed on: order is kept per connection
    try:
        while chunk := await reader.read(65536):
            if latency is not None:
                due = max(released, time.monotonic() + latency.draw_s())
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                released = due
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], latency: Latency) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w, None), _pipe(up_r, client_w, latency))

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.proxy", description=__doc__)
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--upstream", required=True, type=_address)
    parser.add_argument("--control", required=True, type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.upstream, Latency(args.control)))


if __name__ == "__main__":
    main()
