"""One context: text in, encoded audio frames out, in order, segment after segment.

A context's text is cut into segments that each fit the engine's `max_model_len`.
Every segment is one engine request holding one admission slot. The next segment is
submitted while the current one streams, LOOKAHEAD steps before its expected end, so
its first chunk is ready when the current one ends and the audio has no gap; its few
early chunks wait in `pending` until then. At most two segments of a context are in
the engine at once, and what waits is bounded by LOOKAHEAD chunks. Chunks are encoded in order through one Encoder (one
resampler stream per context), so segment seams are seamless too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from voxws import sizing
from voxws.admission import Admission, Busy
from voxws.audio import Encoder
from voxws.engines.base import Engine, EngineError, GenerateRequest
from voxws.protocol import Options, ProtocolError
from voxws.text import TextBuffer

LOOKAHEAD = 8  # steps: covers slot hand-over + prefill of the next segment with room to spare


@dataclass
class Outcome:
    """How a context ended: 'done', 'cancelled' or an error code (with its frame)."""

    kind: str
    frame: str | None = None  # pre-built frame for errors


@dataclass(eq=False)
class Context:
    id: str
    options: Options
    encoder: Encoder
    out_rate: int
    incremental: bool
    opened_at: float = field(default_factory=time.perf_counter)
    segments: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    buffer: TextBuffer | None = None
    frames: deque[bytes] = field(default_factory=deque)
    queued_samples: int = 0  # encoded, not yet sent (output rate)
    sent_samples: int = 0
    chunks: int = 0
    chunks_counted: int = 0  # already added to the Prometheus counters (they are updated in batches)
    samples_counted: int = 0
    text_chars: int = 0
    segment_count: int = 0  # segments submitted to the engine
    enqueued: int = 0  # segments cut from the text so far
    first_frame_at: float | None = None
    started: bool = False  # `start` sent
    input_ended: bool = False
    outcome: Outcome | None = None
    producer: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def audio_ms(self) -> int:
        return int(self.sent_samples * 1000 / self.out_rate)

    @property
    def ttfb_ms(self) -> int | None:
        return None if self.first_frame_at is None else int((self.first_frame_at - self.opened_at) * 1000)

    @property
    def queued_seconds(self) -> float:
        return self.queued_samples / self.out_rate


class Producer:
    """Drives one context's segments through the engine. Owned by the session."""

    def __init__(self, ctx: Context, engine: Engine, admission: Admission, *, push: Callable[[Context, bytes], None],
                 on_queued: Callable[[Context, int], None], on_admitted: Callable[[Context, float], None],
                 wait_room: Callable[[Context], Awaitable[None]]):
        self.ctx = ctx
        self.engine = engine
        self.admission = admission
        self.push = push
        self.on_queued = on_queued
        self.on_admitted = on_admitted
        self.wait_room = wait_room
        self.runs: list[_SegmentRun] = []
        self.task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        """A segment failed: stop the whole context with that error."""
        if self.failure is None:
            self.failure = error
            if self.task is not None:
                self.task.cancel()

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            if self.failure is not None:
                raise self.failure from None
            raise

    async def _run(self) -> None:
        ctx = self.ctx
        prev: _SegmentRun | None = None
        try:
            while True:
                text = await ctx.segments.get()
                if text is None:
                    break
                if prev is not None:
                    await prev.handoff.wait()  # the current segment is near its end
                    await self.wait_room(ctx)  # the client has taken enough of what it was given
                run = _SegmentRun(self, text, ctx.segment_count, after=prev)
                ctx.segment_count += 1
                self.runs.append(run)
                run.task = asyncio.create_task(run.main())
                prev = run
                self.runs = [r for r in self.runs if not r.complete.is_set()]
            if prev is not None:
                await prev.complete.wait()
            tail = ctx.encoder.flush()
            if tail:
                self.push(ctx, tail)
        finally:
            for r in self.runs:
                if r.task is not None and not r.task.done():
                    r.task.cancel()

    def emit(self, chunk: np.ndarray) -> None:
        data = self.ctx.encoder.encode(chunk)
        if data:
            self.push(self.ctx, data)


class _SegmentRun:
    def __init__(self, producer: Producer, text: str, index: int, after: _SegmentRun | None):
        self.p = producer
        self.text = text
        self.index = index
        self.after = after
        self.current = after is None or after.complete.is_set()  # its chunks may go out now
        self.pending: list[np.ndarray] = []
        self.expected = sizing.estimate_steps(text)
        self.produced = 0
        self.handoff = asyncio.Event()  # current and near its end (or ended): time to submit the next
        self.generated = False
        self.complete = asyncio.Event()  # generated and every chunk handed on
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.next: _SegmentRun | None = None
        if after is not None:
            after.next = self

    async def main(self) -> None:
        p, ctx, engine = self.p, self.p.ctx, self.p.engine
        try:
            t0 = time.perf_counter()
            first = self.index == 0
            await p.admission.acquire(priority=not first,
                                      on_queued=(lambda pos: p.on_queued(ctx, pos)) if first else None)
            if first:
                p.on_admitted(ctx, time.perf_counter() - t0)
            held = time.perf_counter()
            try:
                prompt = engine.count_tokens(self.text)
                steps = sizing.max_generate_length(prompt, engine.max_model_len, self.expected)
                request = GenerateRequest(
                    text=self.text, max_generate_length=steps, cfg_value=ctx.options.cfg_value,
                    temperature=ctx.options.temperature, seed=ctx.options.seed, voice=ctx.options.voice,
                    tag=f"{ctx.id}/{self.index}",
                )
                stream = engine.generate(request)
                try:
                    async for chunk in stream:
                        self.produced += 1
                        if self.current:
                            p.emit(chunk)
                            if self.produced >= self.expected - LOOKAHEAD:
                                self.handoff.set()
                        else:
                            self.pending.append(chunk)
                finally:
                    await stream.aclose()  # cancels the sequence in the engine when we stop early
            finally:
                p.admission.release(time.perf_counter() - held)
        except (Busy, ProtocolError, EngineError) as e:
            self.error = e
            p.fail(e)
        finally:
            self.generated = True
            if self.current:
                self.handoff.set()
                self._finish()

    def _promote(self) -> None:
        self.current = True
        for chunk in self.pending:
            self.p.emit(chunk)
        self.pending.clear()
        if self.generated or self.produced >= self.expected - LOOKAHEAD:
            self.handoff.set()
        if self.generated:
            self._finish()

    def _finish(self) -> None:
        self.complete.set()
        if self.error is None and self.next is not None:
            self.next._promote()
