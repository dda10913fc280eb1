"""The batched streaming VAE decoder against a plain reference, on a small random decoder (CPU).

The reference decodes each stream's whole latent history at once with the unpatched causal
decoder and keeps the last chunk's samples: what streaming must produce, step by step, for any
mix of streams joining, finishing, being cancelled, skipping steps (preempted) and coming back.
"""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch: CPU is enough)")
nn = torch.nn
F = torch.nn.functional

from voxws.engines.vae_batched import SlotStreamingVAEDecoder  # noqa: E402


# A miniature of the engine's causal decoder (same layer conventions, same name-mangled padding).
class CausalConv1d(nn.Conv1d):
    def __init__(self, *args, padding: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.__padding = padding

    def forward(self, x):
        return super().forward(F.pad(x, (self.__padding * 2, 0)))


class CausalTransposeConv1d(nn.ConvTranspose1d):
    def __init__(self, *args, padding: int = 0, output_padding: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.__padding = padding
        self.__output_padding = output_padding

    def forward(self, x):
        return super().forward(x)[..., : -(self.__padding * 2 - self.__output_padding)]


def wn(m):
    return nn.utils.weight_norm(m)


class Snake(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(1, c, 1) + 0.5)

    def forward(self, x):
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class Residual(nn.Module):
    def __init__(self, c, dilation):
        super().__init__()
        self.block = nn.Sequential(Snake(c), wn(CausalConv1d(c, c, 7, dilation=dilation, padding=3 * dilation,
                                                            groups=c)),
                                   Snake(c), wn(CausalConv1d(c, c, 1)))

    def forward(self, x):
        return x + self.block(x)


class Decoder(nn.Module):
    def __init__(self, latent=4, channels=16, rates=(2, 3)):
        super().__init__()
        layers = [wn(CausalConv1d(latent, latent, 7, padding=3, groups=latent)), wn(CausalConv1d(latent, channels, 1))]
        for i, s in enumerate(rates):
            cin, cout = channels // 2**i, channels // 2 ** (i + 1)
            layers += [Snake(cin), wn(CausalTransposeConv1d(cin, cout, 2 * s, stride=s, padding=math.ceil(s / 2),
                                                            output_padding=s % 2)),
                       Residual(cout, 1), Residual(cout, 3)]
        layers += [Snake(cout), wn(CausalConv1d(cout, 1, 7, padding=3)), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = Decoder()

    @torch.inference_mode()
    def decode(self, z):
        return self.decoder(z)


LATENT, T, HOP = 4, 2, 6  # latent channels, frames per step, samples per frame (2 x 3)


def make(buckets=(1, 2, 4, 8), capacity=None) -> tuple[VAE, VAE, SlotStreamingVAEDecoder]:
    torch.manual_seed(0)
    ref = VAE().eval()
    for p in ref.parameters():
        p.data.normal_(0, 0.3)
    vae = VAE().eval()
    vae.load_state_dict(ref.state_dict())
    dec = SlotStreamingVAEDecoder(vae, CausalConv1d, CausalTransposeConv1d, buckets, capacity=capacity)
    dec.warmup(LATENT, T)
    return ref, vae, dec


def reference_chunk(ref: VAE, history: list, context=None) -> torch.Tensor:
    parts = ([context[0]] if context is not None else []) + history
    out = ref.decode(torch.cat(parts, dim=-1).unsqueeze(0))[0, 0]
    return out[-T * HOP:]


def test_streams_join_finish_cancel_and_skip_steps_match_the_whole_history_decode():
    ref, _, dec = make()
    rng = random.Random(1)
    live: dict[str, list] = {}
    made = 0
    checked = 0
    for _ in range(60):
        if rng.random() < 0.5 and len(live) < 12:  # joins (more than the largest bucket: no bucket)
            for _ in range(rng.randint(1, 3)):
                live[f"s{made}"] = []
                made += 1
        for sid in [s for s in live if rng.random() < 0.08]:  # finish or cancelled: the state goes
            dec.release(sid)
            del live[sid]
        # preempted streams sit a step out and come back with their state
        batch = [s for s in live if rng.random() > 0.2]
        rng.shuffle(batch)
        if not batch:
            continue
        z = torch.randn(len(batch), LATENT, T)
        out = dec.decode_chunks(z, batch)
        assert out.shape == (len(batch), 1, T * HOP)
        for i, sid in enumerate(batch):
            live[sid].append(z[i])
            want = reference_chunk(ref, live[sid])
            torch.testing.assert_close(out[i, 0], want, atol=1e-5, rtol=1e-5)
            checked += 1
    assert checked > 200 and made > 20


def test_a_released_id_used_again_starts_from_silence():
    ref, _, dec = make()
    z1, z2 = torch.randn(1, LATENT, T), torch.randn(1, LATENT, T)
    dec.decode_chunks(z1, ["a"])
    dec.release("a")
    out = dec.decode_chunks(z2, ["a"])
    torch.testing.assert_close(out[0, 0], reference_chunk(ref, [z2[0]]), atol=1e-5, rtol=1e-5)


def test_more_streams_with_state_than_slots_grow_the_buffers():
    ref, _, dec = make(buckets=(1, 2), capacity=2)
    hist: dict[str, list] = {f"s{i}": [] for i in range(9)}
    before = dec.state_bytes
    for _ in range(3):
        for sid in hist:  # one at a time: all nine keep state at once
            z = torch.randn(1, LATENT, T)
            out = dec.decode_chunks(z, [sid])
            hist[sid].append(z[0])
            torch.testing.assert_close(out[0, 0], reference_chunk(ref, hist[sid]), atol=1e-5, rtol=1e-5)
    assert dec.state_bytes > before


def test_initial_context_is_decoded_once_and_continued():
    ref, _, dec = make()
    ctx = torch.randn(1, LATENT, 5)
    z1, z2 = torch.randn(2, LATENT, T), torch.randn(2, LATENT, T)
    dec.decode_chunks(z1, ["p", "q"], [ctx, None])
    out = dec.decode_chunks(z2, ["p", "q"], [ctx, None])  # context again: ignored, already started
    torch.testing.assert_close(out[0, 0], reference_chunk(ref, [z1[0], z2[0]], ctx), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 0], reference_chunk(ref, [z1[1], z2[1]]), atol=1e-5, rtol=1e-5)


def test_refusals_match_the_engine_decoder():
    _, _, dec = make()
    with pytest.raises(ValueError):
        dec.decode_chunks(torch.randn(2, LATENT, T), ["a", "a"])
    with pytest.raises(ValueError):
        dec.decode_chunks(torch.randn(2, LATENT, T), ["a"])
    dec.decode_chunks(torch.randn(1, LATENT, T), ["a"])
    with pytest.raises(RuntimeError):
        dec.warmup(LATENT, T)
    dec.clear()
    dec.warmup(LATENT, T)


def test_outside_a_decode_the_layers_behave_as_before():
    ref, vae, _ = make()
    z = torch.randn(3, LATENT, 7)
    torch.testing.assert_close(vae.decode(z), ref.decode(z))
