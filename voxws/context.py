"""One context: its options, its text intake, its ordered output lane, how it ended.

The producer (voxws/producer.py) fills the lane; the session's writer empties it. Everything the
client is told about the context goes through `put_event` / `put_audio`, so `start` always comes
first, and audio is counted in samples as it is queued.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from voxws import protocol
from voxws.audio import Encoder
from voxws.engines.base import VoicePrompt
from voxws.intake import Intake, Segment
from voxws.outbox import Audio, Event, Lane
from voxws.protocol import Options


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
    segments: asyncio.Queue[Segment | None] = field(default_factory=asyncio.Queue)
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

    def source_end_sent(self) -> int:
        """Source offset up to which the audio sent so far speaks (segments, or words, sent in full)."""
        best = 0
        for end_samples, source_end in self.spoken_marks:
            if end_samples <= self.sent_samples and source_end > best:
                best = source_end
        return best
