"""One WebSocket connection: client messages in, contexts opened and ended, frames out in order.

Free of socket details: the edge hands in a Transport (send / close) and feeds received frames to
`handle_text` / `handle_binary`. One writer task sends everything: the socket's own control frames
first, then the lane of the oldest open context (the head: voxws/context.py), so the audio of
different contexts is never interleaved and `cancelled` can never overtake a frame of its context.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import Protocol

import structlog

from voxws import protocol, sizing, text
from voxws.admission import Busy
from voxws.audio import Encoder
from voxws.context import Context, Outcome
from voxws.engines.base import EngineDead, EngineError
from voxws.intake import Intake, Segment, Sizer
from voxws.outbox import Audio
from voxws.producer import Producer
from voxws.protocol import Message, ProtocolError
from voxws.shared import Shared, UnknownVoice

__all__ = ["Session", "Shared", "Transport"]

log = structlog.get_logger("voxws.session")
_ids = itertools.count(1)
HEAD_AHEAD_S = 5.0  # unread audio of the streaming context past which its next segment waits
CONTROL_BACKLOG = 1024  # unsent JSON replies a socket may pile up before it is a slow consumer


class Transport(Protocol):
    async def send(self, data: str | bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


def open_context(shared: Shared, cid: str, opts: protocol.Options, incremental: bool) -> Context:
    """A context with its encoder, voice and intake sized for the engine (WebSocket and HTTP alike)."""
    engine, s = shared.engine, shared.settings
    try:
        voice_id = shared.resolve_voice(opts.voice)
    except UnknownVoice as e:
        raise ProtocolError("unknown_voice", f"voice {str(e)[:64]!r} is not registered", cid) from None
    prompt = shared.voice_prompt(voice_id) if voice_id else None
    full = engine.max_model_len
    if prompt is not None and prompt.positions >= full // 2:
        raise ProtocolError("bad_option", f"voice {voice_id!r} takes {prompt.positions} positions: too long "
                            f"for max_model_len {full} (at most half of it)", cid)
    count = engine.count_tokens
    if prompt is not None:
        sizer = Sizer(lambda t: sizing.positions(t, count), full - prompt.positions)
    else:  # the first segment may become the continuity prompt: keep it within its share
        budget = sizing.continuity_budget(full)
        sizer = Sizer(lambda t: sizing.positions(t, count), full - budget, first_limit=budget, full=full)
    rate = opts.sample_rate or engine.sample_rate
    intake = Intake(language=opts.language, expand=opts.normalize, sizer=sizer, threshold_chars=s.text_buffer_chars)
    ctx = Context(cid, opts, Encoder(opts.format, engine.sample_rate, rate), rate, incremental, intake,
                  voice_id=voice_id, prompt=prompt)
    return ctx


class Session:
    def __init__(self, shared: Shared, transport: Transport, peer: str = ""):
        self.shared = shared
        self.s = shared.settings
        self.t = transport
        self.id = f"c{next(_ids)}"
        self.log = log.bind(conn=self.id, peer=peer)
        self.contexts: dict[str, Context] = {}
        self.order: deque[Context] = deque()  # audio delivery order
        self.control: deque[str] = deque()
        self.wake = asyncio.Event()
        self.room = asyncio.Event()  # set when the writer has sent audio: held segments may go
        self.closed = False
        self.close_code: tuple[int, str] | None = None
        self.last_activity = time.monotonic()
        self.send_started: float | None = None  # when the writer's pending send began
        self._tokens = 2 * self.s.rate_limit_per_s
        self._tokens_at = time.monotonic()
        self.writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Future[None] | None = None
        self._m_ttfb = shared.metrics.ttfb

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self.shared.sessions.add(self)
        self.control.append(self.shared.hello())
        if self.shared.draining:
            self.control.append(protocol.going_away("draining", int(self.s.drain_timeout_s * 1000)))
        self.writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.id}")
        self.writer.add_done_callback(self._writer_ended)

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        """A writer that dies of a bug would leave the client waiting forever: close 1011 instead."""
        if task.cancelled() or task.exception() is None or isinstance(task.exception(), ConnectionError):
            return
        self.log.error("writer_failed", error=repr(task.exception()))
        self._closer = asyncio.ensure_future(self.t.close(1011, "internal error"))

    async def finish(self) -> None:
        """The client is gone or we closed: stop all work of this socket."""
        self.closed = True
        self.shared.sessions.discard(self)
        for ctx in list(self.contexts.values()):
            self._stop_context(ctx)
            self._account(ctx, "disconnected")
        self.contexts.clear()
        self.order.clear()
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far is sent."""
        if self.close_code is None:
            self.close_code = (code, reason)
            self.wake.set()

    @property
    def open_contexts(self) -> int:
        return len(self.contexts)

    # -- input -----------------------------------------------------------

    def handle_binary(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if not self._take_token():  # binary frames count too: each one would get a reply
            self._error(ProtocolError("rate_limited", f"over {self.s.rate_limit_per_s:g} messages per second"))
            return
        self._error(ProtocolError("bad_message", "binary frames are audio only, server to client"))

    def handle_text(self, frame: str) -> None:
        self.last_activity = time.monotonic()
        if not self._take_token():
            self._error(ProtocolError("rate_limited", f"over {self.s.rate_limit_per_s:g} messages per second"))
            return
        try:
            msg = protocol.parse(frame)
            getattr(self, f"_on_{msg.type}")(msg)
        except ProtocolError as e:
            self._error(e)

    def _take_token(self) -> bool:
        now = time.monotonic()
        rate = self.s.rate_limit_per_s
        self._tokens = min(2 * rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _on_ping(self, msg: Message) -> None:
        self._send(protocol.PONG)

    def _on_speak(self, msg: Message) -> None:
        assert msg.text is not None
        cid = msg.context or f"s{next(_ids)}"
        if msg.context and msg.context in self.contexts:
            raise ProtocolError("context_exists", f"context {cid!r} is open", cid)
        if len(msg.text) > self.s.max_text_chars:
            raise ProtocolError("text_too_long", f"text over {self.s.max_text_chars} characters", cid)
        if not text.is_speakable(msg.text):
            raise ProtocolError("empty_text", "text is empty or only whitespace/punctuation", cid)
        ctx = self._open(cid, msg, incremental=False)
        self._enqueue(ctx, ctx.intake.speak(msg.text))
        ctx.segments.put_nowait(None)
        ctx.input_ended = True

    def _on_text(self, msg: Message) -> None:
        assert msg.text is not None
        cid = msg.context or protocol.DEFAULT_CONTEXT
        ctx = self.contexts.get(cid)
        if ctx is not None and not ctx.incremental:
            raise ProtocolError("context_exists", f"context {cid!r} is a `speak` context", cid)
        if ctx is not None and ctx.input_ended:
            raise ProtocolError("unknown_context", f"context {cid!r} has ended its input", cid)
        if len(msg.text) + (ctx.text_chars if ctx else 0) > self.s.max_text_chars:
            raise ProtocolError("text_too_long", f"context text over {self.s.max_text_chars} characters", cid)
        if ctx is None:
            ctx = self._open(cid, msg, incremental=True)
        self._enqueue(ctx, ctx.intake.add(msg.text))
        self._arm_timer(ctx)

    def _on_flush(self, msg: Message) -> None:
        ctx = self._incremental(msg)
        self._flush_buffer(ctx)
        if msg.flush_id is None:
            return
        last = ctx.intake.last
        if last is not None and not last.finished:
            last.flush_ids.append(msg.flush_id)  # answered once its audio is all queued, in order
        else:
            ctx.put_event(protocol.flushed(ctx.id, msg.flush_id), start=False)
            self._notify(ctx)

    def _on_end(self, msg: Message) -> None:
        ctx = self._incremental(msg)
        self._flush_buffer(ctx)
        ctx.input_ended = True
        ctx.segments.put_nowait(None)
        if ctx.intake.count == 0:
            # Nothing speakable was ever sent: the context ends like an empty speak.
            self._end(ctx, Outcome("empty_text", protocol.error(
                "empty_text", "the context received no speakable text", ctx.id)))

    def _on_cancel(self, msg: Message) -> None:
        if msg.context is None:
            for ctx in list(self.contexts.values()):
                self._cancel(ctx)
            return
        ctx = self.contexts.get(msg.context)
        if ctx is None:
            raise ProtocolError("unknown_context", f"no open context {msg.context!r}", msg.context)
        self._cancel(ctx)

    # -- contexts --------------------------------------------------------

    def _open(self, cid: str, msg: Message, incremental: bool) -> Context:
        if self.shared.draining:
            raise ProtocolError("shutting_down", "the server is draining; reconnect to another", cid)
        if len(self.contexts) >= self.s.max_contexts:
            raise ProtocolError("too_many_contexts", f"over {self.s.max_contexts} open contexts", cid)
        ctx = open_context(self.shared, cid, msg.options, incremental)
        self.contexts[cid] = ctx
        self.order.append(ctx)
        producer = Producer(ctx, self.shared.engine, self.shared.admission, notify=self._notify,
                            on_queued=self._on_queued, on_admitted=self._on_admitted, wait_room=self._wait_room,
                            prompt_key=f"ctx:{self.id}/{cid}/{next(_ids)}")
        ctx.producer = producer.task = asyncio.create_task(producer.run(), name=f"ctx-{self.id}-{cid}")
        ctx.producer.add_done_callback(lambda t: self._produced(ctx, t))
        self.shared.metrics.contexts_active.inc()
        return ctx

    def _incremental(self, msg: Message) -> Context:
        cid = msg.context or protocol.DEFAULT_CONTEXT
        ctx = self.contexts.get(cid)
        if ctx is None or not ctx.incremental or ctx.input_ended:
            raise ProtocolError("unknown_context", f"no open incremental context {cid!r}", cid)
        return ctx

    @staticmethod
    def _enqueue(ctx: Context, segments: list[Segment]) -> None:
        for seg in segments:
            ctx.segments.put_nowait(seg)

    def _flush_buffer(self, ctx: Context) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        self._enqueue(ctx, ctx.intake.flush())

    def _arm_timer(self, ctx: Context) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
        if ctx.intake.pending.strip():
            loop = asyncio.get_running_loop()
            ctx.timer = loop.call_later(self.s.text_delay_ms / 1000, self._on_timer, ctx)

    def _on_timer(self, ctx: Context) -> None:
        ctx.timer = None
        if ctx.outcome is None and self.contexts.get(ctx.id) is ctx:
            self._flush_buffer(ctx)

    def _on_queued(self, ctx: Context, position: int) -> None:
        self._send(protocol.queued(ctx.id, position))

    def _on_admitted(self, ctx: Context, waited_s: float) -> None:
        self.shared.metrics.queue_wait.observe(waited_s)

    def _over_budget(self, ctx: Context) -> bool:
        """Whether a context should hold its next segment. The head: while the client has more than
        HEAD_AHEAD_S of its audio unread (plenty to cover the next segment's prefill). Contexts behind
        it: while together they hold half the slow-consumer limit."""
        if not self.order:
            return False
        half = self.s.max_unsent_audio_s / 2
        if ctx is self.order[0]:
            return ctx.queued_seconds > min(HEAD_AHEAD_S, half)
        return sum(c.queued_seconds for c in itertools.islice(self.order, 1, None)) > half

    async def _wait_room(self, ctx: Context) -> None:
        # A client that reads slower than the engine makes (a real-time player) gets its next
        # segment once it catches up, instead of a pile of audio and then `slow_consumer`.
        while not self.closed and self._over_budget(ctx):
            self.room.clear()
            await self.room.wait()

    def _notify(self, ctx: Context) -> None:
        """The producer queued items for ctx."""
        if self.order and ctx is self.order[0]:
            self.wake.set()
            if ctx.queued_seconds > self.s.max_unsent_audio_s:
                self.slow_consumer(f"over {self.s.max_unsent_audio_s:g} s of audio unread")

    def _produced(self, ctx: Context, task: asyncio.Task[None]) -> None:
        """The producer ended: all audio is queued, or it failed."""
        if task.cancelled():
            return
        err = task.exception()  # retrieve it even when unused: no "exception never retrieved" noise
        if ctx.outcome is not None:
            return
        if err is None:
            self._end(ctx, Outcome("done"))
        elif isinstance(err, Busy):
            self._end(ctx, Outcome("busy", protocol.error(
                "busy", "the server's admission queue is full", ctx.id, retry_after_ms=err.retry_after_ms)))
        elif isinstance(err, ProtocolError):
            self._end(ctx, Outcome(err.code, err.frame()))
        elif isinstance(err, EngineError):
            dead = isinstance(err, EngineDead)
            self.log.warning("engine_error", context=ctx.id, error=str(err), dead=dead)
            self._end(ctx, Outcome("engine_error", protocol.error("engine_error", str(err), ctx.id)))
        else:
            self.log.error("context_crashed", context=ctx.id, error=repr(err))
            self._end(ctx, Outcome("engine_error", protocol.error("engine_error", "internal error", ctx.id)))

    def _cancel(self, ctx: Context) -> None:
        self._stop_context(ctx)
        ctx.lane.clear()
        self._end(ctx, Outcome("cancelled"))

    def _stop_context(self, ctx: Context) -> None:
        ctx.dropping = True  # a chunk already on its way is not queued
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        if ctx.producer is not None and not ctx.producer.done():
            ctx.producer.cancel()  # closes the engine stream: the slot is free before the next step

    def _end(self, ctx: Context, outcome: Outcome) -> None:
        """Record how the context ends. Audio already queued still goes out, unless cancelled."""
        if ctx.outcome is not None:
            return
        ctx.outcome = outcome
        if outcome.kind != "done":
            self._stop_context(ctx)
        if not ctx.on_wire and not ctx.lane and outcome.kind != "done":
            # Nothing of it went out and nothing waits: say it now, out of turn.
            self._retire(ctx)
            self._send(self._final_frame(ctx))
        self.wake.set()

    def _final_frame(self, ctx: Context) -> str:
        o = ctx.outcome
        assert o is not None
        if o.kind == "done":
            return protocol.done(ctx.id, audio_ms=ctx.audio_ms, ttfb_ms=ctx.ttfb_ms, chunks=ctx.chunks,
                                 text_chars=ctx.text_chars, segments=ctx.segment_count, voice=ctx.voice_id)
        if o.kind == "cancelled":
            return protocol.cancelled(ctx.id, ctx.audio_ms, ctx.source_end_sent())
        assert o.frame is not None
        return o.frame

    def _retire(self, ctx: Context) -> None:
        """Remove a finished context from the socket; account for it once."""
        was_head = bool(self.order) and self.order[0] is ctx
        try:
            self.order.remove(ctx)
        except ValueError:
            return
        if self.contexts.get(ctx.id) is ctx:
            del self.contexts[ctx.id]
        if was_head and self.order:
            self.room.set()
        assert ctx.outcome is not None
        self._account(ctx, ctx.outcome.kind)
        self.last_activity = time.monotonic()

    def _account(self, ctx: Context, outcome: str) -> None:
        m = self.shared.metrics
        m.chunks.inc(ctx.chunks - ctx.chunks_counted)
        m.audio_seconds.inc((ctx.sent_samples - ctx.samples_counted) / ctx.out_rate)
        m.contexts_active.dec()
        m.contexts.labels(outcome=outcome if outcome in ("done", "cancelled", "disconnected") else "error").inc()
        if outcome not in ("done", "cancelled", "disconnected"):
            m.errors.labels(code=outcome).inc()
        self.log.info("context", context=ctx.id, outcome=outcome, ttfb_ms=ctx.ttfb_ms, audio_ms=ctx.audio_ms,
                      chunks=ctx.chunks, segments=ctx.segment_count, text_chars=ctx.text_chars, voice=ctx.voice_id)

    # -- output ----------------------------------------------------------

    def _send(self, frame: str) -> None:
        self.control.append(frame)
        self.wake.set()
        if len(self.control) > CONTROL_BACKLOG:
            # A client that floods messages and reads no replies: its replies are unsent data too.
            self.slow_consumer(f"over {CONTROL_BACKLOG} replies unread")

    def _error(self, e: ProtocolError) -> None:
        self.shared.metrics.errors.labels(code=e.code).inc()
        self.log.info("refused", code=e.code, context=e.context)
        self._send(e.frame())

    def slow_consumer(self, why: str) -> None:
        if self.close_code is not None:
            return
        self.shared.metrics.slow_consumers.inc()
        self.log.warning("slow_consumer", reason=why)
        for ctx in list(self.contexts.values()):
            self._stop_context(ctx)
        self.control.append(protocol.error("slow_consumer", why))
        self.close(1008, "slow consumer")

    def engine_died(self, reason: str) -> None:
        """Every open context fails with engine_error; the socket closes 1011."""
        for ctx in list(self.contexts.values()):
            self._stop_context(ctx)
            ctx.lane.clear()
            ctx.outcome = Outcome("engine_error", protocol.error("engine_error", f"engine died: {reason}", ctx.id))
            self._retire(ctx)
            self._send(ctx.outcome.frame or "")
        self.close(1011, "engine died")

    def going_away(self, deadline_ms: int) -> None:
        self._send(protocol.going_away("server draining", deadline_ms))
        if not self.contexts:
            self.close(1001, "server draining")

    async def _write_loop(self) -> None:
        send = self.t.send
        control, order = self.control, self.order
        while True:
            # send_started lets tick() see a write blocked on a client that stopped reading.
            self.send_started = None
            if control:
                self.send_started = time.monotonic()
                await send(control.popleft())
                continue
            if self.close_code is not None:
                code, reason = self.close_code
                await self.t.close(code, reason)
                return
            if order:
                head = order[0]
                if head.lane:
                    item = head.lane.take()
                    head.on_wire = True
                    self.send_started = time.monotonic()
                    if type(item) is Audio:
                        await send(item.payload)
                        head.sent_samples += item.samples
                        head.chunks += 1
                        self.room.set()
                        if head.first_frame_at is None and item.samples:
                            head.first_frame_at = time.perf_counter()
                            self._m_ttfb.observe(head.first_frame_at - head.opened_at)
                    else:
                        await send(item.frame)
                    continue
                if head.outcome is not None:
                    self._retire(head)
                    self.send_started = time.monotonic()
                    await send(self._final_frame(head))
                    if self.shared.draining and not self.contexts:
                        self.close(1001, "server draining")
                    continue
            self.wake.clear()
            await self.wake.wait()

    def tick(self, now: float) -> None:
        """Called about twice a second: metrics of long streams, idle and stalled-writer checks."""
        m = self.shared.metrics
        for ctx in self.order:
            m.chunks.inc(ctx.chunks - ctx.chunks_counted)
            m.audio_seconds.inc((ctx.sent_samples - ctx.samples_counted) / ctx.out_rate)
            ctx.chunks_counted, ctx.samples_counted = ctx.chunks, ctx.sent_samples
        if self.send_started is not None and now - self.send_started > self.s.stall_timeout_s:
            # Checked while closing too: a client that stopped reading must not hold its socket (and its
            # audio) until TCP keepalive gives up.
            self.send_started = None  # act once
            self.slow_consumer(f"writes blocked for over {self.s.stall_timeout_s:g} s")
            # The writer is stuck in send: close from here.
            if self.writer is not None:
                self.writer.cancel()
            self._closer = asyncio.ensure_future(self.t.close(1008, "slow consumer"))
        elif self.close_code is None and not self.contexts and now - self.last_activity > self.s.idle_timeout_s:
            self._send(protocol.error("idle_timeout", f"no message for {self.s.idle_timeout_s:g} s"))
            self.close(1000, "idle")
