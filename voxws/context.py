"""One context: its options, its text intake, its ordered output lane, how it ended.

The producer (voxws/producer.py) fills the lane; the session's writer empties it. Everything the
client is told about the context goes through `put_event` / `put_audio`, so `start` always comes
first, and audio is counted in samples as it is queued.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from voxws import codecs, protocol, sizing
from voxws.admission import Busy
from voxws.audio import Encoder
from voxws.engines.base import EngineError, VoicePrompt
from voxws.intake import Intake, Release, Sizer
from voxws.metrics import Metrics
from voxws.outbox import Audio, Event, Lane
from voxws.protocol import Options, ProtocolError
from voxws.shared import Shared, UnknownVoice


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
    intake: Intake
    voice_id: str | None = None  # the registered voice it speaks in (None: the model's own)
    prompt: VoicePrompt | None = None  # the voice prompt every segment is conditioned on, once known
    opened_at: float = field(default_factory=time.perf_counter)
    releases: asyncio.Queue[Release | None] = field(default_factory=asyncio.Queue)  # None: input ended
    lane: Lane = field(default_factory=Lane)
    queued_total: int = 0  # samples ever put in the lane: the audio start of what is put next
    sent_samples: int = 0
    chunks: int = 0
    chunks_counted: int = 0  # already added to the Prometheus counters (they are updated in batches)
    samples_counted: int = 0
    segment_count: int = 0  # segments submitted to the engine
    first_frame_at: float | None = None
    started: bool = False  # `start` queued
    on_wire: bool = False  # the writer has sent something of it
    dropping: bool = False  # stopped: what the producer still makes is not queued
    input_ended: bool = False
    outcome: Outcome | None = None
    producer: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    # (audio end in samples, source end): what the audio up to that point speaks, for `cancelled.source_end`
    spoken_marks: list[tuple[int, int]] = field(default_factory=list)

    @property
    def audio_ms(self) -> int:
        return int(self.sent_samples * 1000 / self.out_rate)

    @property
    def ttfb_ms(self) -> int | None:
        return None if self.first_frame_at is None else int((self.first_frame_at - self.opened_at) * 1000)

    @property
    def queued_seconds(self) -> float:
        return self.lane.queued_samples / self.out_rate

    @property
    def text_chars(self) -> int:
        return len(self.intake.source)

    def ms(self, samples: int) -> int:
        return int(samples * 1000 / self.out_rate)

    def _start(self) -> None:
        self.started = True
        self.lane.put(Event(protocol.start(self.id, self.options.format, self.out_rate)))

    def put_event(self, frame: str, start: bool = True) -> None:
        """Queue a message about this context; start=False for one that needs no audio after it."""
        if self.dropping:
            return
        if start and not self.started:
            self._start()
        self.lane.put(Event(frame))

    def put_audio(self, payload: bytes, samples: int) -> None:
        if self.dropping:
            return
        if not self.started:
            self._start()
        self.lane.put(Audio(payload, samples))
        self.queued_total += samples

    def final_frame(self) -> str:
        o = self.outcome
        assert o is not None
        if o.kind == "done":
            return protocol.done(self.id, audio_ms=self.audio_ms, ttfb_ms=self.ttfb_ms, chunks=self.chunks,
                                 text_chars=self.text_chars, segments=self.segment_count, voice=self.voice_id)
        if o.kind == "cancelled":
            return protocol.cancelled(self.id, self.audio_ms, self.source_end_sent())
        assert o.frame is not None
        return o.frame

    def count_sent(self, m: Metrics) -> None:
        """Add what was sent since the last call to the counters (they are updated in batches)."""
        m.chunks.inc(self.chunks - self.chunks_counted)
        m.audio_seconds.inc((self.sent_samples - self.samples_counted) / self.out_rate)
        self.chunks_counted, self.samples_counted = self.chunks, self.sent_samples

    def account(self, m: Metrics, outcome: str) -> None:
        """The context is gone (ended or its socket closed): count it once."""
        self.count_sent(m)
        m.contexts_active.dec()
        m.contexts.labels(outcome=outcome if outcome in ("done", "cancelled", "disconnected") else "error").inc()
        if outcome not in ("done", "cancelled", "disconnected"):
            m.errors.labels(code=outcome).inc()

    def source_end_sent(self) -> int:
        """Source offset up to which the audio sent so far speaks (segments, or words, sent in full)."""
        best = 0
        for end_samples, source_end in self.spoken_marks:
            if end_samples <= self.sent_samples and source_end > best:
                best = source_end
        return best


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
    native = engine.sample_rate
    rate = opts.sample_rate or codecs.default_rate(opts.format, native)  # Opus has no 44.1 kHz: 48 kHz
    try:
        bitrate = codecs.check(opts.format, rate, opts.bitrate)
    except codecs.CodecError as e:
        code = "bad_option" if e.option == "bitrate" else "unsupported_format"
        raise ProtocolError(code, str(e), cid) from None
    intake = Intake(language=opts.language, expand=opts.normalize, sizer=sizer, threshold_chars=s.text_buffer_chars)
    ctx = Context(cid, opts, Encoder(opts.format, native, rate, bitrate), rate, incremental, intake,
                  voice_id=voice_id, prompt=prompt)
    return ctx


def outcome_of(cid: str, err: BaseException | None) -> Outcome:
    """How a context ends when its producer returns (None) or fails with err."""
    if err is None:
        return Outcome("done")
    if isinstance(err, Busy):
        return Outcome("busy", protocol.error("busy", "the server's admission queue is full", cid,
                                              retry_after_ms=err.retry_after_ms))
    if isinstance(err, ProtocolError):
        return Outcome(err.code, err.frame())
    message = str(err) if isinstance(err, EngineError) else "internal error"
    return Outcome("engine_error", protocol.error("engine_error", message, cid))
