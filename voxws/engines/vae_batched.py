"""The streaming VAE decode, batched: one gather, one convolution, one scatter per stateful layer.

nano-vllm-voxcpm 2.0.5 decodes each step's latents through the VAE decoder's causal
convolutions with a Python loop over the batch's sequences in every stateful layer (a
`torch.cat`, a slice and a dict write per sequence per layer: about 60% of a step at 128
sequences). Each layer's per-sequence state is a fixed-size tail of its input, so this decoder
keeps the states of all streams in one preallocated buffer per layer, `[slots, C, P]`, and a
stream owns one slot (row) of every buffer from its first chunk until `release`. A decode is
then, per layer: `index_select` the batch's rows, `cat` them in front of the input, `index_copy_`
the new tails back, convolve. Padding rows (up to the batch-size bucket) read the all-zero row 0
and write the scratch row 1, so they never touch a stream's state. On CUDA, each bucket's whole
decode is captured once as a CUDA graph (all graphs share one memory pool, largest first).

Same interface as the engine's `BatchedStreamingVAEDecoder` (decode_chunks, warmup, release,
clear) and the same arithmetic on the same padded batch shapes, so its audio equals the engine's
within float32 rounding. Pure torch: the engine is not imported here (`engine_layer` installs
this into the engine's worker and checks the engine's version first).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import nn

ZERO_SLOT = 0  # never written: the state of a padding row or of a stream's first chunk
SCRATCH_SLOT = 1  # padding rows write here
FIRST_SLOT = 2


class SlotStreamingVAEDecoder:
    """Stateful causal VAE decoder for dynamically batched streams, states in per-slot buffers.

    vae: the engine's AudioVAE (its `decoder` holds the causal layers); causal_conv_type /
    causal_transpose_conv_type: the engine's CausalConv1d / CausalTransposeConv1d classes;
    buckets: the batch sizes a batch is padded up to (the engine's own bucket list, so that both
    decoders run the same shapes); graphs: capture a CUDA graph per bucket (None: on CUDA only).
    """

    def __init__(self, vae: nn.Module, causal_conv_type: type[nn.Conv1d],
                 causal_transpose_conv_type: type[nn.ConvTranspose1d], buckets: Sequence[int] = (),
                 *, capacity: int | None = None, graphs: bool | None = None, benchmark: bool = False):
        self._vae = vae
        self._buckets = tuple(sorted(buckets))
        param = next(vae.decoder.parameters())
        self._device, self._dtype = param.device, torch.float32
        self._graphs_on = (self._device.type == "cuda") if graphs is None else graphs
        # cuDNN autotuning while capturing: other conv algorithms than the engine's decoder picks
        # (off by default: then both run the same kernels and the audio is bit-identical)
        self._benchmark = benchmark
        pinned = self._device.type == "cuda"
        # device="cpu" everywhere on the host side: the engine loads its model under a CUDA default device
        self._host_idx = torch.zeros(2, max(self._buckets, default=1), dtype=torch.int64, device="cpu",
                                     pin_memory=pinned)
        self._host_done: Any = None  # event: the last copy out of _host_idx has been read
        self._capacity = max(capacity or 0, 2 * (self._buckets[-1] if self._buckets else 8))
        self._layers: list[tuple[int, int]] = []  # (channels, tail length) per stateful layer
        self._bufs: list[torch.Tensor] = []
        self._slots: dict[Hashable, int] = {}
        self._free: list[int] = []
        self._read: torch.Tensor | None = None  # set only while a decode runs
        self._write: torch.Tensor | None = None
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._pool: Any = None
        self._chunk_shape: tuple[int, int] | None = None  # (latent channels, frames) of a step
        self._install(causal_conv_type, causal_transpose_conv_type)
        self._allocate(self._capacity)

    # -- the engine's interface ----------------------------------------------------------------

    @torch.inference_mode()
    def decode_chunks(self, z_chunks: torch.Tensor, stream_ids: Sequence[Hashable],
                      initial_contexts: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Decode one new latent chunk `[B, D, T]` for each stream; returns `[B, 1, samples]`.

        The result is only valid until the next call (it may live in a CUDA graph's output)."""
        if z_chunks.ndim != 3:
            raise ValueError(f"z_chunks must have shape [B, D, T], got {tuple(z_chunks.shape)}")
        if len(stream_ids) != z_chunks.size(0):
            raise ValueError("stream_ids length must match z_chunks batch size")
        if len(set(stream_ids)) != len(stream_ids):
            raise ValueError("stream_ids must be unique within a decode batch")
        if initial_contexts is None:
            initial_contexts = [None] * len(stream_ids)
        if len(initial_contexts) != len(stream_ids):
            raise ValueError("initial_contexts length must match stream_ids length")
        new = [i for i, sid in enumerate(stream_ids) if sid not in self._slots]
        if new:
            slots = [self._take_slot(stream_ids[i]) for i in new]
            index = self._index(slots)
            for buf in self._bufs:  # a new stream starts from silence
                buf.index_fill_(0, index, 0.0)
            for i in new:  # a voice prompt's latents: decoded once, output dropped, state kept
                ctx = initial_contexts[i]
                if ctx is not None and ctx.numel() > 0:
                    if ctx.ndim != 3 or ctx.size(0) != 1:
                        raise ValueError("each initial context must have shape [1, D, T]")
                    self._eager(ctx, [self._slots[stream_ids[i]]], [self._slots[stream_ids[i]]])
        slots = [self._slots[sid] for sid in stream_ids]
        return self._decode_bucketed(z_chunks, slots)

    @torch.inference_mode()
    def warmup(self, latent_channels: int, chunk_size: int) -> None:
        """Run (on CUDA: capture) every bucket once, so that serving never pays for it."""
        if self._slots:
            raise RuntimeError("streaming VAE warmup requires empty stream state")
        self._chunk_shape = (latent_channels, chunk_size)
        for b in sorted(self._buckets, reverse=True):  # largest first: later graphs reuse its pool
            if self._graphs_on:
                self._graphs.get(b) or self._capture(b)
            else:  # padding rows only: no stream's state is touched
                z = torch.zeros(b, latent_channels, chunk_size, device=self._device, dtype=self._dtype)
                self._eager(z, [ZERO_SLOT] * b, [SCRATCH_SLOT] * b)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def release(self, stream_id: Hashable) -> None:
        slot = self._slots.pop(stream_id, None)
        if slot is not None:
            self._free.append(slot)

    def clear(self) -> None:
        for sid in list(self._slots):
            self.release(sid)

    # -- introspection (tests, benchmarks) ----------------------------------------------------

    @property
    def state_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs)

    @property
    def graph_buckets(self) -> tuple[int, ...]:
        return tuple(sorted(self._graphs))

    # -- internals ------------------------------------------------------------------------------

    def _take_slot(self, sid: Hashable) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slots[sid] = slot
        return slot

    def _allocate(self, capacity: int) -> None:
        with torch.inference_mode():
            old = self._bufs
            self._bufs = [torch.zeros(FIRST_SLOT + capacity, c, p, device=self._device, dtype=self._dtype)
                          for c, p in self._layers]
            for new, prev in zip(self._bufs, old, strict=False):  # old is empty on the first call
                new[: prev.size(0)].copy_(prev)
        used = set(self._slots.values())
        self._free = [s for s in range(FIRST_SLOT + capacity - 1, FIRST_SLOT - 1, -1) if s not in used]
        self._capacity = capacity

    def _grow(self) -> None:
        # More streams hold state than there are slots (preempted streams keep theirs): double the
        # buffers. The graphs point at the old buffers, so they go and are captured again on use.
        self._graphs.clear()
        self._pool = None
        self._allocate(self._capacity * 2)

    def _bucket(self, n: int) -> int:
        return next((b for b in self._buckets if b >= n), n)

    def _decode_bucketed(self, z: torch.Tensor, slots: list[int]) -> torch.Tensor:
        n = z.size(0)
        b = self._bucket(n)
        read = slots + [ZERO_SLOT] * (b - n)
        write = slots + [SCRATCH_SLOT] * (b - n)
        if self._graphs_on and b in self._buckets and self._chunk_shape == tuple(z.shape[1:]):
            graph = self._graphs.get(b) or self._capture(b)
            g, zs, rs, ws, out = graph
            zs[:n].copy_(z)
            if b > n:
                zs[n:].zero_()
            if self._host_done is not None:
                self._host_done.synchronize()  # the previous step's index copy has left the buffer
            self._host_idx[0, :b] = torch.tensor(read, dtype=torch.int64, device="cpu")
            self._host_idx[1, :b] = torch.tensor(write, dtype=torch.int64, device="cpu")
            rs.copy_(self._host_idx[0, :b], non_blocking=True)
            ws.copy_(self._host_idx[1, :b], non_blocking=True)
            self._host_done = torch.cuda.Event()
            self._host_done.record()
            g.replay()
            return out[:n]
        if b > n:
            z = torch.cat([z, z.new_zeros((b - n, *z.shape[1:]))], dim=0)
        return self._eager(z, read, write)[:n]

    def _host(self, index: list[int]) -> torch.Tensor:
        t = torch.tensor(index, dtype=torch.int64, device="cpu")
        # pinned: the copy to the GPU stays asynchronous (a pageable one can wait for the step's kernels)
        return t.pin_memory() if self._device.type == "cuda" else t

    def _index(self, index: list[int]) -> torch.Tensor:
        return self._host(index).to(self._device, non_blocking=True)

    def _eager(self, z: torch.Tensor, read: list[int], write: list[int]) -> torch.Tensor:
        return self._run(z.to(self._dtype), self._index(read), self._index(write))

    def _run(self, z: torch.Tensor, read: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
        if self._read is not None:
            raise RuntimeError("streaming VAE decode is not reentrant")
        self._read, self._write = read, write
        try:
            return self._vae.decode(z)
        finally:
            self._read = self._write = None

    def _capture(self, b: int) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self._chunk_shape is not None
        zs = torch.zeros(b, *self._chunk_shape, device=self._device, dtype=self._dtype)
        rs = torch.full((b,), ZERO_SLOT, device=self._device, dtype=torch.int64)
        ws = torch.full((b,), SCRATCH_SLOT, device=self._device, dtype=torch.int64)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self._benchmark
        try:
            with torch.cuda.stream(side):  # settle lazy init and the scripted snake before capturing
                for _ in range(3):
                    self._run(zs, rs, ws)
            torch.cuda.current_stream(self._device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self._pool):
                out = self._run(zs, rs, ws)
        finally:
            torch.backends.cudnn.benchmark = before
        self._graphs[b] = (g, zs, rs, ws, out)
        return self._graphs[b]

    def _install(self, conv_type: type[nn.Conv1d], tconv_type: type[nn.ConvTranspose1d]) -> None:
        # The tail lengths by the engine's own rule (its name-mangled padding attributes).
        for module in self._vae.decoder.modules():
            if isinstance(module, conv_type):
                tail = module._CausalConv1d__padding * 2 - getattr(module, "_CausalConv1d__output_padding", 0)
                if tail > 0:
                    self._patch_conv(module, self._add_layer(module.in_channels, tail), tail)
            elif isinstance(module, tconv_type):
                trim = module._CausalTransposeConv1d__padding * 2 - module._CausalTransposeConv1d__output_padding
                context = module.kernel_size[0] // module.stride[0] - 1
                if context > 0:
                    self._patch_transpose(module, self._add_layer(module.in_channels, context), context, trim)

    def _add_layer(self, channels: int, tail: int) -> int:
        self._layers.append((channels, tail))
        return len(self._layers) - 1

    def _patch_conv(self, module: nn.Conv1d, layer: int, tail: int) -> None:
        def forward(x: torch.Tensor, *, _m: nn.Conv1d = module) -> torch.Tensor:
            if self._read is None:
                return type(_m).forward(_m, x)
            state = self._bufs[layer]
            padded = torch.cat([state.index_select(0, self._read), x], dim=-1)
            state.index_copy_(0, self._write, padded[..., -tail:])
            return nn.Conv1d.forward(_m, padded)

        module.forward = forward

    def _patch_transpose(self, module: nn.ConvTranspose1d, layer: int, context: int, trim: int) -> None:
        def forward(x: torch.Tensor, *, _m: nn.ConvTranspose1d = module) -> torch.Tensor:
            if self._read is None:
                return type(_m).forward(_m, x)
            state = self._bufs[layer]
            full = torch.cat([state.index_select(0, self._read), x], dim=-1)
            state.index_copy_(0, self._write, full[..., -context:])
            out = nn.ConvTranspose1d.forward(_m, full)
            left = context * _m.stride[0]
            return out[..., left:-trim] if trim > 0 else out[..., left:]

        module.forward = forward
