"""A typed asyncio client for the voxws.v1 protocol (PROTOCOL.md), on `websockets`.

    async with VoxClient("ws://127.0.0.1:8081/v1/tts", token=...) as c:
        async for item in c.speak("Hello.", sample_rate=16000):
            if isinstance(item, Audio):
                play(item.data)

One socket, several contexts: the server never interleaves the audio of two contexts,
so binary frames belong to the context of the last `start`. Each context is an async
iterator of its own items, in order: `Queued`, `Start`, `Segment`, `Words`, `Audio`,
`Flushed`, `GoingAway`, and last `Done` or `Cancelled`; a context that fails raises its
typed `VoxError` instead. Reconnection is the caller's job: a closed socket fails its open
contexts with `ConnectionLost`, and the client does not reopen it.

Why `websockets`: the server is built on it, it is the one WebSocket library every agent
framework here already installs, and its asyncio client gives handshake status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import DATA_OPCODES, Frame

from voxws.samples import SampleCounter

__all__ = [
    "Audio", "BadMessageError", "BadOptionError", "BusyError", "Cancelled", "ConnectionLost",
    "Context", "ContextExistsError", "Done", "EmptyTextError", "EngineError", "Flushed", "ForbiddenError",
    "GoingAway", "HandshakeError", "IdleTimeoutError", "Item", "MessageTooBigError", "Queued",
    "RateLimitedError", "Ready", "Segment", "ShuttingDownError", "SlowConsumerError", "StampedConnection", "Start",
    "TextTooLongError", "TooManyContextsError", "UnauthorizedError", "UnavailableError",
    "UnknownContextError", "UnknownVoiceError", "UnsupportedFormatError", "VoxClient", "VoxError", "Words",
]

Format = Literal["pcm_s16le", "pcm_f32le", "pcm_mulaw", "wav", "mp3", "opus"]
_ids = itertools.count(1)
clock = time.perf_counter  # every *_at time of this module (CLOCK_MONOTONIC on Linux: comparable across processes)


# -- items --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The server's hello."""

    protocol: str
    server: str
    engine: str
    model: str
    sample_rate: int
    formats: tuple[str, ...]
    sample_rates: tuple[int, ...]
    default_voice: str | None
    limits: dict[str, Any]
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Queued:
    context: str
    position: int


@dataclass(frozen=True, slots=True)
class Start:
    context: str
    format: str
    sample_rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Audio:
    """One binary frame. `samples`: decoded samples at `sample_rate` (None only for an unknown format)."""

    context: str
    data: bytes
    samples: int | None
    format: str
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return (self.samples or 0) / self.sample_rate


@dataclass(frozen=True, slots=True)
class Segment:
    context: str
    index: int
    text: str
    spoken: str
    source_start: int
    source_end: int
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class Words:
    """Word timestamps (ms from the start of the context's audio), parallel tuples."""

    context: str
    words: tuple[str, ...]
    start_ms: tuple[int, ...]
    end_ms: tuple[int, ...]
    source_start: tuple[int, ...]
    source_end: tuple[int, ...]
    estimated: bool


@dataclass(frozen=True, slots=True)
class Flushed:
    context: str
    flush_id: str | int | None


@dataclass(frozen=True, slots=True)
class Done:
    context: str
    audio_ms: int
    ttfb_ms: int | None
    chunks: int
    text_chars: int
    segments: int
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Cancelled:
    context: str
    audio_ms: int
    source_end: int | None = None


@dataclass(frozen=True, slots=True)
class GoingAway:
    """The server is draining: contexts in flight finish (before `deadline_ms`), new ones are refused."""

    reason: str
    deadline_ms: int


Item = Queued | Start | Audio | Segment | Words | Flushed | GoingAway | Done | Cancelled


# -- errors -------------------------------------------------------------------


