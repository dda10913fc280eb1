"""The batched streaming VAE decode against the engine's own, on the GPU: exactness, time, memory.

Two copies of the engine's AudioVAE (VoxCPM 1.5's config, random weights, fp32) with the same
weights: one behind nano-vllm-voxcpm's BatchedStreamingVAEDecoder, one behind voxws's
SlotStreamingVAEDecoder (CUDA graphs per bucket). A random schedule of at least 200 steps in
which streams join (some with a voice-prompt context), finish, are cancelled, and sit steps out
(as a preempted sequence does: state kept, no decode) is fed to both; every step's audio is
compared. Then each decoder alone is timed at batch sizes 1..128 (median of decode + sync),
with its memory.

    python bench/gpu/vae_exact.py --config voxcpm15-config.json --out vae.json [--steps 240]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch


def build(cfg: dict, max_seqs: int):
    from nanovllm_voxcpm.layers.audio_vae import AudioVAE, CausalConv1d, CausalTransposeConv1d
    from nanovllm_voxcpm.utils.batch_buckets import make_batch_size_buckets

    from voxws.engines.vae_batched import SlotStreamingVAEDecoder

    torch.manual_seed(0)
    vae_a = AudioVAE(**cfg["audio_vae_config"]).cuda().eval()
    with torch.no_grad():  # weight-norm g/v and snake alphas: random, audible-range activations
        for name, p in vae_a.named_parameters():
            if name.endswith("alpha"):
                p.uniform_(0.5, 1.5)
    vae_b = AudioVAE(**cfg["audio_vae_config"]).cuda().eval()  # weight norm: no deepcopy
    vae_b.load_state_dict(vae_a.state_dict())
    eng = vae_a.streaming_decoder(max_seqs)
    ours = SlotStreamingVAEDecoder(vae_b, CausalConv1d, CausalTransposeConv1d, make_batch_size_buckets(max_seqs))
    return vae_a, vae_b, eng, ours


def exactness(eng, ours, feat: int, patch: int, steps: int, max_live: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    live: list[str] = []
    made = joined = finished = cancelled = skipped = with_context = 0
    worst = 0.0
    samples = 0
    sizes: list[int] = []
    n_steps = 0
    fresh: set[str] = set()
    for step in range(steps):
        # phases of 40 steps: up to a little over max_live streams with state, then down to 1/8
        target = max_live + 12 if (step // 40) % 2 == 0 else max(1, max_live // 8)
        for _ in range(min(rng.randint(0, 16), max(0, target - len(live)))):
            live.append(f"s{made}")
            fresh.add(f"s{made}")
            made += 1
            joined += 1
        for sid in list(live):
            if rng.random() < 0.03:
                live.remove(sid)
                finished += 1
                eng.release(sid)
                ours.release(sid)
            elif rng.random() < 0.01:  # cancelled mid-stream: released likewise, between steps
                live.remove(sid)
                cancelled += 1
                eng.release(sid)
                ours.release(sid)
        # the rest sit this step out (preempted, or over the batch limit) and keep their state
        batch = [s for s in live if rng.random() > 0.1][:max_live]
        skipped += len(live) - len(batch)
        if not batch:
            continue
        rng.shuffle(batch)
        z = torch.randn(len(batch), feat, patch, device="cuda")
        ctx = []
        for sid in batch:  # a voice prompt's latents on a stream's first step (ignored after it)
            if rng.random() < 0.2:
                ctx.append(torch.randn(1, feat, 2 * patch, device="cuda"))
                with_context += sid in fresh
            else:
                ctx.append(None)
            fresh.discard(sid)
        a = eng.decode_chunks(z, batch, ctx)[:, 0, :].float()
        b = ours.decode_chunks(z, batch, ctx)[:, 0, :].float()
        worst = max(worst, (a - b).abs().max().item())
        samples += a.numel()
        sizes.append(len(batch))
        n_steps += 1
    for sid in live:
        eng.release(sid)
        ours.release(sid)
    return {"steps": n_steps, "batched_graphs": list(ours.graph_buckets), "max_abs_diff": worst, "samples": samples,
            "streams": made, "joined": joined,
            "finished": finished, "cancelled": cancelled, "sat_out": skipped, "with_prompt_context": with_context,
            "batch_sizes": {"min": min(sizes), "max": max(sizes), "mean": statistics.mean(sizes)},
            "target": "max abs diff <= 1e-4 over >= 200 steps", "pass": worst <= 1e-4 and n_steps >= 200}


def timing(dec, feat: int, patch: int, sizes: list[int], reps: int) -> dict:
    out = {}
    for n in sizes:
        ids = [f"t{n}-{i}" for i in range(n)]
        z = torch.randn(n, feat, patch, device="cuda")
        for _ in range(3):
            dec.decode_chunks(z, ids)[:, 0, :].cpu()
        ts = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dec.decode_chunks(z, ids)[:, 0, :].cpu()  # as the runner does: to host, which syncs
            ts.append((time.perf_counter() - t0) * 1000)
        for sid in ids:
            dec.release(sid)
        out[str(n)] = statistics.median(ts)
    return out


def top_kernels(dec, feat: int, patch: int, n: int) -> list[dict]:
    """CUDA kernel time of one decode at batch n, by kernel name (torch.profiler over 5 decodes)."""
    from torch.profiler import ProfilerActivity, profile

    ids = [f"p{i}" for i in range(n)]
    z = torch.randn(n, feat, patch, device="cuda")
    dec.decode_chunks(z, ids)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            dec.decode_chunks(z, ids)
        torch.cuda.synchronize()
    for sid in ids:
        dec.release(sid)
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            rows.append({"name": e.key, "ms": t / 1000 / 5, "count": e.count // 5})
    rows.sort(key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows)
    return [{"name": "TOTAL", "ms": total, "count": sum(r["count"] for r in rows)}, *rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--seqs", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    feat, patch = int(cfg["feat_dim"]), int(cfg["patch_size"])
    torch.cuda.reset_peak_memory_stats()
    vae_a, _, eng, ours = build(cfg, args.seqs)
    t0 = time.perf_counter()
    eng.warmup(feat, patch)
    t_eng = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours.warmup(feat, patch)
    t_ours = time.perf_counter() - t0
    ex = exactness(eng, ours, feat, patch, args.steps, args.seqs)
    print(f"exactness: {json.dumps(ex)}", flush=True)
    sizes = [1, 8, 32, 64, 128]
    # memory and time, each decoder alone (the other's copy freed)
    res_t: dict = {}
    mem: dict = {}
    for name, dec in (("engine", eng), ("batched", ours)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        res_t[name] = timing(dec, feat, patch, sizes, args.reps)
        mem[name] = {"peak_over_steady_mb": (torch.cuda.max_memory_allocated() - before) / 2**20}
        print(f"{name} decode ms by batch size: {res_t[name]}", flush=True)
    mem["batched"]["state_buffers_mb"] = ours.state_bytes / 2**20
    # cuDNN autotuning while capturing (SlotStreamingVAEDecoder(benchmark=True)) was measured on the
    # H200 in run 2: bit-identical and no faster (30.16 vs 30.16 ms at 128): left out since.
    ex_tuned = None
    try:
        profile = top_kernels(ours, feat, patch, args.seqs)
    except Exception as e:  # the profiler (CUPTI) is not there on every machine
        profile = [{"name": f"profiler failed: {type(e).__name__}: {e}", "ms": 0.0, "count": 0}]
    print(f"batched decode at {args.seqs}: top kernels (ms per decode)")
    for row in profile[:12]:
        print(f"  {row['ms']:7.3f}  x{row['count']:<4d} {row['name'][:110]}")
    mem["batched"]["graph_buckets"] = list(ours.graph_buckets)
    mem["vae_weights_mb"] = sum(p.numel() * 4 for p in vae_a.parameters()) / 2**20
    doc = {"exactness": ex, "exactness_cudnn_benchmark": ex_tuned, "top_kernels_batched": profile[:25],
           "decode_ms": res_t, "speedup": {n: res_t["engine"][n] / res_t["batched"][n]
                                                            for n in res_t["engine"]},
           "warmup_s": {"engine": t_eng, "batched": t_ours}, "memory": mem,
           "torch": torch.__version__, "device": torch.cuda.get_device_name()}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"speedup by batch size: { {k: round(v, 2) for k, v in doc['speedup'].items()} }")
    print(f"memory: {json.dumps(mem)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
