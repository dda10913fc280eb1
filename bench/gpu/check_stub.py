"""Check the flash-attn stand-in against an fp32 reference, in the shapes the engine uses.

    PYTHONPATH=bench/gpu/stubs python bench/gpu/check_stub.py

Prefill (packed varlen), prefill through a paged cache (prefix-cache path, block_table),
decode through a paged cache (also captured in a CUDA graph) and dense attention. Exits
non-zero when an error exceeds what bf16 allows.
"""

from __future__ import annotations

import sys

import torch
from flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

H, HKV, D, BS = 16, 2, 64, 256
SCALE = D ** -0.5
TOL = 0.05


def ref(q, k, v, causal):  # q [Sq, H, D], k/v [Sk, HKV, D]; bottom-right causal
    q, k, v = q.float(), k.float().repeat_interleave(H // HKV, 1), v.float().repeat_interleave(H // HKV, 1)
    s = torch.einsum("qhd,khd->hqk", q, k) * SCALE
    if causal:
        sq, sk = q.shape[0], k.shape[0]
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", s.softmax(-1), v)


def main() -> None:
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=dev).to(torch.bfloat16)

    errs = {}
    lens = [70, 5, 300]
    q, k, v = rnd(sum(lens), H, D), rnd(sum(lens), HKV, D), rnd(sum(lens), HKV, D)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    out = flash_attn_varlen_func(q, k, v, max_seqlen_q=max(lens), cu_seqlens_q=cu, max_seqlen_k=max(lens),
                                 cu_seqlens_k=cu, softmax_scale=SCALE, causal=True)
    errs["prefill"] = max((out[a:b].float() - ref(q[a:b], k[a:b], v[a:b], True)).abs().max().item()
                          for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=False))

    # Paged caches: 40 blocks; 3 sequences with their block tables (-1 padded).
    nblk = 40
    kc, vc = rnd(nblk, BS, HKV, D), rnd(nblk, BS, HKV, D)
    tables = [[3, 7], [12], [20, 21, 22]]
    klens = [300, 100, 700]
    w = max(map(len, tables))
    bt = torch.tensor([t + [-1] * (w - len(t)) for t in tables], dtype=torch.int32, device=dev)

    def keys(cache, i):
        return torch.cat([cache[b] for b in tables[i]])[: klens[i]]

    qlens = [44, 100, 1]  # new tokens per sequence (the rest is cached)
    qp = rnd(sum(qlens), H, D)
    cuq = torch.tensor([0, *torch.tensor(qlens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    cuk = torch.tensor([0, *torch.tensor(klens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    out = flash_attn_varlen_func(qp, kc, vc, max_seqlen_q=max(qlens), cu_seqlens_q=cuq,
                                 max_seqlen_k=max(klens), cu_seqlens_k=cuk, softmax_scale=SCALE, causal=True,
                                 block_table=bt)
    errs["prefill_paged"] = max(
        (out[a:b].float() - ref(qp[a:b], keys(kc, i), keys(vc, i), True)).abs().max().item()
        for i, (a, b) in enumerate(zip(cuq[:-1].tolist(), cuq[1:].tolist(), strict=False)))

    qd = rnd(3, 1, H, D)
    sl = torch.tensor(klens, dtype=torch.int32, device=dev)
    out = flash_attn_with_kvcache(qd, kc, vc, cache_seqlens=sl, block_table=bt, softmax_scale=SCALE,
                                  causal=True)
    want = torch.stack([ref(qd[i], keys(kc, i), keys(vc, i), True) for i in range(3)])
    errs["decode"] = (out.float() - want).abs().max().item()

    # The same decode inside a CUDA graph, replayed with new inputs (as the engine does).
    sq, ssl = qd.clone(), sl.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        flash_attn_with_kvcache(sq, kc, vc, cache_seqlens=ssl, block_table=bt, softmax_scale=SCALE,
                                causal=True)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gout = flash_attn_with_kvcache(sq, kc, vc, cache_seqlens=ssl, block_table=bt, softmax_scale=SCALE,
                                       causal=True)
    qd2 = rnd(3, 1, H, D)
    sq.copy_(qd2)
    ssl.copy_(torch.tensor([299, 1, 512], dtype=torch.int32, device=dev))
    graph.replay()
    torch.cuda.synchronize()
    klens = [299, 1, 512]
    want = torch.stack([ref(qd2[i], keys(kc, i), keys(vc, i), True) for i in range(3)])
    errs["decode_graph"] = (gout.float() - want).abs().max().item()

    qq, kk, vv = rnd(4, 9, H, D), rnd(4, 9, HKV, D), rnd(4, 9, HKV, D)
    out = flash_attn_func(qq, kk, vv, softmax_scale=SCALE, causal=False)
    errs["dense"] = max((out[i].float() - ref(qq[i], kk[i], vv[i], False)).abs().max().item()
                        for i in range(4))

    bad = {k: e for k, e in errs.items() if not e < TOL}
    print("flash_attn stand-in max abs error vs fp32:", {k: round(e, 4) for k, e in errs.items()},
          "FAIL" if bad else "ok", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
