"""One `speak` outside a WebSocket: the context behind an HTTP speech request.

The same core as a WebSocket context (open_context: voice, sizing, intake; Producer: segments through
the engine gaplessly, in one voice), with the request as its only reader: `first()` waits for the
first audio or the refusal (so the HTTP status is known before the headers go), iteration yields the
encoded payloads as they are made, and `aclose()` (a client that went away) cancels the engine work,
freeing its slot before the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator

from voxws.context import Context, Outcome, open_context, outcome_of
from voxws.outbox import Audio
from voxws.producer import Producer
from voxws.protocol import Options, ProtocolError
from voxws.shared import Shared
from voxws.text import is_speakable
from voxws.writer import HEAD_AHEAD_S

_ids = itertools.count(1)


class SpeechFailed(Exception):
    """The context ended with an error: `code` is the protocol's, `frame` the error message."""

    def __init__(self, outcome: Outcome):
        err = json.loads(outcome.frame) if outcome.frame else {}
        super().__init__(err.get("message", outcome.kind))
        self.code = outcome.kind
        self.message = str(err.get("message", outcome.kind))
        self.retry_after_ms: int | None = err.get("retry_after_ms")


class Speech:
    def __init__(self, shared: Shared, text: str, options: Options):
        s = shared.settings
        if shared.draining:
            raise ProtocolError("shutting_down", "the server is draining")
        if len(text) > s.max_text_chars:
            raise ProtocolError("text_too_long", f"input over {s.max_text_chars} characters")
        if not is_speakable(text):
            raise ProtocolError("empty_text", "input is empty or only whitespace/punctuation")
        self.shared = shared
        self.ctx: Context = open_context(shared, f"h{next(_ids)}", options, incremental=False)
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._accounted = False
        ctx = self.ctx
        for rel in (ctx.intake.speak(text), None):
            ctx.releases.put_nowait(rel)
        ctx.input_ended = True
        producer = Producer(ctx, shared.engine, shared.admission, notify=self._notify, on_queued=lambda c, p: None,
                            on_admitted=lambda c, w: shared.metrics.queue_wait.observe(w), wait_room=self._wait_room,
                            prompt_key=f"http:{ctx.id}")
        ctx.producer = producer.task = asyncio.create_task(producer.run(), name=f"speech-{ctx.id}")
        ctx.producer.add_done_callback(self._produced)
        shared.metrics.contexts_active.inc()

    def _notify(self, ctx: Context) -> None:
        self._changed.set()

    async def _wait_room(self, ctx: Context) -> None:
        # The body is paced by the client's reading (uvicorn waits for the socket): the next segment
        # waits while the client has more than HEAD_AHEAD_S of this one unread.
        while ctx.queued_seconds > HEAD_AHEAD_S:
            self._room.clear()
            await self._room.wait()

    def _produced(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.ctx.outcome is not None:
            return
        self.ctx.outcome = outcome_of(self.ctx.id, task.exception())
        self._changed.set()

    async def first(self) -> None:
        """Wait until audio is ready or the context failed (raises SpeechFailed)."""
        ctx = self.ctx
        while not any(type(i) is Audio and i.samples for i in ctx.lane.items):
            if ctx.outcome is not None:
                self._raise()
                return
            self._changed.clear()
            await self._changed.wait()

    def _raise(self) -> None:
        o = self.ctx.outcome
        if o is not None and o.kind not in ("done", "cancelled"):
            self._account(o.kind)
            raise SpeechFailed(o)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ctx = self.ctx
        m = self.shared.metrics
        while True:
            if ctx.lane:
                item = ctx.lane.take()
                self._room.set()
                if type(item) is not Audio:
                    continue  # segment / words messages have no place in an audio body
                if ctx.first_frame_at is None and item.samples:
                    ctx.first_frame_at = time.perf_counter()
                    m.ttfb.observe(ctx.first_frame_at - ctx.opened_at)
                yield item.payload
                ctx.sent_samples += item.samples
                ctx.chunks += 1
                continue
            if ctx.outcome is not None:
                if ctx.outcome.kind == "done":
                    self._account("done")
                    return
                self._raise()
                return
            self._changed.clear()
            await self._changed.wait()

    def stop(self) -> None:
        """Stop now (the client went away, or the body ended): cancels the engine work, whose slot is
        free before the next step. Synchronous, so it runs even inside a cancelled request task."""
        ctx = self.ctx
        ctx.dropping = True
        if ctx.producer is not None and not ctx.producer.done():
            ctx.producer.cancel()
        if ctx.outcome is None:
            ctx.outcome = Outcome("disconnected")
        self._account(ctx.outcome.kind)

    async def aclose(self) -> None:
        self.stop()
        if self.ctx.producer is not None:
            await asyncio.gather(self.ctx.producer, return_exceptions=True)

    def _account(self, outcome: str) -> None:
        if not self._accounted:
            self._accounted = True
            self.ctx.account(self.shared.metrics, outcome)

