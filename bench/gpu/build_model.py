"""Build a full-size VoxCPM 1.5 model directory with random weights (benchmark only).

Same shapes as the real model, so the same compute per engine step; the stop head is
forced to "continue", so every request runs exactly its max_generate_length steps.
Needs torch, safetensors, tokenizers, transformers and nano-vllm-voxcpm (with flash_attn
importable: bench/gpu/stubs on PYTHONPATH will do). About 15 s on a GPU.

    python bench/gpu/build_model.py --out /tmp/voxcpm15-random [--device cuda]

Writes config.json, model.safetensors (801.7M params, bf16, the official unfused names),
audiovae.pth (the engine's own AudioVAE, fp32), tokenizer.json + tokenizer_config.json
(a deterministic character-level BPE whose ids fit the 73448-entry embedding).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "voxcpm15-config.json")
SPECIALS = ["<unk>", "<s>", "</s>"]


def build_tokenizer(out: str, vocab_size: int) -> int:
    """One token per character (ASCII, CJK punctuation and full-width forms, CJK Unified
    Ideographs) plus a handful of merges, so that multi-character CJK tokens exist and the
    engine's rule (split them into characters) is exercised. Deterministic by construction."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    ranges = [(0x20, 0x7F), (0x3000, 0x3040), (0xFF00, 0xFF70), (0x4E00, 0xA000)]
    chars = [chr(c) for a, b in ranges for c in range(a, b)]
    vocab = {t: i for i, t in enumerate([*SPECIALS, "▁", *chars])}
    merges = [("t", "h"), ("th", "e"), ("i", "n"), ("中", "国"), ("我", "们"), ("今", "天")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    assert len(vocab) < vocab_size, (len(vocab), vocab_size)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace()
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": False, "model_max_length": 32768}, f, indent=1)
    return len(vocab)


def model_tensors(cfg_json: str, device: str, seed: int):
    """Yield (official name, tensor) for every parameter of the engine's own VoxCPMModel."""
    import torch
    from nanovllm_voxcpm.layers.layernorm import RMSNorm
    from nanovllm_voxcpm.layers.linear import MergedColumnParallelLinear, QKVParallelLinear
    from nanovllm_voxcpm.models.voxcpm.config import VoxCPMConfig
    from nanovllm_voxcpm.models.voxcpm.model import VoxCPMModel

    cfg = VoxCPMConfig.model_validate_json(cfg_json)
    with torch.device("meta"):
        model = VoxCPMModel(cfg, inference_timesteps=10)
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = cfg.lm_config.hidden_size

    def rand(shape):
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        return (t * 0.02).to(torch.bfloat16)

    for name, p in model.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        shape = tuple(p.shape)
        if isinstance(owner, RMSNorm) or "norm" in owner_name.rsplit(".", 1)[-1]:
            t = torch.ones(shape, dtype=torch.bfloat16, device=device)
        elif leaf == "bias":
            t = torch.zeros(shape, dtype=torch.bfloat16, device=device)
        else:
            t = rand(shape)
        if owner_name == "stop_proj":  # never stop: every request runs max_generate_length steps
            t = torch.zeros(shape, dtype=torch.bfloat16, device=device) if leaf == "weight" else \
                torch.ones(shape, dtype=torch.bfloat16, device=device)
        elif owner_name == "stop_head":
            t = torch.empty(shape, dtype=torch.bfloat16, device=device)
            t[0].fill_(0.01)
            t[1].fill_(-0.01)
            assert shape == (2, hidden)
        if isinstance(owner, QKVParallelLinear):
            q = owner.num_heads * owner.head_size
            kv = owner.num_kv_heads * owner.head_size
            base = owner_name.removesuffix("qkv_proj")
            for part, piece in zip(("q_proj", "k_proj", "v_proj"), t.split([q, kv, kv], dim=0), strict=True):
                yield f"{base}{part}.{leaf}", piece.contiguous()
        elif isinstance(owner, MergedColumnParallelLinear):
            base = owner_name.removesuffix("gate_up_proj")
            sizes = list(owner.output_sizes)
            for part, piece in zip(("gate_proj", "up_proj"), t.split(sizes, dim=0), strict=True):
                yield f"{base}{part}.{leaf}", piece.contiguous()
        else:
            yield name, t


def build(out: str, device: str, seed: int) -> dict:
    import torch
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    for stale in os.listdir(out):  # the loader globs every *.safetensors: leave nothing stale
        if stale.endswith(".safetensors"):
            os.remove(os.path.join(out, stale))
    shutil.copyfile(CONFIG, os.path.join(out, "config.json"))
    with open(CONFIG) as f:
        cfg_json = f.read()
    cfg = json.loads(cfg_json)
    vocab = build_tokenizer(out, cfg["lm_config"]["vocab_size"])

    tensors = {n: t.cpu() for n, t in model_tensors(cfg_json, device, seed)}
    n_params = sum(t.numel() for t in tensors.values())
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    del tensors

    from nanovllm_voxcpm.layers.audio_vae import AudioVAE

    torch.manual_seed(seed)
    vae = AudioVAE(**cfg["audio_vae_config"])
    vae_params = sum(p.numel() for p in vae.parameters())
    torch.save({"state_dict": vae.state_dict()}, os.path.join(out, "audiovae.pth"))
    info = {"path": out, "params": n_params, "tensors": None, "vae_params": vae_params, "vocab": vocab,
            "seconds": round(time.perf_counter() - t0, 1)}
    from safetensors import safe_open

    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        info["tensors"] = len(list(f.keys()))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--device", default="cuda", help="where to draw the random weights (cuda or cpu)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    print(json.dumps(build(args.out, args.device, args.seed)))


if __name__ == "__main__":
    main()
