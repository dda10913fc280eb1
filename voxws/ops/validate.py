"""`voxws-ops validate`: env files checked with the server's rules plus the ones only ops can see.

Per file: everything `voxws serve` checks at start-up (voxws.config.load, the same code), then what
needs the deployment around it: the model directory's contents, max_model_len against the expected
text length (voxws.sizing), the unit's port floor and stop timeout, the card's memory, and the voices
directory and default voice (voxws.ops.voices).
Across files: one physical GPU in two groups, one port or group name twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from voxws import config, sizing
from voxws.ops import envfile
from voxws.ops import voices as voices_ops
from voxws.ops.plan import UNPRIVILEGED_PORT_START, hidden_path
from voxws.ops.render import STOP_MARGIN_S, TIMEOUT_STOP_S

# Beyond the engine's budget (util x card) the process also holds CUDA graphs, streaming-VAE
# activations and allocator growth, ~PER_SEQ_OVERHEAD_GB per running sequence (sizing.py). On an H100
# 80 GB, util 0.9 with 128 sequences came within 0.6 GB of out-of-memory: keep this much more free.
SAFE_HEADROOM_GB = 2.0


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def env_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand directories to their *.env files (sorted); name what is missing."""
    out: list[Path] = []
    errors: list[str] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.env"))
            if not found:
                errors.append(f"{p}: must contain *.env files (one per GPU group); found none")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            errors.append(f"{p}: must be an env file or a directory of them; it does not exist")
    return out, errors


def model_dir_problem(source: str, path: str) -> str | None:
    if hidden_path(path):
        return config.problem(source, "VOXCPM_MODEL_PATH", path,
                              "outside /home, /root and /run/user, which the unit's ProtectHome=yes hides")
    return config.model_dir_problem(path, source)


def memory_warnings(source: str, util: float, seqs: int, max_len: int, card_gb: float) -> list[str]:
    """The absolute budget on a card of card_gb: the engine's part, and what is left outside it."""
    out = []
    inside = sizing.memory_estimate_gb(seqs, max_len, per_seq_overhead_gb=0)
    budget = util * card_gb
    if inside > budget:
        out.append(f"{source}: VOXCPM_GPU_MEMORY_UTILIZATION={util:g}: {util:g} x {card_gb:g} GB = "
                   f"{budget:.1f} GB does not hold weights, activations and a KV cache for {seqs} seqs x "
                   f"{max_len} positions ({inside:.1f} GB): the engine fails to start or gets fewer KV "
                   "blocks and sequences wait; raise the utilization or lower VOXCPM_MAX_NUM_SEQS / "
                   "VOXCPM_MAX_MODEL_LEN (`voxws-ops recommend`)")
    outside = sizing.PER_SEQ_OVERHEAD_GB * seqs
    headroom = card_gb * (1 - util) - outside
    if headroom < SAFE_HEADROOM_GB:
        best = math.floor((1 - (outside + SAFE_HEADROOM_GB) / card_gb) * 20) / 20
        out.append(f"{source}: VOXCPM_GPU_MEMORY_UTILIZATION={util:g}: leaves {headroom:.1f} GB of a "
                   f"{card_gb:g} GB card after the engine's budget and ~{outside:.1f} GB of graphs and VAE "
                   f"activations for {seqs} sequences; keep {SAFE_HEADROOM_GB:g} GB free (util 0.9 on an "
                   f"80 GB H100 came within 0.6 GB of out-of-memory): use at most {best:.2f}")
    return out


