"""The nanovllm adapter against a fake of nano-vllm-voxcpm's async server pool (CPU, no torch).

The fake keeps what the adapter relies on in the real pool (2.0.5): one worker per device with
a process sentinel, least-loaded routing, one chunk per step to every running stream, cancel on
close, the worker's refusal arriving as RuntimeError(traceback), and a death notice that only
comes once the dead process is reaped (slow: the adapter must not wait for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from voxws.config import ConfigError, Settings, load
from voxws.engines.base import EngineDead, EngineError, EngineRefused, EngineStartError, GenerateRequest, VoicePrompt
from voxws.engines.nanovllm import MIN_BATCHED_TOKENS, Coalescer, NanoVllmEngine, TokenCounter

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "bench" / "gpu" / "voxcpm15-config.json"
CHUNK = 7056


class WorkerDiedError(RuntimeError):  # the pool's own class name; the adapter matches it by name
    pass


class FakeProcess:
    """A worker process: its sentinel is a pipe's read end that turns readable when it 'dies'."""

    def __init__(self, pid: int):
        self.pid = pid
        self.sentinel, self._w = os.pipe()
        self.exitcode: int | None = None

    def kill(self, code: int = -9) -> None:
        self.exitcode = code
        os.close(self._w)

    def close(self) -> None:
        for fd in (self.sentinel, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)


class FakeLink:
    def __init__(self, server: FakeServer):
        self.server = server
        self.dead = False

    def _fail(self, exitcode: int | None) -> None:
        if self.dead:
            return
        self.dead = True
        for q in list(self.server.streams.values()):
            q.put_nowait(WorkerDiedError(f"worker process died unexpectedly (exitcode={exitcode})"))


class FakeServer:
    def __init__(self, pool: FakePool, index: int):
        self.pool = pool
        self.process = FakeProcess(10_000 + index)
        self._link = FakeLink(self)
        self.streams: dict[int, asyncio.Queue[Any]] = {}
        self.remaining: dict[int, int] = {}
        self.task = asyncio.create_task(self._steps())

    async def _steps(self) -> None:  # one batched step loop: a chunk to every running stream per step
        while True:
            await asyncio.sleep(self.pool.step_s)
            if self._link.dead:
                return
            for sid in list(self.remaining):
                q = self.streams[sid]
                q.put_nowait(np.zeros(CHUNK, np.float32))
                self.remaining[sid] -= 1
                if self.remaining[sid] == 0:
                    del self.remaining[sid]
                    q.put_nowait(None)

    def die(self, reap_delay_s: float) -> None:
        """The process exits now; the pool's own notice comes after reaping it, reap_delay_s later."""
        self.process.kill()
        asyncio.get_running_loop().call_later(reap_delay_s, self._link._fail, -9)


class FakePool:
    def __init__(self, devices: list[int], max_model_len: int, step_s: float = 0.005,
                 prompt_len: int | None = None, init_error: str | None = None):
        self.max_model_len = max_model_len
        self.step_s = step_s
        self.prompt_len = prompt_len  # None: the engine's own count (the same rule as the adapter's)
        self.init_error = init_error
        self.servers = [FakeServer(self, i) for i in range(len(devices))]
        self.servers_load = [0] * len(devices)
        self.calls: list[dict[str, Any]] = []
        self.cancelled: list[int] = []
        self.encoded: list[tuple[bytes, str]] = []
        self.stopped = False
        self._next = 0

    async def wait_for_ready(self) -> None:
        await asyncio.sleep(0)
        if self.init_error:
            raise RuntimeError(self.init_error)

    async def encode_latents(self, wav: bytes, wav_format: str) -> bytes:
        self.encoded.append((wav, wav_format))
        return np.ones((4, 64), np.float32).tobytes()

    async def get_model_info(self) -> dict[str, Any]:
        return {"sample_rate": 44100, "channels": 1, "feat_dim": 64, "patch_size": 4, "model_path": "x"}

    async def stop(self) -> None:
        self.stopped = True
        for s in self.servers:
            s.task.cancel()
            s.process.close()

    async def generate(self, target_text: str, max_generate_length: int = 2000, cfg_value: float = 2.0,
                       temperature: float = 1.0, seed: int | None = None, **kw: Any):
        self.calls.append({"target_text": target_text, "max_generate_length": max_generate_length,
                           "cfg_value": cfg_value, "temperature": temperature, "seed": seed, **kw})
        i = int(np.argmin(self.servers_load))  # least loaded, as the real pool
        self.servers_load[i] += 1
        srv = self.servers[i]
        sid = self._next
        self._next += 1
        q: asyncio.Queue[Any] = asyncio.Queue()
        normal = False
        try:
            await asyncio.sleep(0.001)  # the add_request round trip
            if srv._link.dead:
                raise WorkerDiedError("worker process died unexpectedly (exitcode=-9)")
            prompt = self.prompt_len or TokenCounter(FakeTokenizer()).count(target_text)
            total = prompt + max_generate_length
            if total > self.max_model_len:
                raise RuntimeError("Traceback (most recent call last):\n  File ...\nValueError: Request may "
                                   f"exceed max_model_len: prompt_len({prompt}) + max_generate_length"
                                   f"({max_generate_length}) = {total} > max_model_len"
                                   f"({self.max_model_len}).")
            if "BOOM" in target_text:
                raise RuntimeError("Traceback (most recent call last):\nKeyError: 'boom'")
            srv.streams[sid] = q
            srv.remaining[sid] = max_generate_length
            while True:
                item = await q.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    normal = True
                    return
                yield item
        finally:
            srv.streams.pop(sid, None)
            srv.remaining.pop(sid, None)
            if not normal and not srv._link.dead:
                self.cancelled.append(sid)
            self.servers_load[i] -= 1


