"""A stand-in for flash-attn, for the GPU benchmark harness only (never for production).

nano-vllm-voxcpm imports three functions from `flash_attn` in its spawned worker processes;
building flash-attn needs a network and an hour, so the benchmark machine gets this package
on PYTHONPATH instead. It runs PyTorch's own FlashAttention-2 kernel
(`aten._flash_attention_forward`, varlen + GQA), which in torch 2.11 has no paged-KV
`block_table`: paged caches are gathered through the fixed-width block table into a dense
`[B, W*256, Hkv, D]` buffer first (padding entries -1 clamped to block 0, masked out by
`seqused_k`). The gather costs a few % of a decode step at 128 sequences; real flash-attn
reads only live tokens, so these numbers are slightly pessimistic.
Decode runs inside CUDA graphs: no host syncs, no data-dependent shapes.
"""

from __future__ import annotations

import torch

__version__ = "0.0.0+voxws.bench.stub"

_fa = torch.ops.aten._flash_attention_forward


def _cu(n: int, step: int, device: torch.device) -> torch.Tensor:
    return torch.arange(0, (n + 1) * step, step, dtype=torch.int32, device=device)


def _gather(cache: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """[num_blocks, bs, H, D] paged cache -> [B * W * bs, H, D] dense keys of each row's blocks."""
    b, w = block_table.shape
    blocks = cache.index_select(0, block_table.clamp(min=0).reshape(-1).long())
    return blocks.reshape(b * w * cache.shape[1], cache.shape[2], cache.shape[3])


def flash_attn_varlen_func(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k,
                           softmax_scale=None, causal=False, block_table=None, **_ignored):
    """Packed variable-length attention. With block_table, k/v are the whole paged caches."""
    seqused_k = None
    if block_table is not None:
        b, w = block_table.shape
        span = w * k.shape[1]
        seqused_k = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).to(torch.int32)
        k, v = _gather(k, block_table), _gather(v, block_table)
        cu_seqlens_k = _cu(b, span, q.device)
        max_seqlen_k = span
    out = _fa(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, 0.0, causal, False,
              scale=softmax_scale, seqused_k=seqused_k)
    return out[0]


def flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=None, block_table=None,
                            softmax_scale=None, causal=False, **_ignored):
    """Decode: q [B, 1, H, D] against paged caches; cache_seqlens already counts this token."""
    b = q.shape[0]
    if block_table is None:  # contiguous caches [B, S, Hkv, D]
        span = k_cache.shape[1]
        k = k_cache.reshape(b * span, k_cache.shape[2], k_cache.shape[3])
        v = v_cache.reshape(b * span, v_cache.shape[2], v_cache.shape[3])
    else:
        span = block_table.shape[1] * k_cache.shape[1]
        k, v = _gather(k_cache, block_table), _gather(v_cache, block_table)
    if cache_seqlens is None:
        cache_seqlens = torch.full((b,), span, dtype=torch.int32, device=q.device)
    out = _fa(q.reshape(b, q.shape[2], q.shape[3]), k, v, _cu(b, 1, q.device), _cu(b, span, q.device),
              1, span, 0.0, causal, False, scale=softmax_scale, seqused_k=cache_seqlens.to(torch.int32))
    return out[0].reshape(q.shape)


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, **_ignored):
    """Dense [B, S, H, D] attention (the local encoder and DiT: S = 5 or 9)."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=softmax_scale,
        enable_gqa=k.shape[2] != q.shape[2],
    )
    return out.transpose(1, 2).contiguous()
