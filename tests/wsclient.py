"""A small protocol client for tests: collects every message of a socket by context.

Deliberately raw, not voxws.client: the server's protocol tests need the wire as it is (every JSON
message in order, malformed and out-of-order input, close codes), which a well-behaved client
hides by design (it merges `text` messages, paces under the rate limit, drops what it cannot
attribute). Tests of the client's own behaviour use voxws.client (tests/test_client.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voxws.engines.synthetic import read_mark


@dataclass
class Stream:
    context: str
    start: dict[str, Any] | None = None
    frames: list[bytes] = field(default_factory=list)
    end: dict[str, Any] | None = None  # done / cancelled / error
    queued: list[dict[str, Any]] = field(default_factory=list)

    @property
    def audio_bytes(self) -> int:
        return sum(len(f) for f in self.frames)

    def marks(self) -> list[tuple[int, int, int]]:
        """(tag_hash, segment, step) of every frame (pcm_s16le at the native rate only)."""
        out = []
        for f in self.frames:
            m = read_mark(np.frombuffer(f, dtype="<i2"))
            assert m is not None, "frame without a synthetic mark"
            out.append(m)
        return out


def run(coro: Any) -> Any:
    """Run one test scenario on a fresh event loop."""
    return asyncio.run(coro)


async def open_ws(uri: str, **kw: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(uri, compression=None, max_size=None, open_timeout=20, **kw)
    hello = json.loads(await ws.recv())
    assert hello["type"] == "ready"
    return ws, hello


async def collect(ws: ClientConnection, n: int = 1, timeout: float = 60.0) -> tuple[dict[str, Stream], list[dict]]:
    """Read until n contexts have ended. Returns streams by context and every JSON message in order."""
    streams: dict[str, Stream] = {}
    log: list[dict] = []
    current: Stream | None = None
    ended = 0

    async def run() -> None:
        nonlocal current, ended
        while ended < n:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                assert current is not None, "binary frame before any start"
                current.frames.append(msg)
                continue
            obj = json.loads(msg)
            log.append(obj)
            ctx = obj.get("context")
            st = streams.setdefault(ctx, Stream(ctx)) if ctx is not None else None
            t = obj["type"]
            if t == "start":
                assert st is not None
                st.start = obj
                current = st
            elif t == "queued":
                assert st is not None
                st.queued.append(obj)
            elif t in ("done", "cancelled") or (t == "error" and ctx is not None):
                assert st is not None
                st.end = obj
                if current is st:
                    current = None
                ended += 1

    await asyncio.wait_for(run(), timeout)
    return streams, log


async def read_until_closed(ws: ClientConnection, timeout: float = 30.0) -> tuple[int, list[dict]]:
    """Every message until the server closes: (binary frame count, JSON messages in order)."""
    frames, log = 0, []
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), timeout)
            if isinstance(m, bytes):
                frames += 1
            else:
                log.append(json.loads(m))
    except ConnectionClosed:
        pass
    return frames, log


async def until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)
