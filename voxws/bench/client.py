"""One protocol stream as a client sees it: connect, `speak`, record arrival times, on voxws.client.

The socket is a `VoxClient(stamp_arrivals=True)`: every message is stamped when its last bytes are
read off the socket (not when this client's reader gets to it), and each binary frame goes to a
`Context.on_audio` hook instead of becoming an item. So the hot path (one frame) costs the read
loop's stamp pop plus two list appends here; everything else is computed after the run
(metrics.py). That keeps one client process able to drive hundreds of streams without its own CPU
showing up in the numbers.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from websockets.exceptions import InvalidHandshake

from voxws.client import (
    FATAL,
    ConnectionLost,
    Context,
    Done,
    HandshakeError,
    UnauthorizedError,
    VoxClient,
    VoxError,
)
from voxws.client import clock as _clock  # perf_counter: CLOCK_MONOTONIC on Linux, comparable across processes


@dataclass(frozen=True)
class Target:
    """Where and how to talk to the server; picklable, so client processes can share it."""

    url: str
    token: str | None = None
    format: str | None = None  # None = the server's default (pcm_s16le)
    sample_rate: int | None = None  # None = the model's native rate
    voice: str | None = None
    open_timeout_s: float = 30.0
    request_timeout_s: float = 120.0

    def options(self) -> dict[str, Any]:
        """VoxClient.speak's options for this target."""
        return {"format": self.format, "sample_rate": self.sample_rate or None, "voice": self.voice or None}


@dataclass
class StreamResult:
    """Raw timings of one request (perf_counter seconds), filled in while it streams."""

    id: int
    level: Any  # the scenario's grouping key (concurrency, length label, rate)
    text_chars: int
    scheduled: float | None = None  # open loop: when the arrival was due
    t_connect: float | None = None  # connect started (only when this request opened the socket)
    t_ready: float | None = None  # `ready` received on that socket
    t_sent: float | None = None  # speak sent
    t_queued: float | None = None
    queue_position: int | None = None
    t_start: float | None = None
    t_done: float | None = None  # `done` (or the error / cancel that ended it)
    frame_t: list[float] = field(default_factory=list)
    frame_n: list[int] = field(default_factory=list)
    format: str | None = None
    sample_rate: int | None = None
    done: dict[str, Any] | None = None
    error: str | None = None  # protocol error code, or: timeout, closed, connect, stopped
    error_message: str | None = None


class ConnectFailed(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


async def open_stream(target: Target) -> tuple[VoxClient, dict[str, Any]]:
    """Connect and wait for the server's `ready`; raise ConnectFailed with a short code."""
    client = VoxClient(
        target.url, token=target.token, open_timeout=target.open_timeout_s, context_prefix="b",
        max_size=None,
        ping_interval=None,  # a keepalive timeout must not end a stream mid-measurement
        stamp_arrivals=True,  # frame times as read off the socket, not as this busy client got to them
    )
    try:
        await client.connect()
    except (HandshakeError, UnauthorizedError) as e:
        raise ConnectFailed(f"http_{getattr(e, 'status', None) or 401}", str(e)) from None
    except (ConnectionLost, VoxError) as e:  # no `ready`, or something else first
        raise ConnectFailed("no_ready", str(e)) from None
    except (OSError, InvalidHandshake, TimeoutError) as e:
        raise ConnectFailed("connect", f"{type(e).__name__}: {e}") from None
    assert client.ready is not None
    return client, client.ready.raw


async def speak(client: VoxClient, target: Target, text: str, res: StreamResult) -> bool:
    """One `speak`, recorded until its `done` (or error). Does not raise for protocol errors; returns
    False when the socket is closed (or about to be: an error that closes it). Cancellation propagates."""
    res.t_sent = _clock()  # until the writer stamps the real send (it stays if nothing is sent)
    ctx = client.speak(text, context=f"b{res.id}", **target.options())
    times, sizes = res.frame_t, res.frame_n

    def on_audio(data: bytes, at: float) -> None:  # the hot path: one frame
        times.append(at)
        sizes.append(len(data))

    ctx.on_audio = on_audio
    usable = True
    try:
        end = await ctx.wait()
        if isinstance(end, Done):
            res.done = asdict(end)
        else:
            res.error = "cancelled"
    except ConnectionLost as e:
        res.error = "closed"
        res.error_message = f"{e.close_code} {client.close_reason}" if e.close_code else str(e)
        usable = False
    except VoxError as e:
        res.error, res.error_message = e.code, e.message
        usable = e.code not in FATAL
    _record(ctx, res)
    return usable


def _record(ctx: Context, res: StreamResult) -> None:
    if ctx.sent_at is not None:
        res.t_sent = ctx.sent_at
    res.t_queued = ctx.queued_at
    res.queue_position = ctx.queued.position if ctx.queued else None
    res.t_start = ctx.started_at
    if ctx.start is not None:
        res.format, res.sample_rate = ctx.start.format, ctx.start.sample_rate
    res.t_done = ctx.ended_at if ctx.ended_at is not None else _clock()


async def speak_timed(client: VoxClient, target: Target, text: str, res: StreamResult) -> bool:
    """speak() with the per-request timeout; returns False when the socket is no longer usable."""
    try:
        return await asyncio.wait_for(speak(client, target, text, res), target.request_timeout_s)
    except TimeoutError:
        res.error, res.error_message = "timeout", f"no done within {target.request_timeout_s} s"
    ctx = next((c for c in client.open_contexts if c.id == f"b{res.id}"), None)
    if ctx is not None:
        _record(ctx, res)
    res.t_done = _clock()
    return False
