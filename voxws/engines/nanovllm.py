"""The real engine: nano-vllm-voxcpm's async server pool behind the Engine protocol.

torch, flash_attn and nanovllm_voxcpm are imported inside start(), never at module import,
so that the server, the tests and CI (no GPU) can import this module.

What the pool (nano-vllm-voxcpm 2.0.5) does and what this adapter adds:
- `VoxCPM.from_pretrained(...)` inside a running loop returns an AsyncVoxCPMServerPool: one
  spawned worker process per device, each request routed to the least loaded worker.
- `pool.generate(...)` is an async generator of float32 chunks (one per engine step);
  closing it sends `cancel` to the worker, which frees the sequence between two steps.
- A request the worker refuses (prompt + max_generate_length > max_model_len) comes back as
  RuntimeError carrying the worker's traceback: mapped to EngineRefused. The same rule is
  checked here first with the same tokenizer, so a refusal never costs a worker round trip.
- A dead worker: the pool fails its in-flight streams only once the process is reaped (up to
  ~2 s). This adapter watches the workers' sentinels itself, sets `dead_reason` within
  `watch_interval_s`, and interrupts every generate() waiting on the engine with EngineDead.
- The worker's streaming VAE decode is voxws's batched one unless VOXWS_ENGINE_VAE=engine
  (engine_layer.py installs it into the spawned worker; it refuses an engine other than 2.0.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any

import numpy as np

from voxws import sizing
from voxws.config import Settings, missing_model_files
from voxws.engines import engine_layer
from voxws.engines.base import EngineDead, EngineError, EngineRefused, EngineStartError, GenerateRequest, VoicePrompt
from voxws.engines.coalesce import Coalescer

MIN_BATCHED_TOKENS = 16384  # the engine's default; must also be >= max_model_len
LATENTS_KIND = "nanovllm-latents"  # what the voice store caches per model
LATENTS_KEPT = 256  # voice prompts' latents kept in memory

PoolFactory = Callable[..., Any]  # (**from_pretrained kwargs) -> pool; called inside the running loop
# Start-up cross-check of TokenCounter against the engine's own tokenizer wrapper.
CHECK_TEXTS = ("今天天气很好，我们去散步。", "语音合成技术正在改变人们获取信息的方式。",
               "Hello, world: 2024 年 3 月!")


def _is_han(token: str) -> bool:
    return len(token) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in token)


class TokenCounter:
    """Prompt positions by the engine's rule (nano-vllm-voxcpm 2.0.5, VoxCPMEngine.add_request):
    the model's tokenizer, multi-character Chinese tokens split into one token per character,
    no BOS, plus the audio-start token. `base` needs `.tokenize(text)` and `.vocab` (a
    transformers tokenizer)."""

    def __init__(self, base: Any):
        self.base = base
        self.multichar = frozenset(t for t in base.vocab if _is_han(t))
        self.count = functools.lru_cache(maxsize=4096)(self._count)

    def _count(self, text: str) -> int:
        n = 0
        for token in self.base.tokenize(text):
            clean = token.replace("▁", "")
            n += len(clean) if clean in self.multichar else 1
        return n + 1  # + the audio-start token


def check_model_dir(path: str | None) -> dict[str, Any]:
    """Return the parsed config.json, or raise EngineStartError naming what is missing."""
    where = f"VOXCPM_MODEL_PATH={path}"
    if not path:
        raise EngineStartError("VOXCPM_MODEL_PATH is not set: it must name a VoxCPM 1.5 model directory")
    if not os.path.isdir(path):
        raise EngineStartError(f"{where}: not a directory (download the model, e.g. openbmb/VoxCPM1.5)")
    missing = missing_model_files(path)
    if missing:
        what = "; ".join(f"tokenizer files are missing ({m})" if m.startswith("tokenizer") else f"{m} is missing"
                         for m in missing)
        raise EngineStartError(f"{where}: {what}")
    cfg_file = os.path.join(path, "config.json")
    try:
        with open(cfg_file, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise EngineStartError(f"{where}: config.json is unreadable ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("architecture") != "voxcpm":
        arch = cfg.get("architecture") if isinstance(cfg, dict) else None
        raise EngineStartError(f"{where}: config.json architecture is {arch!r}; "
                               "voxws serves 'voxcpm' (VoxCPM 1.5)")
    return cfg


def chunk_samples_of(cfg: dict[str, Any]) -> int:
    """Samples per engine step: patch_size latent frames x the VAE decoder's hop (4 x 1764 for 1.5)."""
    vae = cfg.get("audio_vae_config") or {}
    rates = vae.get("decoder_rates") or [8, 8, 5, 2]
    return int(cfg.get("patch_size", 2)) * math.prod(int(r) for r in rates)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else str(text)


