#!/usr/bin/env python3
"""Server overhead: the same workload in-process against the synthetic engine, then through `voxws serve`.

    .venv/bin/python bench/overhead.py                # the full run for docs/benchmarks.md (a few minutes)
    .venv/bin/python bench/overhead.py --streams 1,32 --repeat 1 --no-docs   # a quick look

Workload: N streams (1, 32, 128, 256), each sending R requests of the same text one after
another, all streams starting together. In-process, each stream iterates
`engine.generate()` directly (no sockets, no encoding) behind a FIFO semaphore of
`max_num_seqs x workers` slots, which is the admission any user of the engine needs (the
engine itself starves requests beyond max_num_seqs). Through voxws, the same streams are
WebSocket clients of a `voxws serve --engine synthetic` subprocess on loopback, driven from
this process (so server and client each have a core on a 2-core machine).

Two step models: `h100` (t(batch) = 9.5 ms + 0.53 ms x batch, the H100 figures) and `zero`
(no step latency: the server's own CPU cost is all there is). Each cell runs --repeat times,
interleaved, and the run with the median throughput is reported. It prints the ratios, writes
bench/results/overhead.json and .md, and the table into docs/benchmarks.md (between markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from voxws import config, sizing
from voxws.bench import metrics, proc, report, scenarios
from voxws.bench.client import Target
from voxws.bench.runner import Job, Phase, run_phase
from voxws.engines.base import GenerateRequest
from voxws.engines.synthetic import SyntheticEngine

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"h100": (9.5, 0.53), "zero": (0.0, 0.0)}
TARGETS = {"throughput_ratio_min": 0.98, "ttfb_p50_delta_ms_max": 5.0, "ttfb_p99_delta_ms_max": 15.0,
           "ratio_streams": (128, 256), "zero_latency_x_min": 1000.0}
DOC_BEGIN, DOC_END = "<!-- overhead:begin -->", "<!-- overhead:end -->"
_clock = time.perf_counter


def _settings(model: str) -> config.Settings:
    base, per_seq = MODELS[model]
    return config.Settings(engine="synthetic", synthetic_step_base_ms=base, synthetic_step_per_seq_ms=per_seq)


def _summarise(sent: list[float], firsts: list[float | None], dones: list[float], rounds: list[int],
               frames: int, chunk_s: float) -> dict[str, Any]:
    wall = max(dones) - min(sent)
    audio = frames * chunk_s
    ttfb = [(f - s) * 1000 if f is not None else None for s, f in zip(sent, firsts, strict=True)]
    return {"requests": len(sent), "wall_s": wall, "audio_s": audio, "throughput_x": audio / wall,
            "frames_per_s": frames / wall, "ttfb_ms": metrics.summary(ttfb),
            **_ttfb_by_round(ttfb, rounds)}


def _ttfb_by_round(ttfb: list[float | None], rounds: list[int]) -> dict[str, Any]:
    """First requests start together; later ones start when a stream's previous request ends."""
    return {"ttfb_first_ms": metrics.summary(t for t, r in zip(ttfb, rounds, strict=True) if r == 0),
            "ttfb_later_ms": metrics.summary(t for t, r in zip(ttfb, rounds, strict=True) if r > 0)}


async def _inprocess(model: str, streams: int, per_stream: int, text: str) -> dict[str, Any]:
    settings = _settings(model)
    engine = SyntheticEngine(settings)
    await engine.start()
    try:
        prompt = engine.count_tokens(text)
        steps = sizing.max_generate_length(prompt, engine.max_model_len, sizing.estimate_steps(text))
        slots = asyncio.Semaphore(engine.max_num_seqs * engine.num_workers)
        sent: list[float] = []
        rounds: list[int] = []
        firsts: list[float | None] = []
        dones: list[float] = []
        frames = 0
        go = asyncio.Event()

        async def stream(i: int) -> None:
            nonlocal frames
            await go.wait()
            for r in range(per_stream):
                t_sent, first, n = _clock(), None, 0
                async with slots:
                    async for _chunk in engine.generate(GenerateRequest(text=text, max_generate_length=steps,
                                                                        tag=f"s{i}r{r}/0")):
                        if first is None:
                            first = _clock()
                        n += 1
                sent.append(t_sent)
                rounds.append(r)
                firsts.append(first)
                dones.append(_clock())
                frames += n

        cpu0 = time.process_time()
        tasks = [asyncio.create_task(stream(i)) for i in range(streams)]
        await asyncio.sleep(0.05)
        go.set()
        await asyncio.gather(*tasks)
        out = _summarise(sent, firsts, dones, rounds, frames, engine.chunk_samples / engine.sample_rate)
        out["cpu_s"] = time.process_time() - cpu0
        out["max_generate_length"] = steps
        out["steps_per_request"] = frames / len(sent)
        return out
    finally:
        await engine.stop()


