"""One results file for issue 15's run: raw engine, voxws with the engine's VAE decode, voxws with
the batched one, the decoder exactness check, per-stage timings and memory, with verdicts.

    python bench/gpu/report.py --engine cmp-engine.json --batched cmp-batched.json --vae vae.json \
        --stages stages.json --out bench/results/gpu-h200-DATE.json

`--engine` / `--batched`: compare.py's output for raw vs voxws with VOXWS_ENGINE_VAE=engine /
batched (the same raw sweep in both). Prints the markdown tables docs/benchmarks-gpu.md carries.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any

LEVELS = ("1", "8", "32", "64", "128")


def g(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def fmt(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def verdicts(raw: dict, eng: dict, bat: dict, vae: dict | None, mem: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, vox in (("engine", eng), ("batched", bat)):
        rows, ok = {}, True
        for lv in LEVELS:
            rt, vt = g(raw, lv, "throughput_audio_s_per_s"), g(vox, lv, "throughput_audio_s_per_s")
            r50, v50 = g(raw, lv, "ttfb_ms", "p50"), g(vox, lv, "ttfb_ms", "p50")
            if None in (rt, vt, r50, v50):
                ok = False
                continue
            row = {"throughput_ratio": vt / rt, "ttfb_delta_ms": v50 - r50,
                   "pass": vt / rt >= 0.97 and v50 <= r50 + 5}
            ok = ok and row["pass"]
            rows[lv] = row
        o = g(vox, "256")
        over = None if o is None else {"ok": o["ok"], "requests": o["requests"],
                                       "largest_gap_ms": g(o, "largest_gap_ms", "max"),
                                       "pass": o["failed"] == 0 and o["streams_with_gap_over_500ms"] == 0}
        out[f"1_no_loss_{name}"] = {"target": "throughput >= 97% of raw and TTFB p50 <= raw + 5 ms at 1, 8, 32, "
                                              "64, 128; at 256 on seqs 128 no gap over 0.5 s",
                                    "levels": rows, "overload_256": over,
                                    "pass": ok and (over is None or over["pass"])}
    rt, bt = g(raw, "128", "throughput_audio_s_per_s"), g(bat, "128", "throughput_audio_s_per_s")
    r1, b1 = g(raw, "1", "step_gap_ms_p50"), g(bat, "1", "step_gap_ms_p50")
    if rt and bt is not None:
        out["2_batched_vae"] = {"target": ">= 1.5x raw throughput at 128; step time at 1 no worse than raw",
                                "raw_c128": rt, "batched_c128": bt, "ratio": bt / rt, "raw_step_c1_ms": r1,
                                "batched_step_c1_ms": b1,
                                "pass": bt / rt >= 1.5 and (r1 is None or b1 is None or b1 <= r1 * 1.02)}
    if vae:
        out["3_exactness"] = vae["exactness"]
    e, b = mem.get("voxws_engine_peak_mb"), mem.get("voxws_batched_peak_mb")
    if e and b:
        out["4_memory"] = {"target": "card memory at util 0.4 with the batched decoder no higher than without",
                           "engine_mb": e, "batched_mb": b, "delta_mb": b - e, "pass": b <= e}
    out["5_voice_prompt_ttfb"] = {"pass": None, "note": "not measured: voices are built on another branch and "
                                                        "are not in this one (no prompt path to drive yet)"}
    return out


def tables(doc: dict) -> str:
    raw, eng, bat = doc["raw"]["levels"], doc["voxws_engine"]["levels"], doc["voxws_batched"]["levels"]
    lines = ["| clients | TTFB p50 raw / voxws-engine / voxws-batched (ms) | throughput raw / engine / batched "
             "(audio s/s) | step time raw / engine / batched (ms) | largest gap raw / engine / batched (ms) |",
             "|---|---|---|---|---|"]
    for lv in sorted({*raw, *eng, *bat}, key=int):
        def three(*keys: str, digits: int = 1, lv: str = lv) -> str:
            return " / ".join(fmt(g(s, lv, *keys), digits) for s in (raw, eng, bat))
        lines.append(f"| {lv} | {three('ttfb_ms', 'p50')} | {three('throughput_audio_s_per_s')} | "
                     f"{three('step_gap_ms_p50')} | {three('largest_gap_ms', 'max', digits=0)} |")
    lines.append("")
    for k, v in doc["verdicts"].items():
        p = v.get("pass")
        lines.append(f"- {k}: {'PASS' if p else ('n/a' if p is None else 'MISS')} "
                     + json.dumps({x: y for x, y in v.items() if x != 'pass'}, default=str))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--batched", required=True)
    ap.add_argument("--vae", default=None)
    ap.add_argument("--stages", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    def load(p: str | None) -> Any:
        if not p:
            return None
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            print(f"report: {p}: {e}")
            return None

    ce, cb = load(args.engine) or {}, load(args.batched) or {}
    vae, stages = load(args.vae), load(args.stages)
    raw = g(ce, "raw", "levels") or g(cb, "raw", "levels") or {}
    eng, bat = g(ce, "voxws", "levels") or {}, g(cb, "voxws", "levels") or {}
    mem = {"raw_peak_mb": max((v.get("card_peak_mb", 0) for v in raw.values()), default=None),
           "voxws_engine_peak_mb": max((x for x in (g(ce, "voxws", "card_peak_mb") or {}).values() if x), default=None),
           "voxws_batched_peak_mb": max((x for x in (g(cb, "voxws", "card_peak_mb") or {}).values() if x),
                                        default=None),
           "vae_decoder": g(vae, "memory")}
    doc = {
        "schema": "voxws-gpu-bench/2", "issue": 15,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "card": ce.get("card") or cb.get("card"), "setup": ce.get("setup") or cb.get("setup"),
        "raw": {**(ce.get("raw") or {}), "levels": raw},
        "voxws_engine": {**(ce.get("voxws") or {}), "levels": eng, "vae": "engine"},
        "voxws_batched": {**(cb.get("voxws") or {}), "levels": bat, "vae": "batched"},
        "vae_decoder": vae, "stages": stages, "memory": mem,
        "verdicts": verdicts(raw, eng, bat, vae, mem),
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, default=str)
    print(tables(doc))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
