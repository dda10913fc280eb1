"""Drives one context's segments through the engine, in order, gaplessly, in one voice.

Every segment is one engine request holding one admission slot. The next segment is submitted while
the current one streams, LOOKAHEAD steps before its expected end, so its first chunk is ready when the
current one ends; its early chunks wait in `pending` until then. At most two segments of a context are
in the engine at once. Chunks go through the context's one Encoder (one resampler stream), so segment
seams are seamless too.

Voice: every segment is conditioned on the context's voice prompt. A context that names no voice (and
whose server has no default) is conditioned on its own first segment: that segment's audio and spoken
text become the prompt of the rest, so a long text or an LLM's sentences keep one speaker. Segment 1
then waits until segment 0 has been generated in full (its audio is the prompt); later ones overlap.

Progress: before a segment's first audio the producer queues its `segment` message, and with word
timestamps, before each packet the `words` whose estimated start falls in it (voxws/progress.py).

Encoding: PCM and WAV encode inline (tens of microseconds a chunk). The compressed formats cost up to
milliseconds a chunk (docs/benchmarks.md, "Encoding cost"), so their chunks go through an ordered
stage: one task per context that awaits the encoder off the event loop, then queues in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
import structlog

from voxws import progress, protocol, sizing
from voxws.admission import Admission, Busy
from voxws.audio import Packet
from voxws.context import Context
from voxws.engines.base import Engine, EngineError, GenerateRequest, VoicePrompt
from voxws.intake import Release, Segment
from voxws.protocol import ProtocolError

LOOKAHEAD = 8  # steps: covers slot hand-over + prefill of the next segment with room to spare
log = structlog.get_logger("voxws.producer")


class Producer:
    """Owned by whoever opened the context (a WebSocket session, an HTTP request)."""

    def __init__(self, ctx: Context, engine: Engine, admission: Admission, *, notify: Callable[[Context], None],
                 on_queued: Callable[[Context, int], None], on_admitted: Callable[[Context, float], None],
                 wait_room: Callable[[Context], Awaitable[None]], prompt_key: str):
        self.ctx = ctx
        self.engine = engine
        self.admission = admission
        self.notify = notify  # audio or events were queued
        self.on_queued = on_queued
        self.on_admitted = on_admitted
        self.wait_room = wait_room
        self.prompt_key = prompt_key
        self.runs: list[SegmentRun] = []
        self.task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.native_to_out = ctx.out_rate / engine.sample_rate
        # Heavy encoders: (run, chunk) in order; chunk None: the run's audio is all made; run None: an event.
        self.stage: asyncio.Queue[tuple[SegmentRun | None, np.ndarray | str | None]] | None = None
        self.stage_task: asyncio.Task[None] | None = None
        self.closed = False  # run() has ended: runs still unwinding queue nothing more
        if ctx.encoder.heavy:
            self.stage = asyncio.Queue()

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
        prev: SegmentRun | None = None
        first: SegmentRun | None = None
        try:
            while True:
                rel = await ctx.releases.get()
                if rel is None:
                    break
                segments = await ctx.intake.cut(rel)
                if not segments:
                    self._nothing_to_say(rel, prev)
                for seg in segments:
                    if prev is not None:
                        await prev.handoff.wait()  # the current segment is near its end
                        await self.wait_room(ctx)  # the client has taken enough of what it was given
                    if first is not None and first.keep is not None:
                        await first.generated.wait()  # its audio is the prompt of this one
                        self._keep_voice(first)
                    run = SegmentRun(self, seg, after=prev)
                    if first is None:
                        first = run
                        if ctx.prompt is None and ctx.voice_id is None and (ctx.incremental or len(segments) > 1):
                            run.keep = []
                    ctx.segment_count += 1
                    self.runs.append(run)
                    run.task = asyncio.create_task(run.main())
                    prev = run
                    self.runs = [r for r in self.runs if not r.complete.is_set()]
            if prev is not None:
                await prev.complete.wait()
            if self.stage is not None:
                await self.stage.join()
            for pkt in await ctx.encoder.flush_packets_async():
                ctx.put_audio(pkt.data, pkt.samples)
            tail = ctx.intake.tail()
            if tail is not None:  # so that the segments cover every character of the text (no audio of its own)
                ctx.put_event(protocol.segment(ctx.id, index=tail.index, text=tail.text, spoken="",
                                               source_start=tail.source_start, source_end=tail.source_end,
                                               audio_start_ms=ctx.ms(ctx.queued_total)))
                ctx.segment_count += 1
                ctx.spoken_marks.append((ctx.queued_total, tail.source_end))
            self.notify(ctx)
        finally:
            self.closed = True
            for r in self.runs:
                if r.task is not None and not r.task.done():
                    r.task.cancel()
            if self.stage_task is not None:
                self.stage_task.cancel()

    def _nothing_to_say(self, rel: Release, prev: SegmentRun | None) -> None:
        """A release with nothing speakable: its flushes are answered with the audio before it."""
        before = prev.seg.release if prev is not None else None
        if before is not None and not before.finished:
            before.flush_ids.extend(rel.flush_ids)
            rel.flush_ids = before.flush_ids
            rel.after = before
            return
        rel.done = True
        for fid in rel.flush_ids:
            self._event(protocol.flushed(self.ctx.id, fid))

    def _event(self, frame: str) -> None:
        """A message that needs no audio after it (`flushed`), in order with the audio before it."""
        if self.stage is not None:
            self._staged(None, frame)
            return
        self.ctx.put_event(frame, start=False)
        self.notify(self.ctx)

    def _staged(self, run: SegmentRun | None, item: np.ndarray | str | None) -> None:
        assert self.stage is not None
        if self.closed or self.ctx.dropping:
            return  # a run unwinding after the context ended: nothing of it goes out
        if self.stage_task is None:
            self.stage_task = asyncio.create_task(self._stage_loop(), name=f"encode-{self.ctx.id}")
        self.stage.put_nowait((run, item))

    async def _stage_loop(self) -> None:
        assert self.stage is not None
        while True:
            run, item = await self.stage.get()
            try:
                if run is None:
                    self.ctx.put_event(str(item), start=False)
                    self.notify(self.ctx)
                elif item is None:
                    self._finished(run)
                else:
                    assert not isinstance(item, str)
                    self._emit_packets(run, await self.ctx.encoder.packets_async(item))
            except Exception as e:  # the encoder failed: the context fails, as on an engine error
                self.fail(EngineError(f"encoding failed: {e}"))
            finally:
                self.stage.task_done()

    def _keep_voice(self, first: SegmentRun) -> None:
        """The first segment becomes the context's voice prompt, if it fits its share of max_model_len."""
        chunks, first.keep = first.keep, None
        if not chunks or first.error is not None:
            return
        audio = np.concatenate(chunks).astype(np.float32) / 32767
        spoken = first.seg.spoken
        cost = sizing.voice_positions(self.engine.count_tokens(spoken), len(audio))
        if cost > sizing.continuity_budget(self.engine.max_model_len):
            log.info("continuity_skipped", context=self.ctx.id, positions=cost)
            return
        self.ctx.prompt = VoicePrompt(key=self.prompt_key, text=spoken, audio=audio, positions=cost)

    # -- output (called by the runs, in audio order) ----------------------------------------------

    def announce(self, run: SegmentRun) -> None:
        ctx, seg = self.ctx, run.seg
        run.announced = True
        run.audio_start = ctx.queued_total
        ctx.put_event(protocol.segment(ctx.id, index=seg.index, text=seg.text, spoken=seg.spoken,
                                       source_start=seg.source_start, source_end=seg.source_end,
                                       audio_start_ms=ctx.ms(run.audio_start)))
        if ctx.options.timestamps == "word":
            expected = int(run.expected * self.engine.chunk_samples * self.native_to_out)
            run.words = progress.schedule(ctx.intake.source, seg, expected)

    def emit(self, run: SegmentRun, chunk: np.ndarray) -> None:
        if self.stage is not None:
            self._staged(run, chunk)
            return
        self._emit_packets(run, self.ctx.encoder.packets(chunk))

    def _emit_packets(self, run: SegmentRun, packets: list[Packet]) -> None:
        ctx = self.ctx
        if not run.announced:
            self.announce(run)
        for pkt in packets:
            if run.words:
                self._words(run, ctx.queued_total - run.audio_start + pkt.samples, None)
            ctx.put_audio(pkt.data, pkt.samples)
        self.notify(ctx)

    def _words(self, run: SegmentRun, before: int, clamp: int | None) -> None:
        """Queue the words of `run` starting before sample `before` of the segment (clamped to `clamp`)."""
        words = run.words
        i = run.word_i
        j = i
        while j < len(words) and words[j].start < before:
            j += 1
        if j == i:
            return
        run.word_i = j
        ctx, base = self.ctx, run.audio_start
        picked = words[i:j]
        starts = [w.start if clamp is None else min(w.start, clamp) for w in picked]
        ends = [w.end if clamp is None else min(w.end, clamp) for w in picked]
        ctx.put_event(protocol.words(
            ctx.id, words=[w.text for w in picked], start_ms=[ctx.ms(base + s) for s in starts],
            end_ms=[ctx.ms(base + e) for e in ends], source_start=[w.source_start for w in picked],
            source_end=[w.source_end for w in picked], estimated=True))
        ctx.spoken_marks.extend((base + e, w.source_end) for w, e in zip(picked, ends, strict=True))

    def finished(self, run: SegmentRun) -> None:
        if self.stage is not None:
            self._staged(run, None)
            return
        self._finished(run)

    def _finished(self, run: SegmentRun) -> None:
        """All of the segment's audio is queued: the rest of its words, its end, flush answers."""
        ctx, seg = self.ctx, run.seg
        if not run.announced:
            self.announce(run)
        if run.words:
            length = ctx.queued_total - run.audio_start
            self._words(run, 1 << 62, length)
        ctx.spoken_marks.append((ctx.queued_total, seg.source_end))
        if seg.release is not None:
            seg.release.done = True
            for fid in seg.release.flush_ids:
                ctx.put_event(protocol.flushed(ctx.id, fid))
        self.notify(ctx)


