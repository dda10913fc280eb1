#!/usr/bin/env python3
"""Voice-agent latency through Pipecat: VoxWSTTSService against `voxws serve` (synthetic engine).

    .venv/bin/python bench/agents_latency.py                 # 60 turns per mode, both modes
    .venv/bin/python bench/agents_latency.py --turns 10 --modes sentence --no-write   # a quick look

The server is a `voxws serve --engine synthetic` subprocess with the default step model (the
H100 figures: 9.5 ms + 0.53 ms x batch per engine step of 0.16 s of audio), so it has a core of
its own. In this process a Pipecat pipeline [TTS service -> sink] gets, per turn, what an LLM
would give it: LLMFullResponseStartFrame, then the reply's words as LLMTextFrames one every
`--token-ms` (a fast LLM streams about 50 tokens/s), then LLMFullResponseEndFrame. Once
`--frames-before-interrupt` audio frames of the turn have come out of the TTS service, an
InterruptionFrame goes in (as a user barging in would cause), and the token stream stops.

Per turn it measures, with perf_counter in this one process:
- first_audio_ms: from the first LLMTextFrame queued to the first TTSAudioRawFrame out of the TTS
  service (this includes waiting for the LLM to finish the first sentence, 5 frames later: both
  Pipecat's SENTENCE aggregation and voxws's text buffer start at a sentence end);
  `after_first_sentence_ms` counts from the text frame that ends the first sentence instead;
- interrupt_to_last_audio_ms: from the InterruptionFrame queued to the last audio frame of the
  turn out of the TTS service (0 when none came after it); `frames_after_interrupt` counts them;
- interrupt_to_cancelled_ms: from the InterruptionFrame to the server's `cancelled` (the engine slot
  is free by then);
- timed_word_frames: word-level TTSTextFrames with a pts (from the server's `words`) out of the turn.
p50/p95 over the turns; printed and written to bench/results/agents_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TextAggregationMode
from pipecat.workers.runner import WorkerRunner

from voxws.bench import proc
from voxws.integrations.pipecat import VoxWSTTSService

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "agents_latency.json"
REPLY = ("Sure, I can help with that. The first thing to check is whether the device is plugged in and "
         "switched on. If it is, hold the power button for ten seconds, wait a moment, and then try again.")
_clock = time.perf_counter


class TimingSink(FrameProcessor):
    """Right after the TTS service: stamps every audio frame it lets out."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[tuple[float, str | None]] = []
        self.words: list[str | None] = []  # context of each word-level TTSTextFrame timed to the audio (server `words`)
        self.event = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self.audio.append((_clock(), frame.context_id))
            self.event.set()
        elif isinstance(frame, TTSTextFrame) and frame.pts and direction == FrameDirection.DOWNSTREAM:
            self.words.append(frame.context_id)
        await self.push_frame(frame, direction)

    async def wait_for(self, pred: Any, timeout: float = 30.0) -> None:
        end = _clock() + timeout
        while not pred():
            self.event.clear()
            left = end - _clock()
            if left <= 0:
                raise TimeoutError("no audio")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), left)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": round(pct(xs, 0.5), 1), "p95": round(pct(xs, 0.95), 1), "min": round(min(xs), 1),
            "max": round(max(xs), 1), "n": len(xs)}


