"""Per-stage timings: where a step's time goes, from the engine worker to the server's consumer.

Reads the timestamp files that voxws's worker layer writes with VOXWS_STAGE_LOG=PREFIX
(voxws/engines/engine_layer.py; all perf_counter, i.e. CLOCK_MONOTONIC, one clock for every
process on the machine):
- PREFIX.worker-<pid>.txt: per engine step `start vae_called vae_returned end n_seqs vae_cpu_s`;
- PREFIX.server-<pid>.txt (voxws only): per chunk `received resumed index request`: received from
  the pool in the adapter, and the session back for the next one (it has encoded the chunk and
  handed the frame to the socket); index -1: the request handed to the pool (after the coalescer);
- for the raw sweep, its raw.json (`t0_abs` + every chunk's arrival in the same process).

Grouped by the step's batch size (each burst runs one size): the worker's step time split into
host launch of LM+DiT (start -> decoder called), decoder host time (the decoder's Python), wait
for the GPU + output handling (-> end), the gap between two steps in the worker's loop, and the
lag from a step's end to its chunk arriving in the server process; and the engine's part of TTFB
(request handed to the pool -> its first chunk received), by the batch size of that first step.

    python bench/gpu/stages.py --prefix /tmp/stages/raw [--raw raw.json] --out stages-raw.json
"""

from __future__ import annotations

import argparse
import bisect
import glob
import json
import math
from collections import defaultdict

LEVELS = (1, 8, 32, 64, 128, 256)


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(x for x in xs if math.isfinite(x))
    if not xs:
        return None
    return xs[min(len(xs) - 1, round((len(xs) - 1) * q / 100))]


def load_rows(pattern: str, width: int) -> list[tuple[float, ...]]:
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= width:
                    rows.append(tuple(float(x) for x in parts[:width]))
    rows.sort()
    return rows


def analyse(prefix: str, raw: str | None = None) -> dict:
    steps = load_rows(f"{prefix}.worker-*.txt", 6)
    by: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    ends = [s[3] for s in steps]
    sizes = [int(s[4]) for s in steps]
    for i, (t0, v0, v1, t1, n, cpu) in enumerate(steps):
        d = by[int(n)]
        d["step_ms"].append((t1 - t0) * 1000)
        if v0 and v1:
            d["launch_ms"].append((v0 - t0) * 1000)
            d["vae_host_ms"].append((v1 - v0) * 1000)
            d["vae_host_cpu_ms"].append(cpu * 1000)
            d["gpu_wait_ms"].append((t1 - v1) * 1000)
        if i and t0 - steps[i - 1][3] < 1.0:
            d["between_steps_ms"].append((t0 - steps[i - 1][3]) * 1000)
    received: list[float] = []
    consumer: list[tuple[float, float]] = []
    first: list[tuple[float, float]] = []  # (handed to the engine, first chunk received)
    if raw:
        with open(raw) as f:
            doc = json.load(f)
        t0 = doc.get("t0_abs")
        if t0 is not None:
            for r in doc["requests"]:
                sent = t0 + r["sent_s"]
                frames = [sent + ms / 1000 for ms in r.get("frames_ms") or []]
                received += frames
                if frames:
                    first.append((sent, frames[0]))
    submitted: dict[int, float] = {}
    for a, b, idx, rid in load_rows(f"{prefix}.server-*.txt", 4):
        if idx < 0:
            submitted[int(rid)] = a
            continue
        received.append(a)
        consumer.append((a, b))
        if idx == 0 and int(rid) in submitted:
            first.append((submitted[int(rid)], a))
    for a, b in first:
        k = bisect.bisect_right(ends, b) - 1
        if k >= 0:
            by[sizes[k]]["engine_ttfb_ms"].append((b - a) * 1000)
    for t in received:
        k = bisect.bisect_right(ends, t) - 1
        if k >= 0 and t - ends[k] < 1.0:
            by[sizes[k]]["recv_lag_ms"].append((t - ends[k]) * 1000)
    for a, b in consumer:
        k = bisect.bisect_right(ends, a) - 1
        if k >= 0:
            by[sizes[k]]["consumer_ms"].append((b - a) * 1000)
    out = {}
    for n in sorted(by):
        d = by[n]
        if n not in LEVELS and len(d["step_ms"]) < 50:
            continue  # ramp-up and tail steps between two sizes
        out[str(n)] = {"steps": len(d["step_ms"]),
                       **{k: {"p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99)} for k, v in d.items()}}
    return {"prefix": prefix, "steps": len(steps), "chunks": len(received), "by_batch_size": out}


def table(sides: dict[str, dict]) -> str:
    cols = ["step_ms", "launch_ms", "vae_host_ms", "vae_host_cpu_ms", "gpu_wait_ms", "between_steps_ms", "recv_lag_ms",
            "consumer_ms", "engine_ttfb_ms"]
    lines = ["| side | batch | steps | " + " | ".join(c.removesuffix("_ms") + " p50 (p90) ms" for c in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for name, doc in sides.items():
        for n, d in doc["by_batch_size"].items():
            if int(n) not in LEVELS:
                continue
            cells = []
            for c in cols:
                v = d.get(c)
                cells.append(f"{v['p50']:.2f} ({v['p90']:.2f})" if v and v["p50"] is not None else "-")
            lines.append(f"| {name} | {n} | {d['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", nargs=2, action="append", metavar=("NAME", "PREFIX"), required=True)
    ap.add_argument("--raw", default=None, help="raw.json: chunk arrivals of the side named raw")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sides = {name: analyse(prefix, args.raw if name == "raw" else None) for name, prefix in args.side}
    with open(args.out, "w") as f:
        json.dump(sides, f)
    print(table(sides))


if __name__ == "__main__":
    main()
