"""A CPU stand-in for nano-vllm-voxcpm that behaves like it, for development, tests and CI.

Same as the real engine: one batched step loop per device, a FIFO `waiting` queue and a
`running` list, prefill before decode, at most `max_num_seqs` sequences per step, chunks
of 7056 float32 samples at 44.1 kHz, the refusal when prompt + max_generate_length >
max_model_len, cancellation between steps. Also like the real scheduler, the surplus over
`max_num_seqs` is prefilled (gets its first chunk) and then starves while the first
`max_num_seqs` running sequences take every decode step: the server must keep it out.

Step time follows t(batch) = base + per_seq * batch (H100 figures by default).

Audio: a tone whose pitch follows the text and the speaker, one pitch per step, every pitch
a multiple of 6.25 Hz so each chunk holds whole periods and chunk seams are click-free. The
first samples of each chunk carry a mark (tag hash, segment, step, worker step, speaker) that
survives pcm_s16le exactly, so tests can prove no chunk is lost, duplicated or reordered and
which voice spoke it. The mark is written in 7-bit pieces (at most 127/32768 = -48 dBFS) so
that it stays inaudible.

Voices, as the real model: without a prompt the speaker comes from the text and the seed (so
two segments of one text can differ); with a prompt it is the prompt's speaker (read from a
synthetic recording's own mark, else derived from the recording's samples), the prompt's
positions count against max_model_len, and encoding a new prompt costs PROMPT_ENCODE_S of
that worker's time (the real engine runs its VAE encoder on the worker, stalling its steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from voxws import sizing
from voxws.config import Settings
from voxws.engines.base import EngineDead, EngineError, EngineRefused, EngineStartError, GenerateRequest, VoicePrompt
from voxws.engines.coalesce import Coalescer

SAMPLE_RATE = sizing.SAMPLE_RATE
CHUNK = sizing.CHUNK_SAMPLES  # 4 latent frames x 1764 samples = 0.16 s
MARK_MAGIC = 0x2A5A  # 14-bit values, each written as two 7-bit samples:
_MARK_SCALE = 1.0 / 32768  # exact through s16, since round(v / 32768 * 32767) == v for v < 2**14
MARK_FIELDS = 7
MARK_SAMPLES = 2 * MARK_FIELDS
COALESCE_S = 0.002
PROMPT_ENCODE_S = 0.02  # a worker's time to encode a new voice prompt
_PITCHES = np.arange(20, 68)  # x 6.25 Hz: 125-419 Hz
SPEAKER_PITCH_STEPS = 8  # a speaker shifts the whole tone by 0-7 pitch steps (x 6.25 Hz)


def _tone_table() -> np.ndarray:
    t = np.arange(CHUNK, dtype=np.float64) / SAMPLE_RATE
    freqs = _PITCHES * (SAMPLE_RATE / CHUNK)
    # A soft vowel-like timbre: fundamental plus two harmonics.
    table = sum(a * np.sin(2 * np.pi * h * freqs[:, None] * t) for h, a in ((1, 0.22), (2, 0.08), (3, 0.04)))
    return np.asarray(table, dtype=np.float32)


_TONES = _tone_table()


def tag_hash(tag: str) -> int:
    return zlib.crc32(tag.encode()) & 0x3FFF


def natural_steps(text: str) -> int:
    """Steps the synthetic 'model' speaks a text in: exactly the sizing rule's natural estimate
    (0.25 s per CJK character, 0.07 s per other letter or digit)."""
    return sizing.estimate_steps(text)


def _write_mark(chunk: np.ndarray, values: list[int]) -> None:
    pieces = [p for v in values for p in (v >> 7, v & 0x7F)]
    chunk[: len(pieces)] = np.array(pieces, np.float32) * _MARK_SCALE


def _read_fields(samples_s16: np.ndarray) -> list[int] | None:
    if len(samples_s16) < MARK_SAMPLES:
        return None
    raw = samples_s16[:MARK_SAMPLES].astype(np.int64)
    fields = [int(raw[2 * i]) << 7 | int(raw[2 * i + 1]) for i in range(MARK_FIELDS)]
    return fields if fields[0] == MARK_MAGIC else None


def speaker_of(samples_s16: np.ndarray) -> int | None:
    """The speaker field of a synthetic chunk's mark (pcm_s16le at the native rate), or None."""
    fields = _read_fields(samples_s16)
    return None if fields is None else fields[6]


