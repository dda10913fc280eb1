"""The Engine protocol: everything the server knows about an engine.

An engine turns one text segment into a stream of float32 waveform chunks, one per
engine step. Closing the stream early (aclose, or cancelling the task iterating it)
cancels the sequence inside the engine and frees its slot before the next step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class EngineError(RuntimeError):
    """The engine failed this request. The engine itself may still be alive."""


class EngineRefused(EngineError):
    """The engine refused the request as asked (e.g. prompt + max_generate_length > max_model_len)."""


class EngineDead(EngineError):
    """A worker died; every request in flight on it fails with this."""


class EngineStartError(RuntimeError):
    """The engine cannot start: one clear line for the operator, no traceback."""


@dataclass(frozen=True, eq=False)
class VoicePrompt:
    """What a request is conditioned on: a recording and its exact transcript (the model imitates it).

    Either a registered voice, or a context's own first segment (so its later segments keep its speaker).
    `key` names it for engine-side caches (e.g. the latents the real engine derives from the audio)."""

    key: str
    text: str  # transcript, as the model is given it
    audio: np.ndarray  # float32 mono at the engine's sample rate
    positions: int  # what it adds to every request that uses it (sizing.voice_positions)
    voice_id: str | None = None  # the registered voice, None for a continuity prompt
    load_cached: Callable[[str], bytes | None] | None = None  # (kind) -> derived data kept by the voice store
    store_cached: Callable[[str, bytes], None] | None = None


@dataclass(frozen=True)
class GenerateRequest:
    text: str
    max_generate_length: int  # engine steps at most (one chunk per step)
    cfg_value: float = 2.0
    temperature: float = 1.0
    seed: int | None = None
    prompt: VoicePrompt | None = None  # None: the model picks a voice from the text and seed
    tag: str = ""  # opaque label for logs
    segment: int = 0  # index of the segment in its context (logs, the synthetic engine's chunk marks)


@runtime_checkable
class Engine(Protocol):
    name: str  # "nanovllm" | "synthetic": reported in `ready`
    model: str  # model directory name, reported in `ready`
    sample_rate: int  # native rate of the chunks
    chunk_samples: int  # samples per step (7056 for VoxCPM 1.5)
    max_model_len: int  # positions per sequence
    max_num_seqs: int  # running sequences per worker per step
    num_workers: int  # one per GPU of the group

    async def start(self) -> None:
        """Load and warm up; return when requests can be served. Raises EngineStartError."""

    async def stop(self) -> None:
        """Release workers. Idempotent."""

    def count_tokens(self, text: str) -> int:
        """Prompt positions this text takes: text tokens + the audio-start token."""

    def generate(self, request: GenerateRequest) -> AsyncIterator[np.ndarray]:
        """Stream float32 chunks of `chunk_samples` samples. Raises EngineError subclasses; refuses by
        sizing.refusal(count_tokens(text) + prompt.positions, max_generate_length, max_model_len)."""

    @property
    def dead_reason(self) -> str | None:
        """None while every worker lives; else why one died (the server then fails and exits)."""

    @property
    def running(self) -> int:
        """Sequences currently inside the engine (all workers)."""