class SegmentRun:
    def __init__(self, producer: Producer, seg: Segment, after: SegmentRun | None):
        self.p = producer
        self.seg = seg
        self.after = after
        self.current = after is None or after.complete.is_set()  # its chunks may go out now
        self.pending: list[np.ndarray] = []
        self.expected = sizing.estimate_steps(seg.spoken)
        self.produced = 0
        self.handoff = asyncio.Event()  # current and near its end (or ended): time to submit the next
        self.generated = asyncio.Event()  # the engine has made all of it
        self.complete = asyncio.Event()  # generated and every chunk handed on
        # Native chunks kept for the continuity prompt, as 16-bit samples (half the memory of float32; the
        # engine is handed 16-bit WAV anyway).
        self.keep: list[np.ndarray] | None = None
        self.announced = False
        self.audio_start = 0
        self.words: list[progress.Word] = []
        self.word_i = 0
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.next: SegmentRun | None = None
        if after is not None:
            after.next = self

    def _request(self) -> GenerateRequest:
        p, ctx, seg = self.p, self.p.ctx, self.seg
        engine = p.engine
        prompt = ctx.prompt
        fit = sizing.fit(seg.spoken, engine.max_model_len, engine.count_tokens, voice=prompt.positions if prompt else 0)
        if prompt is not None and fit.prompt >= engine.max_model_len:
            raise ProtocolError("text_too_long", f"segment {seg.index} does not fit max_model_len "
                                f"{engine.max_model_len} with its voice prompt", ctx.id)
        return GenerateRequest(text=seg.spoken, max_generate_length=fit.steps, cfg_value=ctx.options.cfg_value,
                               temperature=ctx.options.temperature, seed=ctx.options.seed, prompt=prompt,
                               tag=f"{ctx.id}/{seg.index}", segment=seg.index)

    async def main(self) -> None:
        p, ctx = self.p, self.p.ctx
        try:
            t0 = time.perf_counter()
            first = self.seg.index == 0
            await p.admission.acquire(priority=not first,
                                      on_queued=(lambda pos: p.on_queued(ctx, pos)) if first else None)
            if first:
                p.on_admitted(ctx, time.perf_counter() - t0)
            held = time.perf_counter()
            try:
                stream = p.engine.generate(self._request())
                try:
                    async for chunk in stream:
                        self.produced += 1
                        if self.keep is not None:
                            self.keep.append(np.rint(np.clip(chunk, -1.0, 1.0) * 32767).astype(np.int16))
                        if self.current:
                            p.emit(self, chunk)
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
            self.generated.set()
            if self.current:
                self.handoff.set()
                self._finish()

    def _promote(self) -> None:
        self.current = True
        for chunk in self.pending:
            self.p.emit(self, chunk)
        self.pending.clear()
        if self.generated.is_set() or self.produced >= self.expected - LOOKAHEAD:
            self.handoff.set()
        if self.generated.is_set():
            self._finish()

    def _finish(self) -> None:
        if self.error is None:
            self.p.finished(self)
        self.complete.set()
        if self.error is None and self.next is not None:
            self.next._promote()