async def run_mode(url: str, mode: str, turns: int, token_ms: float, frames_before: int,
                   rate: int) -> list[dict[str, Any]]:
    agg = TextAggregationMode.SENTENCE if mode == "sentence" else TextAggregationMode.TOKEN
    tts = VoxWSTTSService(url=url, text_aggregation_mode=agg)
    sink = TimingSink()
    worker = PipelineWorker(Pipeline([tts, sink]), params=PipelineParams(audio_out_sample_rate=rate),
                            cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    while tts.client is None:
        await asyncio.sleep(0.02)
    words = REPLY.split(" ")
    first_sentence = next(i for i, w in enumerate(words) if w.endswith("."))
    rows: list[dict[str, Any]] = []
    try:
        for turn in range(turns + 1):  # turn 0 warms up (imports, first context) and is not counted
            before = len(sink.audio)
            t0 = _clock()
            sent: list[float] = []

            async def llm(sent: list[float] = sent) -> None:
                await worker.queue_frame(LLMFullResponseStartFrame())
                for i, w in enumerate(words):
                    sent.append(_clock())
                    await worker.queue_frame(LLMTextFrame(w if i == 0 else " " + w))
                    await asyncio.sleep(token_ms / 1000)
                await worker.queue_frame(LLMFullResponseEndFrame())

            stream = asyncio.create_task(llm())
            await sink.wait_for(lambda b=before: len(sink.audio) > b)
            t_first, cid = sink.audio[before]
            t0 = sent[0]
            await sink.wait_for(lambda b=before, c=cid: sum(1 for _, x in sink.audio[b:] if x == c) >= frames_before)
            ctx = tts._contexts.get(cid) if cid else None
            stream.cancel()
            t_int = _clock()
            await worker.queue_frame(InterruptionFrame())
            t_cancelled = None
            if ctx is not None:
                try:
                    await asyncio.wait_for(ctx.wait(), 10)
                    t_cancelled = _clock()
                except Exception:
                    t_cancelled = None
            await asyncio.sleep(0.3)  # any stale frame would come out by now
            late = [t for t, x in sink.audio[before:] if x == cid and t > t_int]
            last = max([t for t, x in sink.audio[before:] if x == cid])
            if turn == 0:
                continue
            rows.append({
                "first_audio_ms": (t_first - t0) * 1000,
                # from the LLM's frame that ends the first sentence: the TTS's own share
                "after_first_sentence_ms": (t_first - sent[first_sentence]) * 1000,
                "interrupt_to_last_audio_ms": max(0.0, last - t_int) * 1000,
                "frames_after_interrupt": len(late),
                "interrupt_to_cancelled_ms": None if t_cancelled is None else (t_cancelled - t_int) * 1000,
                "timed_word_frames": sum(1 for x in sink.words if x == cid),
            })
            await asyncio.sleep(0.1)
    finally:
        await worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(running, 20)
        except TimeoutError:
            await worker.cancel()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=60)
    ap.add_argument("--modes", default="sentence,token", help="Pipecat text aggregation: sentence, token")
    ap.add_argument("--token-ms", type=float, default=20.0, help="time between the LLM's text frames")
    ap.add_argument("--frames-before-interrupt", type=int, default=5)
    ap.add_argument("--sample-rate", type=int, default=24000, help="the pipeline's audio output rate")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    port = proc.free_port()
    env = {**os.environ, "VOXWS_ENGINE": "synthetic", "VOXWS_PORT": str(port), "VOXWS_LOG_FORMAT": "json"}
    log = open(os.devnull, "w")  # noqa: SIM115
    server = subprocess.Popen([str(Path(sys.executable).with_name("voxws")), "serve"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        proc.wait_ready(port, proc=server)
        url = f"ws://127.0.0.1:{port}/v1/tts"
        results: dict[str, Any] = {}
        for mode in args.modes.split(","):
            rows = asyncio.run(run_mode(url, mode, args.turns, args.token_ms, args.frames_before_interrupt,
                                        args.sample_rate))
            cancelled = [r["interrupt_to_cancelled_ms"] for r in rows if r["interrupt_to_cancelled_ms"] is not None]
            results[mode] = {
                "turns": len(rows),
                "first_audio_ms": summary([r["first_audio_ms"] for r in rows]),
                "after_first_sentence_ms": summary([r["after_first_sentence_ms"] for r in rows]),
                "interrupt_to_last_audio_ms": summary([r["interrupt_to_last_audio_ms"] for r in rows]),
                "frames_after_interrupt_total": sum(r["frames_after_interrupt"] for r in rows),
                "timed_word_frames_total": sum(r["timed_word_frames"] for r in rows),
                "interrupt_to_cancelled_ms": summary(cancelled) if cancelled else None,
                "rows": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
            }
    finally:
        proc.stop(server, timeout=15)
        log.close()

    for mode, r in results.items():
        s = r["after_first_sentence_ms"]
        print(f"{mode}: first audio after the first sentence's last text frame: p50 {s['p50']} ms, p95 {s['p95']} ms")
    print(f"{'mode':10} {'turns':>5}  {'first audio p50/p95 ms':>24}  {'interrupt->last audio p50/p95 ms':>34}"
          f"  {'interrupt->cancelled p50/p95 ms':>32}  frames after")
    for mode, r in results.items():
        fa, il, ic = r["first_audio_ms"], r["interrupt_to_last_audio_ms"], r["interrupt_to_cancelled_ms"] or {}
        print(f"{mode:10} {r['turns']:>5}  {fa['p50']:>11.1f} / {fa['p95']:<10.1f}  {il['p50']:>16.1f} / "
              f"{il['p95']:<15.1f}  {ic.get('p50', float('nan')):>15.1f} / {ic.get('p95', float('nan')):<14.1f}"
              f"  {r['frames_after_interrupt_total']}")
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "engine": "synthetic, H100 step model (9.5 ms + 0.53 ms x batch per 0.16 s step)",
            "pipeline": "Pipecat [VoxWSTTSService -> sink], no transport; server: voxws serve subprocess, loopback",
            "token_ms": args.token_ms, "frames_before_interrupt": args.frames_before_interrupt,
            "sample_rate": args.sample_rate, "reply": REPLY, "host": platform.node(), "cpus": os.cpu_count(),
            "results": results,
        }, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
