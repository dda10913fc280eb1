"""The raw engine sweep: nano-vllm-voxcpm's async pool driven in-process, no voxws in between.

Measures what voxws-bench measures through the server, per request: TTFB (generate called to
first chunk), every chunk's arrival, the audio produced; per burst: throughput (audio s /
wall s from the first request to the last completion), the largest gap after a stream's
first chunk, and the card's memory after it (nvidia-smi). At each concurrency it runs `--rounds`
bursts of that many simultaneous requests; compare.py treats the first as the warm-up.

    python bench/gpu/sweep_raw.py --model DIR --out raw.json [--concurrency 1,8,32,64,128,256]

Needs flash_attn importable (bench/gpu/stubs on PYTHONPATH for the stand-in).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import gpumem

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT_FILE = os.path.join(HERE, "text67.txt")


async def one(pool, rid: int, level: int, rnd: int, text: str, steps: int, t0: float, rate: int) -> dict:
    clock = time.perf_counter
    frames: list[float] = []
    samples = 0
    err = None
    sent = clock()
    try:
        async for chunk in pool.generate(target_text=text, max_generate_length=steps, cfg_value=2.0,
                                         temperature=1.0):
            frames.append(clock())
            samples += len(chunk)
    except Exception as e:  # recorded, not raised: one failure must not end the sweep
        err = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    end = clock()
    return {
        # ok: no error and audio; complete: every step ran (always, with the stop head forced off)
        "id": rid, "level": level, "round": rnd, "ok": err is None and bool(frames), "error": err,
        "complete": len(frames) == steps,
        "sent_s": sent - t0, "first_frame_s": (frames[0] - t0) if frames else None, "end_s": end - t0,
        "ttfb_ms": (frames[0] - sent) * 1000 if frames else None, "frames": len(frames),
        "audio_s": samples / rate, "frames_ms": [round((t - sent) * 1000, 3) for t in frames],
    }


async def sweep(args: argparse.Namespace) -> dict:
    from nanovllm_voxcpm import VoxCPM

    if args.vae != "engine" or args.stage_log:  # voxws's worker layer (decoder choice, step timestamps)
        from voxws.engines import engine_layer

        engine_layer.install(args.vae, args.stage_log)
    if args.text:
        text = args.text
    else:
        with open(TEXT_FILE, encoding="utf-8") as f:
            text = f.read().strip()
    levels = [int(x) for x in args.concurrency.split(",")]
    t_start = time.perf_counter()
    pool = VoxCPM.from_pretrained(
        model=args.model, devices=[int(d) for d in args.devices.split(",")], max_num_seqs=args.seqs,
        max_model_len=args.len, gpu_memory_utilization=args.util,
        max_num_batched_tokens=max(16384, args.len),
    )
    await pool.wait_for_ready()
    ready_s = time.perf_counter() - t_start
    info = await pool.get_model_info()
    rate = int(info["sample_rate"])
    print(f"raw engine ready in {ready_s:.1f} s: {info}", flush=True)
    idle_mb = gpumem.used_mb()
    records: list[dict] = []
    bursts: list[dict] = []
    t0 = time.perf_counter()
    rid = 0
    try:
        for c in levels:
            for rnd in range(args.rounds):
                tb = time.perf_counter()
                recs = await asyncio.gather(*(one(pool, rid + i, c, rnd, text, args.steps, t0, rate)
                                              for i in range(c)))
                wall = time.perf_counter() - tb
                peak_mb = max(gpumem.used_mb().values())  # after the burst: see gpumem.py
                rid += c
                records += recs
                ok = sum(r["ok"] for r in recs)
                ttfb = sorted(r["ttfb_ms"] for r in recs if r["ttfb_ms"] is not None)
                bursts.append({"level": c, "round": rnd, "ok": ok, "wall_s": wall, "peak_mb": peak_mb})
                print(f"C={c:4d} round {rnd}: ok {ok}/{c}, wall {wall:.2f} s, "
                      f"TTFB p50 {ttfb[len(ttfb) // 2] if ttfb else float('nan'):.1f} ms, "
                      f"audio {sum(r['audio_s'] for r in recs) / wall:.1f} s/s, card {peak_mb} MiB",
                      flush=True)
    finally:
        t_stop = time.perf_counter()
        await pool.stop()
    import nanovllm_voxcpm
    import torch

    return {
        "source": "raw",
        "engine": {"package": "nano-vllm-voxcpm", "version": getattr(nanovllm_voxcpm, "__version__", "?"),
                   "torch": torch.__version__, "flash_attn": __import__("flash_attn").__version__},
        "settings": {"model": args.model, "devices": args.devices, "gpu_memory_utilization": args.util,
                     "max_num_seqs": args.seqs, "max_model_len": args.len, "steps": args.steps,
                     "rounds": args.rounds, "concurrency": levels},
        "text": text, "text_chars": len(text), "sample_rate": rate, "model_info": dict(info),
        "vae": args.vae, "t0_abs": t0,
        "ready_s": ready_s, "idle_mb": idle_mb, "cards": gpumem.cards(), "sweep_s": t_stop - t0,
        "bursts": bursts, "requests": records,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", default="0")
    ap.add_argument("--util", type=float, default=0.4)
    ap.add_argument("--seqs", type=int, default=128)
    ap.add_argument("--len", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=63, help="max_generate_length (the stop head never fires)")
    ap.add_argument("--concurrency", default="1,8,32,64,128,256")
    ap.add_argument("--rounds", type=int, default=3, help="bursts per level; the first is the warm-up")
    ap.add_argument("--vae", default="engine", choices=("engine", "batched"),
                    help="streaming VAE decode: the engine's, or voxws's batched layer")
    ap.add_argument("--stage-log", default=None, help="prefix for the worker's per-step timestamps")
    ap.add_argument("--text", default=None, help="default: text67.txt beside this script")
    args = ap.parse_args()
    doc = asyncio.run(sweep(args))
    with open(args.out, "w") as f:
        json.dump(doc, f)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