def check_file(path: Path, max_text_chars: int | None, gpu_memory_gb: float | None, check_model: bool,
               rep: Report, check_voices: bool = True) -> tuple[config.Settings, list[str], str, frozenset[str]] | None:
    """Every error and warning of one file into rep, a bad line or value never hiding the others.

    Returns (settings, physical GPUs, group, refused variables) for the cross-file checks, unless the
    file cannot be read at all.
    """
    src = str(path)
    try:
        env, line_problems = envfile.read_lenient(path)
    except (OSError, UnicodeDecodeError) as e:
        rep.errors.append(f"{src}: must be a readable UTF-8 env file ({e})")
        return None
    rep.errors += line_problems
    rep.warnings += [f"{src}: {w}" for w in config.unknown_env(env)]
    parsed = config.parse_env(env, source=src)
    rep.errors += parsed.problems
    s, failed = parsed.settings, parsed.failed
    err = rep.errors.append
    stem = path.stem
    if "VOXWS_GROUP" in env and "VOXWS_GROUP" not in failed and s.group != stem:
        err(config.problem(src, "VOXWS_GROUP", s.group, f"the file's name ({stem}), since voxcpm@{stem} "
                           f"reads /etc/voxcpm/{stem}.env"))
    if "VOXWS_PORT" not in failed and s.port < UNPRIVILEGED_PORT_START:
        err(config.problem(src, "VOXWS_PORT", s.port,
                           "1024 or above: the unit runs without CAP_NET_BIND_SERVICE"))
    if "VOXWS_DRAIN_TIMEOUT_S" not in failed and s.drain_timeout_s > TIMEOUT_STOP_S - STOP_MARGIN_S:
        err(config.problem(src, "VOXWS_DRAIN_TIMEOUT_S", env["VOXWS_DRAIN_TIMEOUT_S"],
                           f"at most {TIMEOUT_STOP_S - STOP_MARGIN_S} s, so that the drain ends before the "
                           f"unit's TimeoutStopSec={TIMEOUT_STOP_S}s kills the group"))
    visible = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    gpus_ok = "VOXCPM_DEVICES" not in failed
    if s.engine == "nanovllm" and "VOXWS_ENGINE" not in failed:
        if not visible:
            gpus_ok = False
            err(config.problem(src, "CUDA_VISIBLE_DEVICES", env.get("CUDA_VISIBLE_DEVICES", ""),
                               "this group's physical GPUs, e.g. 3,4 (unset, every group uses every GPU)"))
        elif len(set(visible)) != len(visible):
            gpus_ok = False
            err(config.problem(src, "CUDA_VISIBLE_DEVICES", env["CUDA_VISIBLE_DEVICES"], "distinct GPUs"))
        elif gpus_ok and max(s.devices) >= len(visible):
            err(config.problem(src, "VOXCPM_DEVICES", ",".join(map(str, s.devices)),
                               f"indices below {len(visible)}, the number of GPUs in "
                               f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}"))
        if check_model and s.model_path and (m := model_dir_problem(src, s.model_path)):
            err(m)
    if check_voices:
        errors, warnings = voices_ops.problems(src, s)
        rep.errors += errors
        rep.warnings += warnings
    if max_text_chars and "VOXCPM_MAX_MODEL_LEN" not in failed:
        need = sizing.min_max_model_len(max_text_chars)
        if s.max_model_len < need:
            err(config.problem(src, "VOXCPM_MAX_MODEL_LEN", s.max_model_len,
                               f"at least {need} to fit texts of {max_text_chars} characters "
                               "(--max-text-chars)"))
    sizing_vars = {"VOXCPM_GPU_MEMORY_UTILIZATION", "VOXCPM_MAX_NUM_SEQS", "VOXCPM_MAX_MODEL_LEN"}
    if gpu_memory_gb and not failed & sizing_vars:
        rep.warnings += memory_warnings(src, s.gpu_memory_utilization, s.max_num_seqs, s.max_model_len,
                                        gpu_memory_gb)
    gpus = [visible[d] for d in s.devices if d < len(visible)] if visible and gpus_ok else []
    # Without VOXWS_GROUP in the file the unit's Environment=VOXWS_GROUP=%i names the group.
    group = s.group if "VOXWS_GROUP" in env and "VOXWS_GROUP" not in failed else stem
    return s, gpus, group, failed


def validate(paths: list[Path], max_text_chars: int | None = 300, gpu_memory_gb: float | None = None,
             check_model: bool = True, check_voices: bool = True) -> Report:
    """Every problem in one run: each file's (bad lines, bad values, deployment rules) and the
    cross-file ones (a GPU, port or group name used twice); check_model=False when the model lives
    elsewhere, check_voices=False when the voices directory does (both look at this machine's files)."""
    rep = Report()
    files, rep.errors = env_files(paths)
    rep.files = files
    by_gpu: dict[str, Path] = {}
    by_port: dict[int, Path] = {}
    by_group: dict[str, Path] = {}
    for path in files:
        loaded = check_file(path, max_text_chars, gpu_memory_gb, check_model, rep, check_voices)
        if not loaded:
            continue
        s, gpus, group, failed = loaded
        for gpu in gpus:
            if gpu in by_gpu:
                rep.errors.append(config.problem(
                    str(path), "CUDA_VISIBLE_DEVICES", ",".join(gpus),
                    f"GPUs no other group uses; GPU {gpu} is also in {by_gpu[gpu]}"))
            by_gpu.setdefault(gpu, path)
        if "VOXWS_PORT" not in failed:
            if s.port in by_port:
                rep.errors.append(config.problem(str(path), "VOXWS_PORT", s.port,
                                                 f"a port no other group uses; {by_port[s.port]} has it too"))
            by_port.setdefault(s.port, path)
        if group in by_group:
            rep.errors.append(config.problem(
                str(path), "VOXWS_GROUP", group,
                f"a group name no other file uses; {by_group[group]} has it too"))
        by_group.setdefault(group, path)
    return rep
