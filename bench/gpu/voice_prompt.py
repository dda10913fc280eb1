#!/usr/bin/env python3
"""What a voice prompt costs on the GPU, through voxws's nanovllm adapter (the server's engine path).

TTFB p50 of 1 and 128 concurrent requests with a 10 s voice prompt against none (latents cached, as a
registered voice's are after its first use), the first use of a new voice (the worker encodes it), and
the largest gap between chunks in 64 running streams while a worker encodes a new voice.

    python bench/gpu/voice_prompt.py --model DIR [--out FILE.json]     (bench/gpu/voice_prompt.sh runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import numpy as np

from voxws import sizing
from voxws.config import Settings
from voxws.engines.base import GenerateRequest, VoicePrompt
from voxws.engines.nanovllm import NanoVllmEngine

TEXT = (Path(__file__).parent / "text67.txt").read_text().strip()
TRANSCRIPT = "今天天气很好，我们一起去公园散步吧。路边的花开得正艳，小鸟在树上歌唱。"
STEPS = 63


def voice(engine: NanoVllmEngine, key: str, seconds: float = 10.0) -> VoicePrompt:
    t = np.arange(int(seconds * 44100)) / 44100
    audio = (0.3 * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    return VoicePrompt(key, TRANSCRIPT, audio, sizing.voice_positions(engine.count_tokens(TRANSCRIPT), len(audio)))


async def one(engine: NanoVllmEngine, prompt: VoicePrompt | None) -> tuple[float, list[float]]:
    fit = sizing.fit(TEXT, engine.max_model_len, engine.count_tokens, voice=prompt.positions if prompt else 0)
    t0 = time.perf_counter()
    times = [t0]
    async for _ in engine.generate(GenerateRequest(TEXT, min(fit.steps, STEPS), prompt=prompt)):
        times.append(time.perf_counter())
    return (times[1] - t0) * 1000, times[1:]


async def level(engine: NanoVllmEngine, n: int, prompt: VoicePrompt | None, rounds: int = 3) -> float:
    ttfb = []
    for _ in range(rounds):
        ttfb += [t for t, _ in await asyncio.gather(*(one(engine, prompt) for _ in range(n)))]
    return statistics.median(ttfb)


async def main(model: str) -> dict:
    s = Settings(engine="nanovllm", model_path=model, max_num_seqs=128, max_model_len=2048,
                 gpu_memory_utilization=0.4, bench_steps=STEPS)
    engine = NanoVllmEngine(s)
    await engine.start()
    try:
        cached = voice(engine, "voice:ten")
        out: dict = {"prompt_positions": cached.positions, "prompt_seconds": 10.0, "steps": STEPS}
        t0 = time.perf_counter()
        await one(engine, cached)  # the first use encodes it
        out["first_use_ms"] = (time.perf_counter() - t0) * 1000
        for n in (1, 128):  # warm every batch size first
            await level(engine, n, None, 1)
            await level(engine, n, cached, 1)
        for n in (1, 128):
            plain = await level(engine, n, None)
            out[f"ttfb_p50_ms_{n}"] = {"no_voice": plain, "voice_10s": await level(engine, n, cached)}
        for encode in (False, True):  # 64 streams, with or without a new voice encoded meanwhile
            streams = [asyncio.create_task(one(engine, None)) for _ in range(64)]
            await asyncio.sleep(0.5)
            if encode:
                await one(engine, voice(engine, "voice:new"))
            gaps = [max(np.diff(times)) * 1000 for _, times in await asyncio.gather(*streams)]
            out["largest_gap_ms_64_streams" + ("_while_encoding" if encode else "")] = float(max(gaps))
        return out
    finally:
        await engine.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    result = asyncio.run(main(a.model))
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