def prompt_speaker(prompt: VoicePrompt) -> int:
    """Who a prompt recording is: the speaker of a synthetic recording (a continuity prompt made of
    this engine's own audio), else a hash of the recording (an uploaded voice)."""
    s16 = np.clip(np.rint(prompt.audio[:MARK_SAMPLES] * 32768), -32768, 32767).astype(np.int16)
    found = speaker_of(s16)
    if found is not None:
        return found
    return zlib.crc32(np.asarray(prompt.audio, np.float32).tobytes()) & 0x3FFF


def text_speaker(text: str, seed: int | None) -> int:
    """The voice the 'model' picks when no prompt is given: from the text and the seed."""
    return zlib.crc32(f"{seed}|{text}".encode("utf-8", "surrogatepass")) & 0x3FFF


def engine_step(samples_s16: np.ndarray) -> int:
    """The worker's step counter (mod 2**14) at which this chunk was produced."""
    fields = _read_fields(samples_s16)
    assert fields is not None, "not a synthetic chunk"
    return fields[5]


def read_mark(samples_s16: np.ndarray) -> tuple[int, int, int] | None:
    """(tag_hash, segment, step) from the first samples of a pcm_s16le chunk, or None."""
    fields = _read_fields(samples_s16)
    if fields is None:
        return None
    _, h, seg, lo, hi, _, _ = fields
    return h, seg, lo | (hi << 14)


@dataclass(eq=False)
class _Seq:
    text: str
    steps: int
    tag: str
    segment: int
    speaker: int
    encode_s: float  # worker time to encode its prompt first (0 when none or already known)
    out: asyncio.Queue[np.ndarray | BaseException | None] = field(default_factory=asyncio.Queue)
    done_steps: int = 0
    cancelled: bool = False
    finished: bool = False