def _import_runtime(devices: tuple[int, ...]) -> tuple[PoolFactory, Callable[[str], TokenCounter]]:
    """Import the GPU stack, checking each piece; one clear line for what is missing."""
    try:
        import torch
    except ImportError:
        raise EngineStartError("torch is not installed: pip install '.[gpu]' (voxws-server, see README) "
                               "on a CUDA host") from None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    if not torch.cuda.is_available():
        raise EngineStartError(f"no CUDA GPU is visible{seen}: the nanovllm engine needs one "
                               "(use VOXWS_ENGINE=synthetic to run without a GPU)")
    count = torch.cuda.device_count()
    bad = [d for d in devices if d >= count]
    if bad:
        listed = ",".join(map(str, devices))
        raise EngineStartError(f"VOXCPM_DEVICES={listed}: GPU index {bad[0]} is not visible; "
                               f"this process sees {count} GPU(s){seen}")
    try:
        import flash_attn  # noqa: F401  (the engine's workers import it)
    except ImportError:
        raise EngineStartError("flash_attn is not installed: "
                               "pip install flash-attn --no-build-isolation") from None
    try:
        from nanovllm_voxcpm import VoxCPM
        from nanovllm_voxcpm.models.voxcpm.utils import mask_multichar_chinese_tokens
        from transformers import LlamaTokenizerFast
    except ImportError as e:
        raise EngineStartError(f"nano-vllm-voxcpm is not importable ({e}): "
                               "pip install '.[gpu]' (voxws-server, see README)") from None

    def load_counter(path: str) -> TokenCounter:
        base = LlamaTokenizerFast.from_pretrained(path)
        counter = TokenCounter(base)
        # Our rule must count exactly what the engine's own wrapper does (+1: audio-start token).
        engine_rule = mask_multichar_chinese_tokens(base)
        for text in CHECK_TEXTS:
            ours, theirs = counter.count(text), len(engine_rule(text)) + 1
            if ours != theirs:
                raise EngineStartError(f"token counting disagrees with nano-vllm-voxcpm's tokenizer on "
                                       f"{text!r}: {ours} vs {theirs} positions (engine version mismatch?)")
        return counter

    return VoxCPM.from_pretrained, load_counter


