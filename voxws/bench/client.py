"""One protocol stream as a client sees it: connect, `speak`, record arrival times.

The hot path (one binary frame) costs one perf_counter() call and two list appends;
everything else is computed after the run (metrics.py). That keeps one client process
able to drive hundreds of streams without its own CPU showing up in the numbers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import DATA_OPCODES, Frame

_clock = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across client processes


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

    def speak(self, text: str, context: str) -> str:
        msg: dict[str, Any] = {"type": "speak", "context": context, "text": text}
        if self.format:
            msg["format"] = self.format
        if self.sample_rate:
            msg["sample_rate"] = self.sample_rate
        if self.voice:
            msg["voice"] = self.voice
        return json.dumps(msg, ensure_ascii=False)


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


class TimedConnection(ClientConnection):
    """Stamps every message with the moment its last bytes were read from the socket.

    Taking the time when the reading task resumes would add the client's own queueing
    (hundreds of sockets' frames land at once at every engine step) to every TTFB.
    One stamp per message, in order: recv() callers pop one per message they get.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: deque[float] = deque()
        self._read_at = 0.0

    def data_received(self, data: bytes) -> None:
        self._read_at = _clock()
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if self.response is not None and isinstance(event, Frame) and event.opcode in DATA_OPCODES \
                and event.fin:
            self.arrivals.append(self._read_at)
        super().process_event(event)


class ConnectFailed(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


async def open_stream(target: Target) -> tuple[TimedConnection, dict[str, Any]]:
    """Connect and wait for the server's `ready`; raise ConnectFailed with a short code."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else None
    try:
        ws = await connect(
            target.url,
            additional_headers=headers,
            compression=None,  # deflate on PCM costs a lot of CPU and saves little
            max_size=None,
            ping_interval=None,  # a keepalive timeout must not end a stream mid-measurement
            open_timeout=target.open_timeout_s,
            subprotocols=None,
            create_connection=TimedConnection,
        )
    except InvalidStatus as e:
        raise ConnectFailed(f"http_{e.response.status_code}", str(e)) from None
    except (OSError, InvalidHandshake, TimeoutError) as e:
        raise ConnectFailed("connect", f"{type(e).__name__}: {e}") from None
    try:
        first = await asyncio.wait_for(ws.recv(), target.open_timeout_s)
        ws.arrivals.popleft()
        msg = json.loads(first)
    except (ConnectionClosed, TimeoutError, ValueError, TypeError) as e:
        await ws.close()
        raise ConnectFailed("no_ready", f"{type(e).__name__}: {e}") from None
    if msg.get("type") != "ready":
        await ws.close()
        raise ConnectFailed(str(msg.get("code") or "no_ready"), f"first message was {first!r:.200}")
    return ws, msg


async def speak(ws: TimedConnection, target: Target, text: str, res: StreamResult) -> None:
    """Send one `speak` and record everything until its `done` (or error). Does not raise
    for protocol errors; ConnectionClosed and cancellation propagate to the caller."""
    context = f"b{res.id}"
    payload = target.speak(text, context)
    times, sizes = res.frame_t, res.frame_n
    stamps = ws.arrivals
    res.t_sent = _clock()
    await ws.send(payload)
    while True:
        msg = await ws.recv()
        t = stamps.popleft()
        if type(msg) is bytes:
            times.append(t)
            sizes.append(len(msg))
            continue
        m = json.loads(msg)
        kind = m.get("type")
        if m.get("context") not in (context, None):
            continue  # not ours (cannot happen with one context per socket; be tolerant)
        if kind == "start":
            res.t_start = t
            res.format = m.get("format")
            res.sample_rate = m.get("sample_rate")
        elif kind == "queued":
            res.t_queued = t
            res.queue_position = m.get("position")
        elif kind == "done":
            res.t_done = t
            res.done = m
            return
        elif kind == "error":
            res.t_done = t
            res.error = str(m.get("code") or "error")
            res.error_message = m.get("message")
            return
        elif kind == "cancelled":
            res.t_done = t
            res.error = "cancelled"
            return
        # pong, going_away (the in-flight context still finishes): nothing to record


async def speak_timed(ws: TimedConnection, target: Target, text: str, res: StreamResult) -> bool:
    """speak() with the per-request timeout; returns False when the socket is no longer usable."""
    try:
        await asyncio.wait_for(speak(ws, target, text, res), target.request_timeout_s)
        return True
    except TimeoutError:
        res.error, res.error_message = "timeout", f"no done within {target.request_timeout_s} s"
    except ConnectionClosed as e:
        res.error = "closed"
        res.error_message = f"{e.rcvd.code} {e.rcvd.reason}" if e.rcvd else str(e)
    res.t_done = _clock()
    return False
