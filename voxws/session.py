"""One WebSocket connection: client messages in, contexts opened and ended, frames out in order.

Free of socket details: the edge hands in a Transport (send / close) and feeds received frames to
`handle_text` / `handle_binary`; the Writer (voxws/writer.py) sends everything and alone closes.
Driven without sockets by the fuzzers (tests/test_fuzz_session.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time

import structlog

from voxws import protocol, text
from voxws.admission import Busy, TokenBucket
from voxws.context import Context, Outcome, open_context, outcome_of
from voxws.engines.base import EngineDead, EngineError
from voxws.intake import Release
from voxws.producer import Producer
from voxws.protocol import Message, ProtocolError
from voxws.shared import Shared
from voxws.writer import Transport, Writer

__all__ = ["Session", "Shared", "Transport"]

log = structlog.get_logger("voxws.session")
_ids = itertools.count(1)
CONTROL_BACKLOG = 1024  # unsent JSON replies a socket may pile up before it is a slow consumer


class Session:
    def __init__(self, shared: Shared, transport: Transport, peer: str = ""):
        self.shared = shared
        self.s = shared.settings
        self.t = transport
        self.id = f"c{next(_ids)}"
        self.log = log.bind(conn=self.id, peer=peer)
        self.contexts: dict[str, Context] = {}
        self.closed = False
        self.last_activity = time.monotonic()
        self._bucket = TokenBucket(self.s.rate_limit_per_s)
        self.out = Writer(transport, max_unsent_audio_s=self.s.max_unsent_audio_s,
                          on_first_audio=shared.metrics.ttfb.observe, retire=self._retire,
                          after_final=self._after_final)

    @property
    def close_code(self) -> tuple[int, str] | None:
        return self.out.close_code

    @property
    def writer(self) -> asyncio.Task[None] | None:
        return self.out.task

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self.shared.sessions.add(self)
        self.out.send(self.shared.hello())
        if self.shared.draining:
            self.out.send(protocol.going_away("draining", int(self.s.drain_timeout_s * 1000)))
        self.out.start(f"writer-{self.id}")

    async def finish(self) -> None:
        """The client is gone or we closed: stop all work of this socket."""
        self.closed = True
        self.shared.sessions.discard(self)
        for ctx in list(self.contexts.values()):
            self._stop_context(ctx)
            self._account(ctx, "disconnected")
        self.contexts.clear()
        await self.out.stop()

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far is sent."""
        self.out.close(code, reason)

    @property
    def open_contexts(self) -> int:
        return len(self.contexts)

    # -- input -----------------------------------------------------------

    def handle_binary(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if not self._bucket.take():  # binary frames count too: each one would get a reply
            self._error(ProtocolError("rate_limited", f"over {self.s.rate_limit_per_s:g} messages per second"))
            return
        self._error(ProtocolError("bad_message", "binary frames are audio only, server to client"))

    def handle_text(self, frame: str) -> None:
        self.last_activity = time.monotonic()
        if not self._bucket.take():
            self._error(ProtocolError("rate_limited", f"over {self.s.rate_limit_per_s:g} messages per second"))
            return
        try:
            msg = protocol.parse(frame)
            getattr(self, f"_on_{msg.type}")(msg)
        except ProtocolError as e:
            self._error(e)

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
        ctx.releases.put_nowait(None)
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
        else:  # all audio of the text before it is queued already
            ctx.put_event(protocol.flushed(ctx.id, msg.flush_id), start=False)
            self._notify(ctx)

    def _on_end(self, msg: Message) -> None:
        ctx = self._incremental(msg)
        self._flush_buffer(ctx)
        ctx.input_ended = True
        ctx.releases.put_nowait(None)
        if not text.is_speakable(ctx.intake.source):
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
        self.out.add(ctx)
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
    def _enqueue(ctx: Context, release: Release | None) -> None:
        if release is not None:
            ctx.releases.put_nowait(release)

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

    async def _wait_room(self, ctx: Context) -> None:
        await self.out.wait_room(ctx, lambda: self.closed)

    def _notify(self, ctx: Context) -> None:
        """The producer queued items for ctx."""
        if not self.out.notify(ctx):
            self.slow_consumer(f"over {self.s.max_unsent_audio_s:g} s of audio unread")

    def _produced(self, ctx: Context, task: asyncio.Task[None]) -> None:
        """The producer ended: all audio is queued, or it failed."""
        if task.cancelled():
            return
        err = task.exception()  # retrieve it even when unused: no "exception never retrieved" noise
        if ctx.outcome is not None:
            return
        if err is not None and not isinstance(err, (Busy, ProtocolError, EngineError)):
            self.log.error("context_crashed", context=ctx.id, error=repr(err))
        elif isinstance(err, EngineError):
            self.log.warning("engine_error", context=ctx.id, error=str(err), dead=isinstance(err, EngineDead))
        self._end(ctx, outcome_of(ctx.id, err))

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
            self._send(ctx.final_frame())
        self.out.wake.set()

    def _retire(self, ctx: Context) -> None:
        """Remove a finished context from the socket; account for it once."""
        if not self.out.remove(ctx):
            return
        if self.contexts.get(ctx.id) is ctx:
            del self.contexts[ctx.id]
        assert ctx.outcome is not None
        self._account(ctx, ctx.outcome.kind)
        self.last_activity = time.monotonic()

    def _account(self, ctx: Context, outcome: str) -> None:
        ctx.account(self.shared.metrics, outcome)
        self.log.info("context", context=ctx.id, outcome=outcome, ttfb_ms=ctx.ttfb_ms, audio_ms=ctx.audio_ms,
                      chunks=ctx.chunks, segments=ctx.segment_count, text_chars=ctx.text_chars, voice=ctx.voice_id)

    # -- output ----------------------------------------------------------

    def _after_final(self) -> None:
        if self.shared.draining and not self.contexts:
            self.close(1001, "server draining")

    def _send(self, frame: str) -> None:
        if self.out.send(frame) > CONTROL_BACKLOG:
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
        self.out.send(protocol.error("slow_consumer", why))
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

    def tick(self, now: float) -> None:
        """Called about twice a second: metrics of long streams, idle and stalled-writer checks."""
        for ctx in self.out.order:
            ctx.count_sent(self.shared.metrics)
        if self.out.stalled(now, self.s.stall_timeout_s):
            # Checked while closing too: a client that stopped reading must not hold its socket (and its
            # audio) until TCP keepalive gives up.
            self.slow_consumer(f"writes blocked for over {self.s.stall_timeout_s:g} s")
            self.out.abort(1008, "slow consumer")
        elif self.close_code is None and not self.contexts and now - self.last_activity > self.s.idle_timeout_s:
            self._send(protocol.error("idle_timeout", f"no message for {self.s.idle_timeout_s:g} s"))
            self.close(1000, "idle")