class FakeTokenizer:
    """transformers-like: `.tokenize` and `.vocab`; a Llama-style '▁' prefix; '中国' and '我们' are
    multi-character Chinese tokens (the engine splits them), 'hello' one token."""

    vocab: ClassVar[dict[str, int]] = {"▁": 0, "中国": 1, "我们": 2, "▁hello": 3, "hello": 4,
                                       **{c: 10 + i for i, c in enumerate("中国我们好，。")}}

    def tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        i = 0
        text = "▁" + text.replace(" ", "▁")
        while i < len(text):
            for piece in ("▁hello", "中国", "我们", "hello"):
                if text.startswith(piece, i):
                    out.append(piece)
                    i += len(piece)
                    break
            else:
                out.append(text[i])
                i += 1
        return out


def aio(fn: Any) -> Any:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))
    return run


def model_dir(tmp_path: Path, skip: str | None = None) -> str:
    d = tmp_path / "model"
    d.mkdir()
    files = {"config.json": CONFIG.read_text(), "model.safetensors": "x", "audiovae.pth": "x",
             "tokenizer.json": "{}", "tokenizer_config.json": "{}"}
    for name, body in files.items():
        if name != skip:
            (d / name).write_text(body)
    return str(d)


def make(tmp_path: Path, *, devices: tuple[int, ...] = (0,), max_model_len: int = 2048,
         max_num_seqs: int = 128, coalescer: Coalescer | None = None, bench_steps: int | None = None,
         **pool_kw: Any) -> tuple[NanoVllmEngine, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def factory(**kw: Any) -> FakePool:
        seen.update(kw)
        seen["pool"] = FakePool(kw["devices"], kw["max_model_len"], **pool_kw)
        return seen["pool"]

    s = Settings(engine="nanovllm", model_path=model_dir(tmp_path), devices=devices,
                 max_model_len=max_model_len, max_num_seqs=max_num_seqs, gpu_memory_utilization=0.5,
                 bench_steps=bench_steps)
    return NanoVllmEngine(s, pool_factory=factory, tokenizer=FakeTokenizer(), watch_interval_s=0.05,
                          coalescer=coalescer), seen


def req(text: str = "我们好", steps: int = 5, **kw: Any) -> GenerateRequest:
    return GenerateRequest(text=text, max_generate_length=steps, **kw)


async def collect(engine: NanoVllmEngine, request: GenerateRequest) -> list[np.ndarray]:
    return [c async for c in engine.generate(request)]


# -- start-up and sizing ---------------------------------------------------------------------


@aio
async def test_start_sizes_the_pool_from_settings(tmp_path: Path) -> None:
    e, seen = make(tmp_path, devices=(2, 3), max_model_len=2048, max_num_seqs=64)
    await e.start()
    try:
        assert seen["devices"] == [2, 3]  # relative to CUDA_VISIBLE_DEVICES, passed as-is
        assert seen["max_num_seqs"] == 64 and seen["max_model_len"] == 2048
        assert seen["gpu_memory_utilization"] == 0.5
        assert seen["max_num_batched_tokens"] >= seen["max_model_len"]
        assert e.num_workers == 2 and e.max_num_seqs == 64 and e.max_model_len == 2048
        assert e.sample_rate == 44100 and e.chunk_samples == CHUNK  # 4 patches x 1764 (config.json)
        assert e.name == "nanovllm" and e.model == "model"
    finally:
        await e.stop()
    assert seen["pool"].stopped


@aio
async def test_batched_tokens_follow_a_long_max_model_len(tmp_path: Path) -> None:
    e, seen = make(tmp_path, max_model_len=32768)
    await e.start()
    await e.stop()
    assert seen["max_num_batched_tokens"] == 32768 > MIN_BATCHED_TOKENS


@pytest.mark.parametrize(("skip", "words"), [
    ("config.json", "config.json is missing"),
    ("model.safetensors", "*.safetensors"),
    ("audiovae.pth", "audiovae.pth"),
    ("tokenizer.json", "tokenizer files are missing"),
    ("tokenizer_config.json", "tokenizer files are missing"),
])
@aio
async def test_incomplete_model_dir_stops_start_with_one_line(tmp_path: Path, skip: str, words: str) -> None:
    d = model_dir(tmp_path, skip=skip)
    e = NanoVllmEngine(Settings(model_path=d), pool_factory=lambda **kw: pytest.fail("pool started"),
                       tokenizer=FakeTokenizer())
    with pytest.raises(EngineStartError) as err:
        await e.start()
    msg = str(err.value)
    assert words in msg and f"VOXCPM_MODEL_PATH={d}" in msg and "\n" not in msg


@aio
async def test_missing_model_dir_and_wrong_architecture(tmp_path: Path) -> None:
    e = NanoVllmEngine(Settings(model_path=str(tmp_path / "nope")))
    with pytest.raises(EngineStartError, match="not a directory"):
        await e.start()
    d = model_dir(tmp_path)
    cfg = json.loads(CONFIG.read_text())
    cfg["architecture"] = "voxcpm2"
    Path(d, "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineStartError, match="architecture is 'voxcpm2'"):
        await NanoVllmEngine(Settings(model_path=d)).start()


def fake_torch(available: bool, count: int) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: available, device_count=lambda: count)  # type: ignore[attr-defined]
    return torch


@aio
async def test_no_gpu_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, 0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(EngineStartError) as err:
        await NanoVllmEngine(Settings(model_path=model_dir(tmp_path))).start()
    assert "no CUDA GPU is visible" in str(err.value) and "VOXWS_ENGINE=synthetic" in str(err.value)


@aio
async def test_device_beyond_the_visible_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, 1))
    with pytest.raises(EngineStartError, match=r"VOXCPM_DEVICES=0,1: GPU index 1 is not visible; this process"
                                                r" sees 1"):
        await NanoVllmEngine(Settings(model_path=model_dir(tmp_path), devices=(0, 1))).start()


