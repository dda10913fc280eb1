"""voxws's layer inside nano-vllm-voxcpm's worker process (written for 2.0.5 only).

The pool spawns one worker per device with `multiprocessing` (spawn) running
`nanovllm_voxcpm.models.voxcpm.server.main_loop`. `install()` (in the server process, before the
pool starts) points that module attribute at `worker_main` here, which spawn pickles by name;
in the fresh worker it applies, before the engine loads the model:
- `VOXWS_ENGINE_VAE=batched`: AudioVAE.streaming_decoder returns voxws's
  `SlotStreamingVAEDecoder` (vae_batched.py) instead of the engine's per-sequence loop;
- voice prompts: the worker reads prompt audio with `torchaudio.load`, which (torchaudio 2.9 and later)
  needs torchcodec and FFmpeg's libraries, absent on many GPU hosts (the lent H200 among them); voxws
  only ever sends 16-bit WAV (voices.wav_bytes), so `wav_loader` reads that with the standard library
  and hands anything else to torchaudio;
- `VOXWS_STAGE_LOG=PREFIX` (benchmarks): every engine step's start, decoder call, decoder
  return and end (perf_counter: CLOCK_MONOTONIC, one clock for all processes) to
  `PREFIX.worker-<pid>.txt`; the server side (ServerStages) writes `PREFIX.server-<pid>.txt`.

A worker must never run a patch written for another engine version: `check_engine()` refuses
at start-up, naming the installed version and the fallback.
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from typing import Any

from voxws.engines.base import EngineStartError

ENGINE_VERSION = "2.0.5"
VAE_MODES = ("engine", "batched")
_ENV_VAE = "VOXWS_ENGINE_VAE"
_ENV_STAGES = "VOXWS_STAGE_LOG"
_original_main_loop: Any = None


def check_engine(vae: str) -> None:
    """Refuse (EngineStartError) when the batched decoder is asked of an engine it was not written for."""
    if vae not in VAE_MODES:
        raise EngineStartError(f"VOXWS_ENGINE_VAE={vae}: must be one of: {', '.join(VAE_MODES)}")
    if vae == "engine":
        return
    try:
        have = metadata.version("nano-vllm-voxcpm")
    except metadata.PackageNotFoundError:
        have = None
    if have != ENGINE_VERSION:
        raise EngineStartError(f"VOXWS_ENGINE_VAE=batched is written for nano-vllm-voxcpm {ENGINE_VERSION}, "
                               f"installed: {have or 'none'}; set VOXWS_ENGINE_VAE=engine to use the "
                               "engine's own decoder")
    from nanovllm_voxcpm.layers import audio_vae
    from nanovllm_voxcpm.models.voxcpm import server

    missing = [n for n, ok in (("AudioVAE.streaming_decoder", hasattr(audio_vae.AudioVAE, "streaming_decoder")),
                               ("server.main_loop", callable(getattr(server, "main_loop", None))))
               if not ok]
    if missing:
        raise EngineStartError(f"nano-vllm-voxcpm {have} lacks {', '.join(missing)}: set VOXWS_ENGINE_VAE=engine")


def install(vae: str, stage_log: str | None = None) -> None:
    """In the server process, before the pool starts: route the workers through worker_main."""
    global _original_main_loop
    check_engine(vae)
    stage_log = stage_log or os.environ.get(_ENV_STAGES)
    if vae == "engine" and not stage_log:
        return  # the fallback: the engine's own worker, untouched
    from nanovllm_voxcpm.models.voxcpm import server

    os.environ[_ENV_VAE] = vae  # a spawned worker inherits the environment of the moment it starts
    if stage_log:
        os.environ[_ENV_STAGES] = stage_log
    if server.main_loop is not worker_main:
        _original_main_loop = server.main_loop
        server.main_loop = worker_main


def worker_main(queue_in: Any, queue_out: Any, args: Any, kwargs: Any) -> None:
    """The worker's entry point (a fresh process): patch, then run the engine's own loop."""
    from nanovllm_voxcpm.models.voxcpm import server

    vae = os.environ.get(_ENV_VAE, "engine")
    check_engine(vae)
    stages = WorkerStages(os.environ[_ENV_STAGES]) if os.environ.get(_ENV_STAGES) else None
    torchaudio = getattr(server, "torchaudio", None)
    if torchaudio is not None:
        torchaudio.load = wav_loader(torchaudio.load)
    _patch_decoder(vae, stages)
    if stages is not None:
        _patch_step(server, stages)
    try:
        server.main_loop(queue_in, queue_out, args, kwargs)
    finally:
        if stages is not None:
            stages.flush()


def wav_loader(original: Any) -> Any:
    """torchaudio.load that reads 16-bit PCM WAV from memory itself (no torchcodec, no FFmpeg)."""

    def load(src: Any, *args: Any, format: str | None = None, **kwargs: Any) -> Any:
        if format == "wav" and hasattr(src, "seek"):
            import io
            import wave

            import numpy as np
            import torch

            start = src.tell()
            try:
                with wave.open(src, "rb") as w:
                    if w.getsampwidth() == 2:
                        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
                        channels = w.getnchannels()
                        return torch.from_numpy(pcm.reshape(-1, channels).T.copy()), w.getframerate()
            except (wave.Error, EOFError, io.UnsupportedOperation):
                pass
            src.seek(start)
        return original(src, *args, format=format, **kwargs)

    return load


def _patch_decoder(vae: str, stages: WorkerStages | None) -> None:
    from nanovllm_voxcpm.layers import audio_vae
    from nanovllm_voxcpm.utils.batch_buckets import make_batch_size_buckets

    original = audio_vae.AudioVAE.streaming_decoder

    def streaming_decoder(self: Any, max_batch_size: int | None = None) -> Any:
        if vae == "batched":
            from voxws.engines.vae_batched import SlotStreamingVAEDecoder

            dec: Any = SlotStreamingVAEDecoder(self, audio_vae.CausalConv1d, audio_vae.CausalTransposeConv1d,
                                               make_batch_size_buckets(max_batch_size))
        else:
            dec = original(self, max_batch_size)
        if stages is not None:
            decode = dec.decode_chunks

            def timed(*a: Any, **k: Any) -> Any:
                cpu = time.thread_time()
                stages.vae_start = time.perf_counter()
                try:
                    return decode(*a, **k)
                finally:
                    stages.vae_end = time.perf_counter()
                    stages.vae_cpu = time.thread_time() - cpu

            dec.decode_chunks = timed
        return dec

    audio_vae.AudioVAE.streaming_decoder = streaming_decoder


def _patch_step(server: Any, stages: WorkerStages) -> None:
    impl = server.VoxCPMServerImpl
    step = impl.step

    def timed_step(self: Any) -> Any:
        stages.vae_start = stages.vae_end = stages.vae_cpu = 0.0
        t0 = time.perf_counter()
        out = step(self)
        stages.add(t0, stages.vae_start, stages.vae_end, time.perf_counter(), len(out), stages.vae_cpu)
        return out

    impl.step = timed_step


class WorkerStages:
    """Per engine step: start, decoder called, decoder returned, end (after the GPU sync), batch size,
    and the CPU time the worker's thread spent inside the decoder call (less than its wall time when
    the thread waited: for the GIL, or descheduled)."""

    def __init__(self, prefix: str):
        self.path = f"{prefix}.worker-{os.getpid()}.txt"
        self.vae_start = self.vae_end = self.vae_cpu = 0.0
        self._rows: list[str] = []

    def add(self, t0: float, v0: float, v1: float, t1: float, n: int, vae_cpu: float) -> None:
        if n:
            self._rows.append(f"{t0:.6f} {v0:.6f} {v1:.6f} {t1:.6f} {n} {vae_cpu:.6f}\n")
            if len(self._rows) >= 512:
                self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        with open(self.path, "a") as f:
            f.writelines(rows)


class ServerStages:
    """In the server process, per request: handed to the pool (after the coalescer), then per chunk:
    received from the pool, and the consumer back for the next (between the two: the session
    encoded the chunk and handed its frame to the socket). Rows: `t_a t_b index request`, the
    hand-over as index -1."""

    def __init__(self, prefix: str):
        self.path = f"{prefix}.server-{os.getpid()}.txt"
        self._rows: list[tuple[float, float, int, int]] = []
        self._requests = 0

    @classmethod
    def from_env(cls) -> ServerStages | None:
        prefix = os.environ.get(_ENV_STAGES)
        return cls(prefix) if prefix else None

    def request(self) -> RequestStages:
        self._requests += 1
        return RequestStages(self, self._requests)

    def add(self, a: float, b: float, index: int, rid: int) -> None:
        self._rows.append((a, b, index, rid))
        if len(self._rows) >= 4096:
            self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        with open(self.path, "a") as f:
            f.writelines(f"{a:.6f} {b:.6f} {i} {r}\n" for a, b, i, r in rows)


class RequestStages:
    __slots__ = ("_index", "_log", "_rid")

    def __init__(self, log: ServerStages, rid: int):
        self._log, self._rid, self._index = log, rid, 0

    def submitted(self) -> None:
        t = time.perf_counter()
        self._log.add(t, t, -1, self._rid)

    def chunk(self, received: float) -> None:
        self._log.add(received, time.perf_counter(), self._index, self._rid)
        self._index += 1