class VoxError(Exception):
    """A voxws error. `code` is the PROTOCOL.md error code (or `http_<status>` / `connection_lost`)."""

    code: str = "error"

    def __init__(self, message: str, *, context: str | None = None, code: str | None = None,
                 data: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.context = context
        if code is not None:
            self.code = code
        self.data = data or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadMessageError(VoxError):
    code = "bad_message"


class EmptyTextError(VoxError):
    code = "empty_text"


class TextTooLongError(VoxError):
    code = "text_too_long"


class UnsupportedFormatError(VoxError):
    code = "unsupported_format"


class UnknownVoiceError(VoxError):
    code = "unknown_voice"


class BadOptionError(VoxError):
    code = "bad_option"


class ContextExistsError(VoxError):
    code = "context_exists"


class UnknownContextError(VoxError):
    code = "unknown_context"


class TooManyContextsError(VoxError):
    code = "too_many_contexts"


class BusyError(VoxError):
    """The server's admission queue is full: try again after `retry_after_ms`."""

    code = "busy"

    @property
    def retry_after_ms(self) -> int | None:
        v = self.data.get("retry_after_ms")
        return int(v) if isinstance(v, (int, float)) else None


class RateLimitedError(VoxError):
    code = "rate_limited"


class SlowConsumerError(VoxError):
    code = "slow_consumer"


class EngineError(VoxError):
    code = "engine_error"


class UnauthorizedError(VoxError):
    """Token missing or wrong: at the handshake (HTTP 401, `status` set) or later (close 1008)."""

    code = "unauthorized"
    status: int | None = None


class MessageTooBigError(VoxError):
    code = "message_too_big"


class IdleTimeoutError(VoxError):
    code = "idle_timeout"


class ShuttingDownError(VoxError):
    """A new context while the server drains: connect again (to another server)."""

    code = "shutting_down"


class HandshakeError(VoxError):
    """The server refused the WebSocket handshake with HTTP `status`."""

    def __init__(self, message: str, *, status: int, retry_after_s: float | None = None):
        super().__init__(message, code=f"http_{status}")
        self.status = status
        self.retry_after_s = retry_after_s


class ForbiddenError(HandshakeError):
    """HTTP 403: the `Origin` is not on the server's allowed list."""


class UnavailableError(HandshakeError):
    """HTTP 503: not ready, draining, or at its connection limit; `retry_after_s` from Retry-After."""


class ConnectionLost(VoxError):
    """The socket closed while this context was open (and no error message said why)."""

    code = "connection_lost"

    def __init__(self, message: str, *, context: str | None = None, close_code: int | None = None):
        super().__init__(message, context=context)
        self.close_code = close_code


ERRORS: dict[str, type[VoxError]] = {cls.code: cls for cls in (
    BadMessageError, EmptyTextError, TextTooLongError, UnsupportedFormatError, UnknownVoiceError, BadOptionError,
    ContextExistsError, UnknownContextError, TooManyContextsError, BusyError, RateLimitedError, SlowConsumerError,
    EngineError, UnauthorizedError, MessageTooBigError, IdleTimeoutError, ShuttingDownError)}
# Codes after which the server closes the socket (PROTOCOL.md "Error codes").
FATAL = frozenset({"slow_consumer", "unauthorized", "message_too_big", "idle_timeout"})


def error_from(msg: dict[str, Any]) -> VoxError:
    code = str(msg.get("code") or "error")
    extra = {k: v for k, v in msg.items() if k not in ("type", "code", "message", "context")}
    cls = ERRORS.get(code, VoxError)
    return cls(str(msg.get("message") or code), context=msg.get("context"), code=code, data=extra)


# -- contexts -----------------------------------------------------------------

_END = object()


class Context:
    """One voxws context: an async iterator of its items. Made by `VoxClient.speak` / `open_context`."""

    def __init__(self, client: VoxClient, cid: str, options: dict[str, Any], incremental: bool):
        self.client = client
        self.id = cid
        self.incremental = incremental
        self._options = options
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._opened = False  # first `text` sent (incremental)
        self._input_ended = False
        self.cancel_requested = False
        self.finished = False  # no more items will be queued
        self.start: Start | None = None
        self.done: Done | None = None
        self.cancelled: Cancelled | None = None
        self.error: VoxError | None = None
        self._counter: SampleCounter | None = None
        self._finished_event = asyncio.Event()
        # Timing (clock()): the first message of the context written to the socket; `queued`, `start` and the
        # last message (done / cancelled / error) read from it. With `VoxClient(stamp_arrivals=True)` the
        # reads are when the message's last bytes came off the socket, not when this client got to them.
        self.sent_at: float | None = None
        self.queued: Queued | None = None
        self.queued_at: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        # Set it (right after speak/open_context) to take each binary frame as on_audio(data, arrived_at)
        # instead of as Audio items: the measuring hook (no item, no sample count per frame).
        self.on_audio: Callable[[bytes, float], None] | None = None

    # incremental input

    async def send(self, text: str) -> None:
        """Append text (incremental contexts). The first call opens the context with its options."""
        self._check_input("send")
        msg: dict[str, Any] = {"type": "text", "context": self.id, "text": text}
        if not self._opened:
            msg.update(self._options)
            self._opened = True
        self.client._enqueue(msg)

    async def flush(self, flush_id: str | int | None = None) -> None:
        """Synthesise what is buffered now; with `flush_id` the server answers `Flushed`."""
        self._check_input("flush")
        if not self._opened:
            if flush_id is not None:  # nothing sent: nothing to wait for
                self._put(Flushed(self.id, flush_id))
            return
        msg: dict[str, Any] = {"type": "flush", "context": self.id}
        if flush_id is not None:
            msg["flush_id"] = flush_id
        self.client._enqueue(msg)

    async def end(self) -> None:
        """No more text: the context finishes with `Done` once its audio is out."""
        self._check_input("end")
        self._input_ended = True
        if not self._opened:
            # The server would answer an `end` on a context it never saw with unknown_context.
            self._fail(EmptyTextError("the context received no text", context=self.id))
            return
        self.client._enqueue({"type": "end", "context": self.id})

    async def cancel(self) -> None:
        """Stop now: no audio of this context is yielded after this call; the iterator ends with
        `Cancelled` (the server frees its engine slot within one engine step)."""
        if self.finished or self.cancel_requested:
            return
        self.cancel_requested = True
        if self.incremental and not self._opened:
            self._finish(Cancelled(self.id, 0, 0))
            return
        self.client._enqueue({"type": "cancel", "context": self.id})

    def _check_input(self, what: str) -> None:
        if not self.incremental:
            raise TypeError(f"{what}() is for contexts from open_context(); speak() contexts have all their text")
        if self.error is not None:
            raise self.error  # the context failed (its error, or the socket's)
        if self._input_ended or self.finished or self.cancel_requested:
            raise RuntimeError(f"{what}() after end(), cancel() or the context's end")

    # output

    def __aiter__(self) -> Context:
        return self

    async def __anext__(self) -> Item:
        item = await self._items.get()
        if item is _END:
            self._items.put_nowait(_END)  # iterating again ends again
            if self.error is not None:
                raise self.error
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def audio(self) -> bytes:
        """Every audio byte of the context, once it is done (raises its error, if any)."""
        return b"".join([i.data async for i in self if isinstance(i, Audio)])

    async def wait(self) -> Done | Cancelled:
        """Until the context ends, without consuming its items; raises its error."""
        await self._finished_event.wait()
        if self.error is not None:
            raise self.error
        result = self.done or self.cancelled
        assert result is not None
        return result

    async def __aenter__(self) -> Context:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self.finished:
            with contextlib.suppress(VoxError, ConnectionClosed):
                await self.cancel()

    # fed by the client's reader

    def _put(self, item: Item) -> None:
        if not self.finished:
            self._items.put_nowait(item)

    def _audio(self, data: bytes, at: float) -> None:
        if self.finished or self.cancel_requested or self.start is None:
            return  # audio already in flight when the caller cancelled: dropped
        if self.on_audio is not None:
            self.on_audio(data, at)
            return
        if self._counter is None:
            self._counter = SampleCounter(self.start.format, self.start.sample_rate)
        self._put(Audio(self.id, data, self._counter.count(data), self.start.format, self.start.sample_rate))

    def _finish(self, last: Done | Cancelled) -> None:
        if self.finished:
            return
        if isinstance(last, Done):
            self.done = last
        else:
            self.cancelled = last
        self._items.put_nowait(last)
        self._close()

    def _fail(self, err: VoxError) -> None:
        if self.finished:
            return
        if self.cancel_requested and isinstance(err, ConnectionLost):
            self._finish(Cancelled(self.id, 0))
            return
        self.error = err
        self._close()

    def _close(self) -> None:
        self.finished = True
        self._items.put_nowait(_END)
        self._finished_event.set()
        self.client._forget(self)


# -- the client ---------------------------------------------------------------


class StampedConnection(ClientConnection):
    """Stamps every data message with clock() at the moment its last bytes were read from the socket.

    Taking the time when the reading task resumes would add the client's own queueing (a benchmark's
    hundreds of sockets get their frames at once at every engine step) to every measurement.
    One stamp per message, in order: whoever receives a message pops one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: deque[float] = deque()
        self._read_at = 0.0

    def data_received(self, data: bytes) -> None:
        self._read_at = clock()
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        if self.response is not None and isinstance(event, Frame) and event.opcode in DATA_OPCODES and event.fin:
            self.arrivals.append(self._read_at)
        super().process_event(event)


@dataclass
class _Pacer:
    """Client-side token bucket under the server's `rate_limit_per_s`, so that `rate_limited` never happens:
    the server allows a burst of twice the rate, the client takes one rate's worth."""

    rate: float | None
    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.rate or 0.0

    def wait_s(self) -> float:
        if not self.rate:
            return 0.0
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class VoxClient:
    """One WebSocket to a voxws server. Use as `async with VoxClient(url, token=...) as c:`.

    `on_going_away` (optional) is called when the server starts draining; `going_away` keeps the message.
    The client never reconnects by itself: open a new VoxClient when this one is closed.
    """

    def __init__(self, url: str, *, token: str | None = None, open_timeout: float = 20.0,
                 on_going_away: Callable[[GoingAway], Any] | None = None,
                 additional_headers: dict[str, str] | None = None, context_prefix: str = "c",
                 ping_interval: float | None = 20.0, max_size: int | None = 2**24, stamp_arrivals: bool = False):
        self.url = url
        self.ping_interval = ping_interval
        self.max_size = max_size
        self.stamp_arrivals = stamp_arrivals  # StampedConnection: exact arrival times (see Context.sent_at)
        self.token = token
        self.open_timeout = open_timeout
        self.on_going_away = on_going_away
        self.headers = dict(additional_headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.prefix = f"{context_prefix}{next(_ids)}."
        self.ready: Ready | None = None
        self.ready_at: float | None = None
        self.going_away: GoingAway | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.error: VoxError | None = None  # a socket-level error (no context, or one that closed it)
        self._ws: ClientConnection | None = None
        self._contexts: dict[str, Context] = {}
        self._current: Context | None = None  # the context whose audio is streaming
        self._outbox: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._pacer = _Pacer(None)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self._seq = itertools.count(1)

    # lifecycle

    async def connect(self) -> VoxClient:
        """Open the socket and wait for `ready`. Raises UnauthorizedError (401), ForbiddenError (403),
        UnavailableError (503), HandshakeError (other statuses); OSError/TimeoutError when nothing answers."""
        try:
            ws = await connect(self.url, additional_headers=self.headers or None, compression=None,
                               max_size=self.max_size, open_timeout=self.open_timeout,
                               ping_interval=self.ping_interval,
                               create_connection=StampedConnection if self.stamp_arrivals else None)
        except InvalidStatus as e:
            raise _handshake_error(e) from None
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            self.ready_at = ws.arrivals.popleft() if isinstance(ws, StampedConnection) else clock()
        except (ConnectionClosed, asyncio.TimeoutError, ValueError) as e:  # 3.10: not the builtin TimeoutError
            await ws.close()
            raise ConnectionLost(f"no `ready` from the server: {e!r}") from None
        if not isinstance(hello, dict) or hello.get("type") != "ready":
            await ws.close()
            raise VoxError(f"expected `ready`, got {str(hello)[:200]}", code="bad_hello")
        self._ws = ws
        self.ready = Ready(
            protocol=str(hello.get("protocol")), server=str(hello.get("server")), engine=str(hello.get("engine")),
            model=str(hello.get("model")), sample_rate=int(hello["sample_rate"]),
            formats=tuple(hello.get("formats") or ()), sample_rates=tuple(hello.get("sample_rates") or ()),
            default_voice=hello.get("default_voice"), limits=dict(hello.get("limits") or {}), raw=hello)
        rate = self.ready.limits.get("rate_limit_per_s")
        self._pacer = _Pacer(float(rate) if isinstance(rate, (int, float)) and rate > 0 else None)
        self._tasks = [asyncio.create_task(self._read_loop(), name="voxws-client-read"),
                       asyncio.create_task(self._write_loop(), name="voxws-client-write")]
        return self

    async def close(self) -> None:
        """Close the socket (open contexts end with ConnectionLost; the server frees their slots)."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._lost("the client closed the socket")

    async def __aenter__(self) -> VoxClient:
        return await self.connect()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Until the socket is closed (by either side)."""
        await self._closed.wait()

    @property
    def connection(self) -> ClientConnection | None:
        """The websockets connection (None before connect)."""
        return self._ws

    @property
    def open_contexts(self) -> list[Context]:
        return list(self._contexts.values())

    # requests

    def speak(self, text: str, *, voice: str | None = None, format: Format | None = None,
              sample_rate: int | None = None, bitrate: int | None = None, timestamps: str | None = None,
              normalize: bool | None = None, language: str | None = None, cfg_value: float | None = None,
              temperature: float | None = None, seed: int | None = None, context: str | None = None) -> Context:
        """Synthesise `text` in a new context; iterate the returned Context for its items."""
        opts = _options(voice=voice, format=format, sample_rate=sample_rate, bitrate=bitrate, timestamps=timestamps,
                        normalize=normalize, language=language, cfg_value=cfg_value, temperature=temperature,
                        seed=seed)
        ctx = self._new(context, opts, incremental=False)
        if not ctx.finished:
            self._enqueue({"type": "speak", "context": ctx.id, "text": text, **opts})
        return ctx

    def open_context(self, *, voice: str | None = None, format: Format | None = None,
                     sample_rate: int | None = None, bitrate: int | None = None, timestamps: str | None = None,
                     normalize: bool | None = None, language: str | None = None, cfg_value: float | None = None,
                     temperature: float | None = None, seed: int | None = None,
                     context: str | None = None) -> Context:
        """An incremental context: `send` text as it comes, `flush`, then `end` (or `cancel`)."""
        opts = _options(voice=voice, format=format, sample_rate=sample_rate, bitrate=bitrate, timestamps=timestamps,
                        normalize=normalize, language=language, cfg_value=cfg_value, temperature=temperature,
                        seed=seed)
        return self._new(context, opts, incremental=True)

    async def cancel_all(self) -> None:
        """Cancel every open context of this client."""
        for ctx in list(self._contexts.values()):
            await ctx.cancel()

    async def ping(self) -> None:
        self._enqueue({"type": "ping"})

    def _new(self, cid: str | None, opts: dict[str, Any], incremental: bool) -> Context:
        cid = cid or f"{self.prefix}{next(self._seq)}"
        ctx = Context(self, cid, opts, incremental)
        if cid in self._contexts:
            ctx._fail(ContextExistsError(f"context {cid!r} is open on this client", context=cid))
            return ctx
        self._contexts[cid] = ctx
        if self._ws is None:
            ctx._fail(ConnectionLost("not connected: use `async with VoxClient(...)` or `await connect()`",
                                     context=cid))
        elif self.closed:
            ctx._fail(self._closed_error(cid))
        return ctx

    def _forget(self, ctx: Context) -> None:
        if self._contexts.get(ctx.id) is ctx:
            del self._contexts[ctx.id]
        if self._current is ctx:
            self._current = None

    # writing

    def _enqueue(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        last = self._outbox[-1] if self._outbox else None
        if (last is not None and msg["type"] == "text" and last["type"] == "text"
                and last.get("context") == msg.get("context")):
            last["text"] += msg["text"]  # still unsent: one message instead of two (rate limit)
            return
        self._outbox.append(msg)
        self._wake.set()

    async def _write_loop(self) -> None:
        assert self._ws is not None
        try:
            while True:
                while not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                wait = self._pacer.wait_s()
                if wait:
                    await asyncio.sleep(wait)
                    continue
                msg = self._outbox.popleft()
                ctx = self._contexts.get(msg.get("context"))  # type: ignore[arg-type]
                if ctx is not None and ctx.sent_at is None:
                    ctx.sent_at = clock()
                await self._ws.send(json.dumps(msg, separators=(",", ":"), ensure_ascii=False))
        except ConnectionClosed:
            pass

    # reading

    async def _read_loop(self) -> None:
        assert self._ws is not None
        stamps = self._ws.arrivals if isinstance(self._ws, StampedConnection) else None
        try:
            async for raw in self._ws:
                at = stamps.popleft() if stamps is not None else clock()
                if isinstance(raw, bytes):
                    if self._current is not None:
                        self._current._audio(raw, at)
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    self._dispatch(msg, at)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.close_reason = self._ws.close_reason or ""
            self._lost(f"the socket closed ({self.close_code}: {self.close_reason})".replace(": )", ")"))

    def _dispatch(self, msg: dict[str, Any], at: float) -> None:
        kind = msg.get("type")
        cid = msg.get("context")
        ctx = self._contexts.get(cid) if isinstance(cid, str) else None
        if kind == "error":
            err = error_from(msg)
            if ctx is not None:
                ctx.ended_at = at
                ctx._fail(err)
            elif cid is None:
                self._socket_error(err)
            return
        if kind == "going_away":
            ga = GoingAway(str(msg.get("reason") or ""), int(msg.get("deadline_ms") or 0))
            self.going_away = ga
            for c in list(self._contexts.values()):
                c._put(ga)
            if self.on_going_away is not None:
                self.on_going_away(ga)
            return
        if ctx is None:
            return  # pong, or a message about a context this client has already let go of
        if kind == "start":
            ctx.start = Start(ctx.id, str(msg.get("format")), int(msg.get("sample_rate") or 0),
                              int(msg.get("channels") or 1))
            ctx.started_at = at
            self._current = ctx
            if not ctx.cancel_requested:
                ctx._put(ctx.start)
        elif kind == "queued":
            ctx.queued, ctx.queued_at = Queued(ctx.id, int(msg.get("position") or 0)), at
            ctx._put(ctx.queued)
        elif kind == "segment":
            ctx._put(Segment(ctx.id, int(msg.get("index") or 0), str(msg.get("text") or ""),
                             str(msg.get("spoken") or ""), int(msg.get("source_start") or 0),
                             int(msg.get("source_end") or 0), int(msg.get("audio_start_ms") or 0)))
        elif kind == "words":
            ctx._put(Words(ctx.id, tuple(msg.get("words") or ()), tuple(msg.get("start_ms") or ()),
                           tuple(msg.get("end_ms") or ()), tuple(msg.get("source_start") or ()),
                           tuple(msg.get("source_end") or ()), bool(msg.get("estimated"))))
        elif kind == "flushed":
            ctx._put(Flushed(ctx.id, msg.get("flush_id")))
        elif kind == "done":
            ctx.ended_at = at
            ctx._finish(Done(ctx.id, int(msg.get("audio_ms") or 0), msg.get("ttfb_ms"), int(msg.get("chunks") or 0),
                             int(msg.get("text_chars") or 0), int(msg.get("segments") or 0), msg.get("voice")))
        elif kind == "cancelled":
            se = msg.get("source_end")
            ctx.ended_at = at
            ctx._finish(Cancelled(ctx.id, int(msg.get("audio_ms") or 0), se if isinstance(se, int) else None))

    def _socket_error(self, err: VoxError) -> None:
        """An error about no context: one that closes the socket, or a refused message the client cannot
        attribute (rate_limited, bad_message). Either way every open context is in doubt: they fail with it,
        and those the socket keeps are cancelled on the server so that nothing is left running."""
        self.error = err
        for ctx in list(self._contexts.values()):
            was_open = not (ctx.incremental and not ctx._opened)
            ctx._fail(err)
            if err.code not in FATAL and was_open:
                self._enqueue({"type": "cancel", "context": ctx.id})

    def _closed_error(self, cid: str | None) -> VoxError:
        if self.error is not None and self.error.code in FATAL:
            return self.error
        return ConnectionLost(f"the socket is closed ({self.close_code}: {self.close_reason})", context=cid,
                              close_code=self.close_code)

    def _lost(self, why: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._outbox.clear()
        at = clock()
        for ctx in list(self._contexts.values()):
            if ctx.ended_at is None:
                ctx.ended_at = at
            ctx._fail(self._closed_error(ctx.id))


def _options(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _handshake_error(e: InvalidStatus) -> HandshakeError | UnauthorizedError:
    status = e.response.status_code
    body = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
    msg = body or f"HTTP {status}"
    if status == 401:
        err = UnauthorizedError(msg)
        err.status = 401
        return err
    retry = e.response.headers.get("Retry-After")
    retry_s = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    if status == 403:
        return ForbiddenError(msg, status=status)
    if status == 503:
        return UnavailableError(msg, status=status, retry_after_s=retry_s)
    return HandshakeError(msg, status=status, retry_after_s=retry_s)


async def speak_once(url: str, text: str, *, token: str | None = None, **options: Any) -> tuple[bytes, Done]:
    """One connection, one text: (all audio bytes, the `done` message)."""
    async with VoxClient(url, token=token) as c:
        ctx = c.speak(text, **options)
        audio = await ctx.audio()
        assert ctx.done is not None
        return audio, ctx.done