@aio
async def test_missing_flash_attn_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, 1))
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import fails
    with pytest.raises(EngineStartError, match="flash_attn is not installed: pip install flash-attn"):
        await NanoVllmEngine(Settings(model_path=model_dir(tmp_path))).start()


@aio
async def test_worker_start_failure_keeps_the_last_line(tmp_path: Path) -> None:
    e, seen = make(tmp_path, init_error="Traceback (most recent call last):\n  File x\ntorch.OutOfMemoryError:"
                                        " CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(EngineStartError) as err:
        await e.start()
    assert str(err.value) == ("engine worker failed to start: torch.OutOfMemoryError: CUDA out of memory. "
                              "Tried to allocate 2.00 GiB")
    assert seen["pool"].stopped


def test_bad_bench_steps_is_refused() -> None:
    with pytest.raises(ConfigError, match="VOXWS_BENCH_STEPS=zero: must be a positive integer"):
        load({"VOXWS_ENGINE": "synthetic", "VOXWS_BENCH_STEPS": "zero"})


def test_module_imports_without_torch() -> None:
    code = ("import sys, voxws.engines.nanovllm; "
            "bad = [m for m in ('torch', 'nanovllm_voxcpm', 'flash_attn', 'transformers') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# -- token counting ----------------------------------------------------------------------------


def test_token_count_follows_the_engine_rule() -> None:
    c = TokenCounter(FakeTokenizer())
    # '▁' + 中国 (split: 2) + 我们 (split: 2) + 好 + audio-start; no BOS.
    assert c.count("中国我们好") == 1 + 2 + 2 + 1 + 1
    # 'hello' is one (non-Chinese) token, not split; the space becomes '▁'.
    assert c.count("hello 好") == 3 + 1  # ▁hello ▁ 好 + audio-start


@aio
async def test_count_tokens_and_refusal_before_the_engine(tmp_path: Path) -> None:
    e, seen = make(tmp_path, max_model_len=256)
    await e.start()
    try:
        prompt = e.count_tokens("我们好")
        assert prompt == 5
        with pytest.raises(EngineRefused, match=r"prompt 5 \+ max_generate_length 252 > max_model_len 256"):
            await collect(e, req("我们好", 252))
        assert seen["pool"].calls == []  # refused without a worker round trip
        assert len(await collect(e, req("我们好", 251))) == 251  # exactly fits
    finally:
        await e.stop()


# -- requests ------------------------------------------------------------------------------------


@aio
async def test_generate_passes_the_request_through(tmp_path: Path) -> None:
    e, seen = make(tmp_path)
    await e.start()
    try:
        chunks = await collect(e, req("中国", 7, cfg_value=1.5, temperature=0.7, seed=42))
        assert len(chunks) == 7 and all(c.dtype == np.float32 and len(c) == CHUNK for c in chunks)
        call = seen["pool"].calls[0]
        assert call == {"target_text": "中国", "max_generate_length": 7, "cfg_value": 1.5, "temperature": 0.7,
                        "seed": 42}
        assert e.running == 0
    finally:
        await e.stop()


@aio
async def test_bench_steps_caps_every_request(tmp_path: Path) -> None:
    e, seen = make(tmp_path, bench_steps=3)
    await e.start()
    try:
        assert len(await collect(e, req(steps=400))) == 3
        assert len(await collect(e, req(steps=2))) == 2
        assert [c["max_generate_length"] for c in seen["pool"].calls] == [3, 2]
    finally:
        await e.stop()


@aio
async def test_engine_refusals_and_failures_are_mapped(tmp_path: Path) -> None:
    # The fake counts a longer prompt than we do, so the worker itself refuses, as after a drift.
    e, _ = make(tmp_path, max_model_len=256, prompt_len=100)
    await e.start()
    try:
        with pytest.raises(EngineRefused) as err:
            await collect(e, req(steps=200))
        assert str(err.value).startswith("Request may exceed max_model_len: prompt_len(100)")
        with pytest.raises(EngineError) as err2:
            await collect(e, req("BOOM", 3))
        assert not isinstance(err2.value, (EngineRefused, EngineDead))
        assert "KeyError" in str(err2.value)
        # A voice prompt's positions count against max_model_len too.
        voice = VoicePrompt("v", "我们", np.zeros(7056 * 3, np.float32), positions=240)
        with pytest.raises(EngineRefused, match="max_model_len"):
            await collect(e, req("我们好", 20, prompt=voice))
        assert e.dead_reason is None and e.running == 0
    finally:
        await e.stop()


@aio
async def test_routes_to_the_least_loaded_worker(tmp_path: Path) -> None:
    e, seen = make(tmp_path, devices=(0, 1), step_s=0.01)
    await e.start()
    try:
        gens = [e.generate(req(steps=50)) for _ in range(6)]
        firsts = await asyncio.gather(*(g.__anext__() for g in gens))
        assert len(firsts) == 6 and seen["pool"].servers_load == [3, 3] and e.running == 6
        for g in gens:
            await g.aclose()
        assert seen["pool"].servers_load == [0, 0] and e.running == 0
    finally:
        await e.stop()


@aio
async def test_a_burst_reaches_the_engine_together(tmp_path: Path) -> None:
    """Requests arriving one by one (as a server hands them on) reach the pool in one go, so the
    worker prefills them in one step instead of one step per slice."""
    e, seen = make(tmp_path, coalescer=Coalescer(quiet_s=0.3, max_hold_s=5.0))
    await e.start()
    try:
        arrived = 0
        pool: FakePool = seen["pool"]
        at_call: list[int] = []
        real = pool.generate

        async def spy(**kw: Any) -> Any:  # runs when the adapter first iterates (= submits)
            at_call.append(arrived)  # how many requests had arrived when this one reached the pool
            async for chunk in real(**kw):
                yield chunk

        pool.generate = spy  # type: ignore[method-assign]

        async def one() -> int:
            return len(await collect(e, req(steps=3)))

        tasks = []
        for _ in range(5):
            tasks.append(asyncio.create_task(one()))
            arrived += 1
            await asyncio.sleep(0.01)
        assert await asyncio.gather(*tasks) == [3] * 5
        assert at_call == [5] * 5
    finally:
        await e.stop()


# -- cancellation --------------------------------------------------------------------------------


@aio
async def test_closing_the_stream_cancels_the_sequence(tmp_path: Path) -> None:
    e, seen = make(tmp_path)
    await e.start()
    try:
        g = e.generate(req(steps=100))
        assert len(await g.__anext__()) == CHUNK
        await g.__anext__()
        await g.aclose()
        pool = seen["pool"]
        assert pool.cancelled == [0] and pool.servers_load == [0] and e.running == 0
        assert pool.servers[0].remaining == {}  # the worker no longer steps it
    finally:
        await e.stop()


@aio
async def test_cancelling_the_consumer_task_cancels_the_sequence(tmp_path: Path) -> None:
    e, seen = make(tmp_path, step_s=0.02)
    await e.start()
    try:
        async def consume() -> None:
            async for _ in e.generate(req(steps=100)):
                pass

        t = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):  # a caller's cancel stays a cancel, not EngineDead
            await t
        assert seen["pool"].cancelled == [0] and e.running == 0 and e.dead_reason is None
    finally:
        await e.stop()


# -- liveness -------------------------------------------------------------------------------------


@aio
async def test_dead_worker_fails_every_stream_within_a_second(tmp_path: Path) -> None:
    e, seen = make(tmp_path, devices=(0, 1), step_s=0.01)
    await e.start()
    try:
        pool: FakePool = seen["pool"]
        outcomes: list[tuple[str, float]] = []

        async def consume() -> None:
            try:
                async for _ in e.generate(req(steps=2000)):
                    pass
                outcomes.append(("finished", time.monotonic()))
            except EngineDead:
                outcomes.append(("dead", time.monotonic()))

        tasks = [asyncio.create_task(consume()) for _ in range(4)]  # 2 per worker
        await asyncio.sleep(0.2)
        t_kill = time.monotonic()
        pool.servers[1].die(reap_delay_s=5.0)  # the pool's own notice would come 5 s later
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert [o for o, _ in outcomes] == ["dead"] * 4  # streams on the live worker fail too
        assert max(t for _, t in outcomes) - t_kill < 1.0
        assert e.dead_reason is not None and "device 1" in e.dead_reason and "exit code -9" in e.dead_reason
        with pytest.raises(EngineDead):
            await collect(e, req())
        assert e.running == 0
    finally:
        await e.stop()


@aio
async def test_dead_reason_is_set_within_a_second_when_idle(tmp_path: Path) -> None:
    e, seen = make(tmp_path)
    await e.start()
    try:
        assert e.dead_reason is None
        seen["pool"].servers[0].die(reap_delay_s=5.0)
        t0 = time.monotonic()
        while e.dead_reason is None and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        assert e.dead_reason is not None and time.monotonic() - t0 < 1.0
    finally:
        await e.stop()


@aio
async def test_stop_is_idempotent_and_not_a_death(tmp_path: Path) -> None:
    e, seen = make(tmp_path)
    await e.start()
    await e.stop()
    await e.stop()
    assert e.dead_reason is None and seen["pool"].stopped


@aio
async def test_a_voice_prompt_goes_to_the_engine_as_latents_encoded_once(tmp_path: Path) -> None:
    e, seen = make(tmp_path)
    await e.start()
    stored: dict[str, bytes] = {}
    voice = VoicePrompt("voice:amy:1", "我们好", np.full(7056 * 2, 0.25, np.float32), positions=5,
                        voice_id="amy", load_cached=stored.get, store_cached=stored.__setitem__)
    try:
        for _ in range(2):
            assert len(await collect(e, req("中国", 3, prompt=voice))) == 3
        pool = seen["pool"]
        assert len(pool.encoded) == 1  # the second request reuses the latents
        wav, fmt = pool.encoded[0]
        assert fmt == "wav" and wav[:4] == b"RIFF"
        call = pool.calls[-1]
        assert call["prompt_text"] == "我们好"
        assert call["prompt_latents"] == np.ones((4, 64), np.float32).tobytes()
        assert list(stored) == ["nanovllm-latents"]  # kept in the voice store, keyed by model by the store
    finally:
        await e.stop()