class Server:
    """`voxws serve --engine synthetic` on a free loopback port, for one step model."""

    def __init__(self, model: str, log_dir: Path, cmd: list[str] | None = None):
        base, per_seq = MODELS[model]
        self.port = proc.free_port()
        env = {**os.environ, "VOXWS_SYNTHETIC_STEP_BASE_MS": str(base),
               "VOXWS_SYNTHETIC_STEP_PER_SEQ_MS": str(per_seq), "VOXWS_LOG_FORMAT": "json"}
        voxws = Path(sys.executable).with_name("voxws")
        if not cmd:
            cmd = [str(voxws)] if voxws.exists() else [sys.executable, "-c", "from voxws.cli import app; app()"]
        self.log = open(log_dir / f"server-{model}.log", "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen([*cmd, "serve", "--engine", "synthetic", "--host", "127.0.0.1",
                                      "--port", str(self.port)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        self.url = f"ws://127.0.0.1:{self.port}/v1/tts"
        try:
            proc.wait_ready(self.port, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise SystemExit(f"{e}; see {self.log.name}") from None

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        proc.stop(self.proc)
        self.log.close()


def _through(server: Server, streams: int, per_stream: int, text: str, procs: int) -> dict[str, Any]:
    lanes = tuple(tuple(Job(i * per_stream + r, text, streams) for r in range(per_stream))
                  for i in range(streams))
    cpu0, busy0 = server.cpu_s(), _busy_s()
    res = run_phase(Target(url=server.url, request_timeout_s=300), Phase(lanes, max_duration_s=600), procs)
    server_cpu = server.cpu_s() - cpu0
    busy = _busy_s() - busy0
    recs = [metrics.request_record(r, res.t_go, 0.2, keep_frames=False) for r in res.results]
    bad = [r for r in recs if not r["ok"]]
    if bad or res.interrupted or res.timed_out:
        raise SystemExit(f"through voxws: {len(bad)} failed requests (first: {bad[:1]}),"
                         f" interrupted={res.interrupted}, timed_out={res.timed_out}")
    agg = metrics.aggregate(recs)
    return {"requests": agg["requests"], "wall_s": agg["wall_s"], "audio_s": agg["audio_s"],
            "throughput_x": agg["throughput_x"], "frames_per_s": agg["frames_per_s"],
            "ttfb_ms": agg["ttfb_ms"], "underrun_streams": agg["underrun_streams"],
            **_ttfb_by_round([r["ttfb_ms"] for r in recs], [r["id"] % per_stream for r in recs]),
            "steps_per_request": agg["frames_per_s"] * agg["wall_s"] / agg["requests"],
            "server_cpu_s": server_cpu, "server_cpu_share": server_cpu / res.wall_s,
            "client_cpu_s": res.client_cpu_s, "client_cpu_share": res.client_cpu_s / (res.wall_s * res.procs),
            "client_procs": res.procs,
            # CPU used by everything else on the machine meanwhile (other users' jobs disturb the numbers).
            "other_cpu_share": max(0.0, busy - server_cpu - res.client_cpu_s) / res.wall_s,
            "ready": res.ready}


def _busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores)."""
    t = psutil.cpu_times()
    extra = sum(getattr(t, k, 0.0) for k in ("irq", "softirq", "steal"))
    return t.user + t.nice + t.system + extra


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["throughput_x"])[len(runs) // 2]


def _cell(model: str, streams: int, inproc: list[dict[str, Any]],
          through: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = _median_run(inproc), _median_run(through)
    return {
        "model": model, "streams": streams, "inprocess": a, "voxws": b,
        "runs": {"inprocess": inproc, "voxws": through},
        "throughput_ratio": b["throughput_x"] / a["throughput_x"],
        "ttfb_p50_delta_ms": b["ttfb_ms"]["p50"] - a["ttfb_ms"]["p50"],
        "ttfb_p99_delta_ms": b["ttfb_ms"]["p99"] - a["ttfb_ms"]["p99"],
    }


def _line(cell: dict[str, Any]) -> str:
    a, b = cell["inprocess"], cell["voxws"]
    ta, tb = a["ttfb_ms"], b["ttfb_ms"]
    return (f"{cell['model']:5} {cell['streams']:4} streams: in-process {a['throughput_x']:8.1f}x"
            f"  voxws {b['throughput_x']:8.1f}x  ratio {cell['throughput_ratio']:6.1%}"
            f"  TTFB p50 {ta['p50']:6.1f} -> {tb['p50']:6.1f} ms ({cell['ttfb_p50_delta_ms']:+.1f})"
            f"  p99 {ta['p99']:6.1f} -> {tb['p99']:6.1f} ms ({cell['ttfb_p99_delta_ms']:+.1f})"
            f"  first p50 {a['ttfb_first_ms']['p50']:.1f}->{b['ttfb_first_ms']['p50']:.1f}"
            f" later p50 {a['ttfb_later_ms']['p50']:.1f}->{b['ttfb_later_ms']['p50']:.1f}"
            f"  CPU server {b['server_cpu_share']:.0%} client {b['client_cpu_share']:.0%}"
            f" other {b['other_cpu_share']:.0%}")


def _verdicts(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cells:
        if c["model"] == "h100" and c["streams"] in TARGETS["ratio_streams"]:
            out.append({"what": f"h100, {c['streams']} streams: throughput ratio >= 98%",
                        "value": c["throughput_ratio"], "pass": c["throughput_ratio"] >= 0.98})
            out.append({"what": f"h100, {c['streams']} streams: TTFB p50 delta <= 5 ms",
                        "value": c["ttfb_p50_delta_ms"], "pass": c["ttfb_p50_delta_ms"] <= 5})
            out.append({"what": f"h100, {c['streams']} streams: TTFB p99 delta <= 15 ms",
                        "value": c["ttfb_p99_delta_ms"], "pass": c["ttfb_p99_delta_ms"] <= 15})
    zero = [c for c in cells if c["model"] == "zero"]
    if zero:
        best = max(zero, key=lambda c: c["voxws"]["throughput_x"])
        out.append({"what": f"zero-latency engine through voxws >= 1000x real time"
                            f" (best: {best['streams']} streams)",
                    "value": best["voxws"]["throughput_x"], "pass": best["voxws"]["throughput_x"] >= 1000})
    return out


def table(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    head = ["step model", "streams", "in-process x RT", "voxws x RT", "ratio", "TTFB p50 in-proc / voxws ms",
            "p50 delta", "TTFB p99 in-proc / voxws ms", "p99 delta", "server CPU", "client CPU", "other CPU"]
    rows = []
    for c in doc["cells"]:
        a, b = c["inprocess"], c["voxws"]
        ta, tb = a["ttfb_ms"], b["ttfb_ms"]
        rows.append([c["model"], str(c["streams"]), f"{a['throughput_x']:,.1f}", f"{b['throughput_x']:,.1f}",
                     f"{c['throughput_ratio']:.1%}", f"{ta['p50']:.1f} / {tb['p50']:.1f}",
                     f"{c['ttfb_p50_delta_ms']:+.1f}", f"{ta['p99']:.1f} / {tb['p99']:.1f}",
                     f"{c['ttfb_p99_delta_ms']:+.1f}", f"{b['server_cpu_share']:.0%}",
                     f"{b['client_cpu_share']:.0%}", f"{b['other_cpu_share']:.0%}"])
    cfg = doc["config"]
    steps = doc["cells"][0]["inprocess"]["steps_per_request"]
    lines = [
        f"Measured {doc['created']} on `{m['hostname']}`: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GB,"
        f" Python {m['python']}, websockets {m['websockets']}"
        + (f", uvicorn {m['uvicorn']}" if m.get("uvicorn") else "") + ";"
        f" voxws commit `{m['commit'] or 'uncommitted'}`.",
        f"Workload: {cfg['requests_per_stream']} requests per stream of a {cfg['text_chars']}-character text"
        f" ({steps:.0f} steps = {steps * 0.16:.2f} s of audio each), pcm_s16le 44.1 kHz,"
        f" max_num_seqs 128; median of {cfg['repeat']} interleaved runs; client in its own process"
        f" ({cfg['procs']} process(es)). CPU columns: share of one core during the voxws run, used by the"
        " server, the client, and everything else on the machine (other CPU: a disturbed run).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Targets:",
        "",
        *[f"- {'PASS' if v['pass'] else 'MISS'}: {v['what']} (measured {v['value']:,.3g})"
          for v in doc["verdicts"]],
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default="1,32,128,256", help="comma-separated stream counts")
    ap.add_argument("--models", default="h100,zero", help="step models: h100, zero")
    ap.add_argument("--requests-per-stream", type=int, default=2)
    ap.add_argument("--text-chars", type=int, default=68, help="length of the default Chinese text")
    ap.add_argument("--text", default=None, help="text to speak (overrides --text-chars)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is reported")
    ap.add_argument("--procs", type=int, default=1, help="client processes for the voxws runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where overhead.json/.md go")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--server-cmd", default=None,
                    help="command that starts the server instead of `voxws` (before/after experiments);"
                         " `serve --engine synthetic --host --port` are appended")
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    models = [m.strip() for m in args.models.split(",")]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models={args.models}: must name only {', '.join(MODELS)}")
    if args.requests_per_stream < 1 or args.repeat < 1 or any(s < 1 for s in streams):
        raise SystemExit("--streams, --requests-per-stream and --repeat: must be positive")
    text = args.text or scenarios.text_of_length(args.text_chars)
    logs = Path(tempfile.mkdtemp(prefix="voxws-overhead-"))
    cells = []
    for model in models:
        server = Server(model, logs, shlex.split(args.server_cmd) if args.server_cmd else None)
        try:
            # Warm both paths once (imports, first connections) so that run 1 is not special.
            asyncio.run(_inprocess(model, 4, 1, text))
            _through(server, 4, 1, text, args.procs)
            for n in streams:
                inproc, through = [], []
                for _ in range(args.repeat):
                    inproc.append(asyncio.run(_inprocess(model, n, args.requests_per_stream, text)))
                    through.append(_through(server, n, args.requests_per_stream, text, args.procs))
                cell = _cell(model, n, inproc, through)
                cells.append(cell)
                print(_line(cell), flush=True)
        finally:
            server.stop()
    ready = next((c["voxws"].pop("ready") for c in cells if c["voxws"].get("ready")), None)
    for c in cells:
        c["voxws"].pop("ready", None)
        for r in c["runs"]["voxws"]:
            r.pop("ready", None)
    doc = metrics.nan_to_none({
        "schema": "voxws-bench-overhead/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "server": ready,
        "config": {"streams": streams, "models": {m: dict(zip(("step_base_ms", "step_per_seq_ms"), MODELS[m],
                                                              strict=True)) for m in models},
                   "requests_per_stream": args.requests_per_stream, "text": text, "text_chars": len(text),
                   "repeat": args.repeat, "procs": args.procs, "server_cmd": args.server_cmd},
        "targets": TARGETS,
        "cells": cells,
    })
    doc["verdicts"] = _verdicts(doc["cells"])
    body = table(doc)
    print()
    print(body)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    (args.out / "overhead.md").write_text("# Server overhead\n\n" + body + "\n", encoding="utf-8")
    if not args.no_docs:
        report.write_marked_block(args.docs, DOC_BEGIN, DOC_END, body, "# Benchmarks\n\n## Server overhead\n\n")
    print(f"\nwrote {args.out / 'overhead.json'}, {args.out / 'overhead.md'}"
          + ("" if args.no_docs else f", {args.docs}") + f"; server logs in {logs}")


if __name__ == "__main__":
    main()