class NanoVllmEngine:
    name = "nanovllm"

    def __init__(self, settings: Settings, *, pool_factory: PoolFactory | None = None,
                 tokenizer: Any = None, watch_interval_s: float = 0.1, coalescer: Coalescer | None = None):
        """pool_factory / tokenizer (a transformers-like tokenizer: .tokenize, .vocab): injected by
        tests with a fake pool; None loads the real engine and the model's own tokenizer."""
        self.settings = settings
        self.model = os.path.basename(os.path.normpath(settings.model_path or "")) or "voxcpm"
        self.sample_rate = 44100
        self.chunk_samples = 7056
        self.max_model_len = settings.max_model_len
        self.max_num_seqs = settings.max_num_seqs
        self.num_workers = len(settings.devices)
        self._pool_factory = pool_factory
        self._counter: TokenCounter | None = TokenCounter(tokenizer) if tokenizer is not None else None
        self._watch_interval_s = watch_interval_s
        self._coalescer = coalescer or Coalescer()
        self._bench_steps: int | None = None
        self._pool: Any = None
        self._watch_task: asyncio.Task[None] | None = None
        self._dead: str | None = None
        self._stopping = False
        self._running = 0
        # Tasks parked inside generate() waiting on the engine: the watchdog interrupts them.
        self._waiting: dict[asyncio.Task[Any], int] = {}
        self._latents: OrderedDict[str, bytes] = OrderedDict()  # voice prompt key -> engine latents
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._stages = engine_layer.ServerStages.from_env()  # benchmarks: per-chunk timestamps

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._pool is not None:
            return
        s = self.settings
        cfg = check_model_dir(s.model_path)
        self._bench_steps = s.bench_steps  # random-weight benchmarks: stop head off, fixed length
        self.chunk_samples = chunk_samples_of(cfg)
        factory = self._pool_factory
        if factory is None:
            factory, load_counter = _import_runtime(s.devices)
            engine_layer.install(s.engine_vae)  # the worker's streaming VAE decode; refuses a wrong version
            if self._counter is None:
                try:
                    self._counter = load_counter(s.model_path or "")
                except EngineStartError:
                    raise
                except Exception as e:
                    raise EngineStartError(f"VOXCPM_MODEL_PATH={s.model_path}: tokenizer does not load "
                                           f"({_last_line(str(e))})") from None
        if self._counter is None:
            raise EngineStartError("nanovllm engine: no tokenizer")
        try:
            pool = factory(
                model=s.model_path, devices=list(s.devices), max_num_seqs=s.max_num_seqs,
                max_model_len=s.max_model_len, gpu_memory_utilization=s.gpu_memory_utilization,
                max_num_batched_tokens=max(MIN_BATCHED_TOKENS, s.max_model_len),
            )
        except Exception as e:
            raise EngineStartError(f"engine pool did not start: {type(e).__name__}: "
                                   f"{_last_line(str(e))}") from None
        self._pool = pool
        try:
            await pool.wait_for_ready()
            info = await pool.get_model_info()
        except BaseException as e:
            with contextlib.suppress(Exception):
                await pool.stop()
            self._pool = None
            if isinstance(e, asyncio.CancelledError):
                raise
            why = _last_line(str(e)) or type(e).__name__
            raise EngineStartError(f"engine worker failed to start: {why}") from None
        self.sample_rate = int(info.get("sample_rate", self.sample_rate))
        self._watch_task = asyncio.create_task(self._watch(), name="nanovllm-liveness")

    async def stop(self) -> None:
        self._stopping = True
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.stop()
        if self._stages is not None:
            self._stages.flush()

    # -- liveness ----------------------------------------------------------------------------

    def _processes(self) -> list[Any]:
        return [getattr(srv, "process", None) for srv in getattr(self._pool, "servers", [])]

    async def _watch(self) -> None:
        """Poll the workers' sentinels (readable once a process has exited; never reaps it)."""
        while self._dead is None:
            procs = [p for p in self._processes() if p is not None]
            sentinels = [p.sentinel for p in procs]
            ready = wait_for_sentinels(sentinels, timeout=0) if sentinels else []
            if ready and not self._stopping:
                i = sentinels.index(ready[0])
                p = procs[i]
                code = getattr(p, "exitcode", None)
                device = self.settings.devices[i] if i < len(self.settings.devices) else i
                self._die(f"engine worker for device {device} (pid {getattr(p, 'pid', '?')}) died"
                          + (f" with exit code {code}" if code is not None else ""), dead_index=i)
                return
            await asyncio.sleep(self._watch_interval_s)

    def _die(self, reason: str, dead_index: int | None = None) -> None:
        if self._dead is not None:
            return
        self._dead = reason
        servers = list(getattr(self._pool, "servers", []))
        if dead_index is not None and dead_index < len(servers):
            # The pool fails the dead worker's futures and streams only after reaping it
            # (~0.7-2 s); fail its link now, so nothing on it waits for that (the pool's own
            # cancel-on-close also skips a dead link instead of waiting on it).
            fail = getattr(getattr(servers[dead_index], "_link", None), "_fail", None)
            if callable(fail):
                with contextlib.suppress(Exception):
                    fail(None)
        # Every generate() parked on the engine (any worker: the server fails them all and
        # exits) is interrupted now and re-raises as EngineDead.
        for task in list(self._waiting):
            self._interrupted.add(task)
            task.cancel()

    @property
    def dead_reason(self) -> str | None:
        return self._dead

    @property
    def running(self) -> int:
        return self._running

    # -- requests ----------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            raise EngineError("engine not started: no tokenizer yet")
        return self._counter.count(text)

    async def _prompt_latents(self, prompt: VoicePrompt) -> bytes:
        """The engine's latents of a voice prompt: from memory, from the voice store's cache (keyed by
        model), or encoded once by a worker (its VAE encoder; that worker's steps wait meanwhile)."""
        latents = self._latents.get(prompt.key)
        if latents is None and prompt.load_cached is not None:
            latents = prompt.load_cached(LATENTS_KIND)
        if latents is None:
            from voxws.voices import wav_bytes  # 16-bit mono WAV, what the engine's encode_latents reads

            try:
                latents = await self._pool.encode_latents(wav_bytes(prompt.audio, self.sample_rate), "wav")
            except Exception as e:
                line = _last_line(str(e))
                if "TorchCodec" in line or "torchcodec" in line:
                    line += (" (the engine loads prompt audio with torchaudio, which needs torchcodec and FFmpeg's "
                             "libraries on this host: pip install torchcodec; apt-get install ffmpeg)")
                raise EngineError(f"voice prompt could not be encoded: {line}") from None
            if prompt.store_cached is not None:
                prompt.store_cached(LATENTS_KIND, latents)
        self._latents[prompt.key] = latents
        self._latents.move_to_end(prompt.key)
        while len(self._latents) > LATENTS_KEPT:
            self._latents.popitem(last=False)
        return latents

    async def generate(self, request: GenerateRequest) -> AsyncIterator[np.ndarray]:
        if self._dead is not None:
            raise EngineDead(self._dead)
        if self._pool is None:
            raise EngineError("engine not started")
        voice = request.prompt
        positions = self.count_tokens(request.text) + (voice.positions if voice else 0)
        why = sizing.refusal(positions, request.max_generate_length, self.max_model_len)
        if why:
            raise EngineRefused(why)
        steps = request.max_generate_length
        if self._bench_steps is not None:
            steps = min(steps, self._bench_steps)
        extra: dict[str, Any] = {}
        if voice is not None:
            extra = {"prompt_latents": await self._prompt_latents(voice), "prompt_text": voice.text}
        stream = self._pool.generate(
            target_text=request.text, max_generate_length=steps,
            cfg_value=request.cfg_value, temperature=request.temperature, seed=request.seed, **extra,
        )
        self._running += 1
        stages = self._stages.request() if self._stages is not None else None
        try:
            await self._coalescer.wait()
            if stages is not None:
                stages.submitted()
            while True:
                if self._dead is not None:
                    raise EngineDead(self._dead)
                task = asyncio.current_task()
                assert task is not None
                self._waiting[task] = self._waiting.get(task, 0) + 1
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if task in self._interrupted:  # our watchdog, not the caller, cancelled it
                        self._interrupted.discard(task)
                        if hasattr(task, "uncancel"):
                            task.uncancel()
                        raise EngineDead(self._dead or "engine worker died") from None
                    raise
                except Exception as e:
                    raise self._map_error(e) from None
                finally:
                    n = self._waiting.pop(task, 1) - 1
                    if n > 0:
                        self._waiting[task] = n
                received = time.perf_counter()
                yield chunk
                if stages is not None:
                    stages.chunk(received)
        finally:
            self._running -= 1
            if self._dead is None:
                # Cancels the sequence in the worker (frees its slot); returns once the pool
                # has decremented the worker's load, so admission may hand the slot on.
                with contextlib.suppress(Exception):
                    await stream.aclose()
            else:  # never wait on a dead engine; close in the background
                closing = asyncio.ensure_future(stream.aclose())
                closing.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _map_error(self, e: Exception) -> EngineError:
        if isinstance(e, EngineError):
            return e
        if type(e).__name__ == "WorkerDiedError" or self._dead is not None:
            self._die(f"engine worker died: {e}")
            return EngineDead(self._dead or str(e))
        line = _last_line(str(e))
        # The worker's ValueError arrives as RuntimeError(traceback text); the pool's own as ValueError.
        if isinstance(e, ValueError) or "ValueError" in line or "max_model_len" in line:
            return EngineRefused(line.removeprefix("ValueError: "))
        return EngineError(f"{type(e).__name__}: {line}")
