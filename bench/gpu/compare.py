"""Put the raw engine sweep and the voxws-bench runs side by side, in one results file.

    python bench/gpu/compare.py --raw raw.json --voxws ttfb.json overload.json \
        [--voxws-mem ttfb=mem-ttfb.jsonl overload=mem-overload.jsonl] --out results.json

Both sides are reduced by the same code from per-request records (sent, first chunk, every
chunk's arrival, end, audio seconds). At each concurrency the first burst is the warm-up and
is left out (the first batch of a new size pays for allocator growth and cold caches).
Prints the markdown table that docs/benchmarks-gpu.md carries.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

GAP_LIMIT_MS = 500.0  # the target: no gap over 0.5 s after a stream's first chunk


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(x for x in xs if x is not None and math.isfinite(x))
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def with_rounds(records: list[dict]) -> list[dict]:
    """voxws-bench records carry no round: bursts of one level run one after the other, by id."""
    by: dict[Any, list[dict]] = defaultdict(list)
    for r in records:
        by[r["level"]].append(r)
    out = []
    for level, recs in by.items():
        recs.sort(key=lambda r: r["id"])
        size = int(level) if str(level).isdigit() else len(recs)
        for i, r in enumerate(recs):
            out.append({**r, "round": r.get("round", i // max(1, size))})
    return out


def reduce_level(recs: list[dict]) -> dict[str, Any]:
    """Metrics of the measured (non-warm-up) bursts of one level."""
    rounds = sorted({r["round"] for r in recs})
    measured = [r for r in recs if r["round"] > 0] if len(rounds) > 1 else recs
    ok = [r for r in measured if r["ok"]]
    gaps, largest = [], []
    for r in ok:
        f = r.get("frames_ms") or []
        d = [b - a for a, b in itertools.pairwise(f)]
        gaps += d
        largest.append(max(d) if d else 0.0)
    thr = []
    for rnd in sorted({r["round"] for r in measured}):
        b = [r for r in measured if r["round"] == rnd]
        ends = [r["end_s"] for r in b if r["ok"] and r.get("end_s") is not None]
        sent = [r["sent_s"] for r in b if r.get("sent_s") is not None]
        if ends and sent:
            thr.append(sum(r["audio_s"] for r in b if r["ok"]) / (max(ends) - min(sent)))
    errors: dict[str, int] = defaultdict(int)
    for r in measured:
        if not r["ok"]:
            errors[str(r.get("error"))] += 1
    return {
        "requests": len(measured), "ok": len(ok), "failed": len(measured) - len(ok), "errors": dict(errors),
        "bursts_measured": len(thr), "warmup_bursts": 1 if len(rounds) > 1 else 0,
        "ttfb_ms": {"p50": pct([r["ttfb_ms"] for r in ok], 50), "p90": pct([r["ttfb_ms"] for r in ok], 90),
                    "max": pct([r["ttfb_ms"] for r in ok], 100)},
        "throughput_audio_s_per_s": sum(thr) / len(thr) if thr else None,
        "step_gap_ms_p50": pct(gaps, 50),
        "largest_gap_ms": {"p50": pct(largest, 50), "max": pct(largest, 100)},
        "streams_with_gap_over_500ms": sum(1 for g in largest if g > GAP_LIMIT_MS),
        "queued": sum(1 for r in measured if r.get("queued")),
    }


def side(records: list[dict]) -> dict[int, dict]:
    by: dict[int, list[dict]] = defaultdict(list)
    for r in with_rounds(records):
        by[int(r["level"])].append(r)
    return {level: reduce_level(recs) for level, recs in sorted(by.items())}


def peak_of(path: str) -> int | None:
    """Largest card reading in a file of `python gpumem.py` lines."""
    peak = 0
    try:
        with open(path) as f:
            for line in f:
                try:
                    peak = max(peak, *json.loads(line).values())
                except (ValueError, TypeError):
                    continue
    except OSError:
        return None
    return peak or None


def verdicts(raw: dict[int, dict], vox: dict[int, dict]) -> dict[str, Any]:
    def get(d: dict, level: int, *keys: str) -> float | None:
        x: Any = d.get(level)
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        return x

    out: dict[str, Any] = {}
    r1, v1 = get(raw, 1, "ttfb_ms", "p50"), get(vox, 1, "ttfb_ms", "p50")
    if r1 is not None and v1 is not None:
        out["ttfb_c1"] = {"raw_ms": r1, "voxws_ms": v1, "target": "voxws <= raw + 5 ms", "pass": v1 <= r1 + 5}
    r128, v128 = get(raw, 128, "ttfb_ms", "p50"), get(vox, 128, "ttfb_ms", "p50")
    if r128 is not None and v128 is not None:
        out["ttfb_c128"] = {"raw_ms": r128, "voxws_ms": v128, "target": "voxws <= raw + 15 ms",
                            "pass": v128 <= r128 + 15}
    rt, vt = get(raw, 128, "throughput_audio_s_per_s"), get(vox, 128, "throughput_audio_s_per_s")
    if rt and vt is not None:
        out["throughput_c128"] = {"raw": rt, "voxws": vt, "ratio": vt / rt, "target": ">= 97% of raw",
                                  "pass": vt / rt >= 0.97}
    if 256 in vox:
        v = vox[256]
        out["overload_256"] = {"ok": v["ok"], "requests": v["requests"],
                               "largest_gap_ms": v["largest_gap_ms"]["max"],
                               "target": "all succeed, no gap over 500 ms after the first chunk",
                               "pass": v["failed"] == 0 and v["streams_with_gap_over_500ms"] == 0}
    return out


def fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.{digits}f}"


def table(doc: dict[str, Any]) -> str:
    raw, vox = doc["raw"]["levels"], doc["voxws"]["levels"]
    lines = ["| clients | TTFB p50 raw / voxws (ms) | TTFB p90 raw / voxws (ms) | throughput raw / voxws "
             "(audio s/s) | largest gap after 1st chunk raw / voxws (ms) | ok raw / voxws |",
             "|---|---|---|---|---|---|"]
    for level in sorted({int(k) for k in raw} | {int(k) for k in vox}):
        r, v = raw.get(str(level)) or raw.get(level) or {}, vox.get(str(level)) or vox.get(level) or {}

        def pair(key: str, sub: str | None = None, digits: int = 0, r=r, v=v) -> str:
            a, b = r.get(key), v.get(key)
            if sub:
                a, b = (a or {}).get(sub), (b or {}).get(sub)
            return f"{fmt(a, digits)} / {fmt(b, digits)}"

        okr = f"{r['ok']}/{r['requests']}" if r else "-"
        okv = f"{v['ok']}/{v['requests']}" if v else "-"
        lines.append(f"| {level} | {pair('ttfb_ms', 'p50', 1)} | {pair('ttfb_ms', 'p90', 1)} | "
                     f"{pair('throughput_audio_s_per_s', None, 1)} | {pair('largest_gap_ms', 'max')} | "
                     f"{okr} / {okv} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--voxws", nargs="*", default=[], help="voxws-bench JSON files (ttfb, overload)")
    ap.add_argument("--voxws-mem", nargs="*", default=[],
                    help="name=FILE: `python gpumem.py` output after each voxws phase")
    ap.add_argument("--voxws-ready-s", type=float, default=None, help="server start to /readyz")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.raw) as f:
        raw = json.load(f)
    vox_docs = []
    for p in args.voxws:
        try:
            with open(p) as f:
                vox_docs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"compare: skipping {p}: {e}", file=sys.stderr)
    for d in vox_docs:  # every frame is one engine step of the same size: keep arrival times only
        for r in d.get("requests", []):
            r.pop("frames_bytes", None)
    vox_records = [r for d in vox_docs for r in d.get("requests", [])]
    raw_levels = side(raw["requests"])
    for b in raw["bursts"]:  # card memory per level: peak over its bursts
        lv = raw_levels.get(b["level"])
        if lv is not None:
            lv["card_peak_mb"] = max(lv.get("card_peak_mb", 0), b["peak_mb"])
    vox_levels = side(vox_records)
    mem = {}
    for item in args.voxws_mem:
        name, _, path = item.partition("=")
        mem[name] = peak_of(path)
    card = (raw.get("cards") or [{}])[0]
    doc = {
        "schema": "voxws-gpu-bench/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "card": card, "cards": raw.get("cards"),
        "setup": {**raw["settings"], "text": raw["text"], "text_chars": raw["text_chars"],
                  "audio_s_per_request": raw["settings"]["steps"] * 0.16, "engine": raw["engine"],
                  "weights": "random, full-size VoxCPM 1.5 (bench/gpu/build_model.py), stop head forced off",
                  "flash_attn": "bench stand-in (bench/gpu/stubs: PyTorch's FlashAttention-2 kernel)"},
        "raw": {"ready_s": raw["ready_s"], "idle_mb": raw.get("idle_mb"), "levels": raw_levels,
                "bursts": raw["bursts"]},
        "voxws": {"ready_s": args.voxws_ready_s, "card_peak_mb": mem,
                  "server": (vox_docs[0].get("server") if vox_docs else None),
                  "client": [d.get("client") for d in vox_docs], "levels": vox_levels},
        "verdicts": verdicts(raw_levels, vox_levels),
        "raw_requests": raw["requests"],
        "voxws_runs": vox_docs,
    }
    doc = json.loads(json.dumps(doc, default=str))  # int keys -> str, as they will read back
    with open(args.out, "w") as f:
        json.dump(doc, f)
    print(table(doc))
    print()
    for k, v in doc["verdicts"].items():
        rest = json.dumps({x: y for x, y in v.items() if x != "pass"})
        print(f"{k}: {'PASS' if v['pass'] else 'MISS'} {rest}")
    mem_txt = ", ".join(f"{k} {fmt(v / 1024, 1)} GiB" for k, v in mem.items() if v)
    peak_raw = max((lv.get("card_peak_mb", 0) for lv in raw_levels.values()), default=0)
    print(f"card: {card.get('name')}; peak memory raw {fmt(peak_raw / 1024, 1)} GiB; voxws {mem_txt or '-'}")


if __name__ == "__main__":
    main()