class _Worker:
    """One device: the scheduler and step loop of one engine process."""

    def __init__(self, engine: SyntheticEngine, index: int):
        self.engine = engine
        self.index = index
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self.wake = asyncio.Event()
        self.steps = 0
        self._emit_cost = 0.0  # producing the outputs counts as part of the next step's time
        self.task: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.running)

    def add(self, seq: _Seq) -> None:
        self.waiting.append(seq)
        self.wake.set()

    def cancel(self, seq: _Seq) -> None:
        seq.cancelled = True
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.running:
            self.running.remove(seq)

    def _schedule(self) -> list[_Seq]:
        s = self.engine.settings
        if self.waiting:  # prefill first, FIFO, up to max_num_seqs per step
            batch = []
            while self.waiting and len(batch) < s.max_num_seqs:
                seq = self.waiting.popleft()
                self.running.append(seq)
                batch.append(seq)
            return batch
        return self.running[: s.max_num_seqs]  # decode: the first max_num_seqs only, as the real one

    async def loop(self) -> None:
        s = self.engine.settings
        base, per_seq = s.synthetic_step_base_ms / 1000, s.synthetic_step_per_seq_ms / 1000
        while True:
            batch = self._schedule()
            if not batch:
                self._emit_cost = 0.0
                self.wake.clear()
                await self.wake.wait()
                # An idle nano-vllm worker gathers a burst for 2 ms before its first step
                # (NANOVLLM_QUEUE_COALESCE_MS), so a burst is prefilled as one batch.
                await asyncio.sleep(COALESCE_S)
                continue
            # The step's compute (plus encoding the prompts of new sequences), then its outputs; a sequence
            # cancelled meanwhile gets nothing.
            encode = sum(seq.encode_s for seq in batch if seq.done_steps == 0)
            await asyncio.sleep(max(0.0, base + per_seq * len(batch) + encode - self._emit_cost))
            self.steps += 1
            crash = s.synthetic_crash_after_steps
            if crash is not None and self.steps >= crash:
                self.engine._die(f"synthetic worker {self.index} crashed after {self.steps} steps (fault injection)")
                return
            t0 = time.perf_counter()
            for seq in batch:
                if not seq.cancelled:
                    self._emit(seq)
            self._emit_cost = time.perf_counter() - t0

    def _emit(self, seq: _Seq) -> None:
        step = seq.done_steps
        pos = min(len(seq.text) - 1, step * len(seq.text) // max(1, seq.steps))
        pitch = (ord(seq.text[pos]) % (len(_PITCHES) - SPEAKER_PITCH_STEPS)) + seq.speaker % SPEAKER_PITCH_STEPS
        chunk = _TONES[pitch].copy()
        # Fade the last chunk out so the end of speech has no click.
        if step == seq.steps - 1:
            chunk[-512:] *= np.linspace(1, 0, 512, dtype=np.float32)
        h = tag_hash(seq.tag)
        _write_mark(chunk, [MARK_MAGIC, h, seq.segment, step & 0x3FFF, (step >> 14) & 0x3FFF, self.steps & 0x3FFF,
                            seq.speaker])
        seq.done_steps += 1
        seq.out.put_nowait(chunk)
        if seq.done_steps >= seq.steps:
            seq.finished = True
            self.running.remove(seq)
            seq.out.put_nowait(None)


class SyntheticEngine:
    name = "synthetic"
    model = "synthetic-voxcpm1.5"
    sample_rate = SAMPLE_RATE
    chunk_samples = CHUNK

    def __init__(self, settings: Settings):
        self.settings = settings
        self.max_model_len = settings.max_model_len
        self.max_num_seqs = settings.max_num_seqs
        self.num_workers = len(settings.devices)
        self._workers: list[_Worker] = []
        self._dead: str | None = None
        self._coalescer = Coalescer()  # as the nano-vllm adapter: a burst becomes one prefill
        self._encoded: set[str] = set()  # prompt keys already encoded (the real adapter caches latents)

    async def start(self) -> None:
        if self._workers:
            return
        if self.settings.synthetic_crash_after_steps == 0:
            raise EngineStartError("synthetic engine: crash_after_steps must be positive")
        self._workers = [_Worker(self, i) for i in range(self.num_workers)]
        for w in self._workers:
            w.task = asyncio.create_task(w.loop(), name=f"synthetic-worker-{w.index}")

    async def stop(self) -> None:
        for w in self._workers:
            if w.task:
                w.task.cancel()
        for w in self._workers:
            if w.task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w.task
        self._workers = []

    def _die(self, reason: str) -> None:
        self._dead = reason
        for w in self._workers:
            for seq in [*w.waiting, *w.running]:
                seq.out.put_nowait(EngineDead(reason))
            w.waiting.clear()
            w.running.clear()

    @property
    def dead_reason(self) -> str | None:
        return self._dead

    @property
    def running(self) -> int:
        return sum(w.load for w in self._workers)

    @property
    def steps(self) -> int:
        """Engine steps taken so far (all workers): tests count time in steps."""
        return sum(w.steps for w in self._workers)

    def worker_loads(self) -> list[tuple[int, int]]:
        """(waiting, running) per worker: for tests and metrics."""
        return [(len(w.waiting), len(w.running)) for w in self._workers]

    def count_tokens(self, text: str) -> int:
        return sizing.estimate_tokens(text) + 1

    async def generate(self, request: GenerateRequest) -> AsyncIterator[np.ndarray]:
        if self._dead:
            raise EngineDead(self._dead)
        if not self._workers:
            raise EngineError("engine not started")
        marker = self.settings.synthetic_fail_marker
        if marker and marker in request.text:
            raise EngineError("synthetic failure requested by VOXWS_SYNTHETIC_FAIL_MARKER")
        prompt = request.prompt
        positions = self.count_tokens(request.text) + (prompt.positions if prompt else 0)
        why = sizing.refusal(positions, request.max_generate_length, self.max_model_len)
        if why:
            raise EngineRefused(why)  # the real engine's ValueError, same rule
        encode_s = 0.0
        if prompt is not None and prompt.key not in self._encoded:
            self._encoded.add(prompt.key)
            encode_s = PROMPT_ENCODE_S
        speaker = prompt_speaker(prompt) if prompt else text_speaker(request.text, request.seed)
        seq = _Seq(request.text or " ", max(1, min(natural_steps(request.text), request.max_generate_length)),
                   request.tag, request.segment & 0x3FFF, speaker, encode_s)
        await self._coalescer.wait()
        if self._dead:
            raise EngineDead(self._dead)
        worker = min(self._workers, key=lambda w: w.load)  # the pool routes to the least loaded worker
        worker.add(seq)
        try:
            while True:
                item = await seq.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not seq.finished:
                worker.cancel(seq)
