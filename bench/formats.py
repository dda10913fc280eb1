#!/usr/bin/env python3
"""What a compressed format costs the server: N WebSocket streams through `voxws serve` (synthetic engine,
H100 step model), PCM against Opus (or any formats), the same text, TTFB, throughput and bytes per audio
second. Writes bench/results/formats.json and prints a markdown table.

    .venv/bin/python bench/formats.py                      # 128 streams x 3 requests, pcm_s16le vs opus
    .venv/bin/python bench/formats.py --streams 32 --formats pcm_s16le,mp3,opus
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

from voxws.bench import proc

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "bench" / "gpu" / "text67.txt").read_text().strip()


async def stream(url: str, fmt: str, requests: int, go: asyncio.Event) -> list[dict]:
    out = []
    async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
        await ws.recv()  # ready
        await go.wait()
        for _ in range(requests):
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "speak", "text": TEXT, "format": fmt}))
            first = None
            nbytes = 0
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    first = first or time.perf_counter()
                    nbytes += len(msg)
                    continue
                m = json.loads(msg)
                if m["type"] in ("done", "error"):
                    break
            out.append({"ok": m["type"] == "done", "ttfb_ms": ((first or t0) - t0) * 1000,
                        "audio_s": m.get("audio_ms", 0) / 1000, "bytes": nbytes})
    return out


async def run_format(port: int, fmt: str, streams: int, requests: int) -> dict:
    url = f"ws://127.0.0.1:{port}/v1/tts"
    go = asyncio.Event()
    tasks = [asyncio.create_task(stream(url, fmt, requests, go)) for _ in range(streams)]
    await asyncio.sleep(1.0)  # every socket open
    t0 = time.perf_counter()
    go.set()
    results = [r for rs in await asyncio.gather(*tasks) for r in rs]
    wall = time.perf_counter() - t0
    ttfb = sorted(r["ttfb_ms"] for r in results)
    audio = sum(r["audio_s"] for r in results)
    return {"format": fmt, "streams": streams, "requests": len(results), "ok": sum(r["ok"] for r in results),
            "ttfb_p50_ms": statistics.median(ttfb), "ttfb_p95_ms": ttfb[int(0.95 * (len(ttfb) - 1))],
            "throughput_x": audio / wall, "kbit_per_audio_s": sum(r["bytes"] for r in results) * 8 / audio / 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=128)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--formats", default="pcm_s16le,opus")
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs per format; the median is kept")
    a = ap.parse_args()
    port = proc.free_port()
    env = {**os.environ, "VOXWS_ENGINE": "synthetic", "VOXWS_PORT": str(port), "VOXWS_LOG_FORMAT": "json",
           "VOXWS_MAX_CONNECTIONS": str(a.streams + 8)}
    voxws = str(Path(sys.executable).with_name("voxws"))
    server = subprocess.Popen([voxws, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict] = []
    try:
        proc.wait_ready(port, server)
        runs: dict[str, list[dict]] = {}
        for _ in range(a.repeat):
            for fmt in a.formats.split(","):
                runs.setdefault(fmt, []).append(asyncio.run(run_format(port, fmt, a.streams, a.requests)))
        for rs in runs.values():
            rows.append(sorted(rs, key=lambda r: r["throughput_x"])[len(rs) // 2])
    finally:
        proc.stop(server)
    base = rows[0]
    print(f"| format | streams | ok | TTFB p50 / p95 (ms) | throughput (x real time) | vs {base['format']} | kb/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['streams']} | {r['ok']}/{r['requests']} | {r['ttfb_p50_ms']:.1f} / "
              f"{r['ttfb_p95_ms']:.1f} | {r['throughput_x']:.1f} | {r['throughput_x'] / base['throughput_x']:.1%} "
              f"| {r['kbit_per_audio_s']:.0f} |")
    out = ROOT / "bench" / "results" / "formats.json"
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "note": "dev VM, 2 cores shared with other jobs"},
                               "step_model": "h100 (9.5 ms + 0.53 ms x batch)", "text_chars": len(TEXT),
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
