"""From the operator's intent (GPUs, group size, base port, model) to groups and their settings.

Every value that ends up in an env file is checked here with the server's own rules
(voxws.config), so `render` cannot write a file that `voxws serve` would refuse.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from voxws import config, sizing

DEFAULT_EXEC = "/opt/voxws/bin/voxws"
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# ProtectHome=yes in the unit makes these invisible to the service.
HIDDEN_PREFIXES = ("/home", "/root", "/run/user")
# PrivateTmp=yes gives the service its own empty /tmp and /var/tmp.
PRIVATE_TMP_PREFIXES = ("/tmp", "/var/tmp")
UNPRIVILEGED_PORT_START = 1024  # the unit has no CAP_NET_BIND_SERVICE


class PlanError(config.ConfigError):
    """Bad options; str() lists one line per problem, each naming the option, value and rule."""


@dataclass(frozen=True)
class Options:
    gpus: tuple[int, ...]
    group_size: int = 2
    base_port: int = 8081
    model_path: str | None = None
    util: float = 0.4
    max_num_seqs: int = 128
    max_text_chars: int = 300
    exec_path: str = DEFAULT_EXEC
    user: str = "voxcpm"
    engine: str = "nanovllm"
    host: str = "127.0.0.1"
    prefix: str = "group"


@dataclass(frozen=True)
class Group:
    name: str
    gpus: tuple[int, ...]  # physical (nvidia-smi) indices
    port: int


def parse_gpus(raw: str, option: str = "--gpus") -> tuple[int, ...]:
    parts = [p.strip() for p in raw.split(",")]
    if not raw.strip() or not all(p.isdigit() for p in parts):
        raise PlanError([f"{option}={raw}: must be comma-separated GPU indices as nvidia-smi shows them, "
                         "e.g. 3,4,5,6"])
    gpus = tuple(int(p) for p in parts)
    if len(set(gpus)) != len(gpus):
        raise PlanError([f"{option}={raw}: must not name a GPU twice"])
    return gpus


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    path = "/" + path.strip("/")
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def hidden_path(path: str) -> bool:
    return _under(path, HIDDEN_PREFIXES)


def private_tmp_path(path: str) -> bool:
    return _under(path, PRIVATE_TMP_PREFIXES)


def unit_path_problem(option: str, path: str) -> str | None:
    """A path the unit cannot see: ProtectHome=yes hides /home, /root, /run/user; PrivateTmp=yes /tmp."""
    if hidden_path(path):
        return (f"{option}={path}: must be outside /home, /root and /run/user, which the unit's "
                "ProtectHome=yes hides (install voxws into a venv such as /opt/voxws)")
    if private_tmp_path(path):
        return (f"{option}={path}: must be outside /tmp and /var/tmp: the unit's PrivateTmp=yes gives the "
                "service an empty /tmp of its own, so it could never start (install voxws into a venv such "
                "as /opt/voxws)")
    return None


def default_exec() -> str:
    """The voxws next to this voxws-ops (same venv), unless ProtectHome would hide it."""
    here = Path(sys.prefix) / "bin" / "voxws"
    return str(here) if here.exists() and not unit_path_problem("--exec", str(here)) else DEFAULT_EXEC


def max_model_len(opts: Options) -> int:
    return sizing.min_max_model_len(opts.max_text_chars)


def check(opts: Options) -> list[Group]:
    """The groups of this plan, or PlanError naming every bad option at once."""
    p: list[str] = []
    if opts.group_size < 1:
        p.append(f"--group-size={opts.group_size}: must be 1 or more GPUs per group")
    elif len(opts.gpus) % opts.group_size:
        p.append(f"--gpus={','.join(map(str, opts.gpus))}: must hold a multiple of --group-size="
                 f"{opts.group_size} GPUs ({len(opts.gpus)} given)")
    n_groups = len(opts.gpus) // opts.group_size if opts.group_size >= 1 else 0
    last_port = opts.base_port + max(n_groups - 1, 0)
    if opts.base_port < UNPRIVILEGED_PORT_START or last_port > 65535:
        p.append(f"--base-port={opts.base_port}: must leave every group a port from 1024 to 65535 "
                 "(the unit runs without CAP_NET_BIND_SERVICE)")
    if not USER_RE.match(opts.user):
        p.append(f"--user={opts.user}: must be a system user name ([a-z_][a-z0-9_-]*, 32 characters at most)")
    if not config.GROUP_RE.match(opts.prefix + "0"):
        p.append(f"--prefix={opts.prefix}: must make group names of [A-Za-z0-9_.-]")
    if not opts.exec_path.startswith("/") or any(c.isspace() for c in opts.exec_path):
        p.append(f"--exec={opts.exec_path}: must be an absolute path without spaces")
    elif problem := unit_path_problem("--exec", opts.exec_path):
        p.append(problem)
    if opts.engine == "nanovllm" and not opts.model_path:
        p.append("--model-path: must be given for the nanovllm engine (a VoxCPM 1.5 model directory)")
    if opts.model_path and (not opts.model_path.startswith("/") or hidden_path(opts.model_path)):
        p.append(f"--model-path={opts.model_path}: must be an absolute path outside /home, /root and "
                 "/run/user (ProtectHome=yes hides those from the service)")
    elif opts.model_path and private_tmp_path(opts.model_path):
        p.append(f"--model-path={opts.model_path}: must be outside /tmp and /var/tmp (the unit's PrivateTmp=yes "
                 "gives the service an empty /tmp of its own)")
    if not 1 <= opts.max_text_chars <= 100_000:
        p.append(f"--max-text-chars={opts.max_text_chars}: must be an integer from 1 to 100000")
    if p:
        raise PlanError(p)
    groups = [Group(f"{opts.prefix}{i}", opts.gpus[i * opts.group_size:(i + 1) * opts.group_size],
                    opts.base_port + i) for i in range(n_groups)]
    # The server's own rules, on exactly what we would write.
    for g in groups:
        try:
            config.load(dict((k, v) for k, v, _ in env_entries(g, opts)), source=f"{g.name}.env")
        except config.ConfigError as e:
            p += [x for x in e.problems if x not in p]
    if p:
        raise PlanError(p)
    return groups


def env_entries(group: Group, opts: Options) -> list[tuple[str, str, str]]:
    """(variable, value, comment) for one group's env file, in file order."""
    n = len(group.gpus)
    e: list[tuple[str, str, str]] = [
        ("CUDA_VISIBLE_DEVICES", ",".join(map(str, group.gpus)),
         "This group's physical GPUs as nvidia-smi counts them (the unit sets CUDA_DEVICE_ORDER=PCI_BUS_ID)"),
        ("VOXCPM_DEVICES", ",".join(map(str, range(n))),
         "One engine worker per GPU, numbered 0..n-1 inside CUDA_VISIBLE_DEVICES"),
    ]
    if opts.model_path:
        e.append(("VOXCPM_MODEL_PATH", opts.model_path,
                  "Model directory: config.json, *.safetensors, audiovae.pth, tokenizer files"))
    e += [
        ("VOXCPM_GPU_MEMORY_UTILIZATION", f"{opts.util:g}",
         "Fraction of each card the engine may take (weights + KV cache), from 0.4 to 0.95"),
        ("VOXCPM_MAX_NUM_SEQS", str(opts.max_num_seqs),
         "Sequences per engine step on each GPU: streams served at once per GPU before requests queue"),
        ("VOXCPM_MAX_MODEL_LEN", str(max_model_len(opts)),
         f"Positions per sequence (text tokens + audio steps), a multiple of 256: fits texts of "
         f"{opts.max_text_chars} characters"),
        ("VOXWS_GROUP", group.name, "Group name: the %i of voxcpm@%i, shown in logs, metrics and `ready`"),
        ("VOXWS_HOST", opts.host, "Listen address (0.0.0.0 to serve other hosts, e.g. behind nginx)"),
        ("VOXWS_PORT", str(group.port), "WebSocket and HTTP port of this group"),
        ("VOXWS_ENGINE", opts.engine, "Engine backend: nanovllm (GPU) or synthetic (CPU stand-in for tests)"),
    ]
    return e


def env_header(group: Group) -> list[str]:
    return [
        f"voxws GPU group {group.name}: the environment of voxcpm@{group.name}.service",
        "(EnvironmentFile=/etc/voxcpm/%i.env). Written by voxws-ops; after an edit run",
        f"`voxws-ops validate /etc/voxcpm`, then `systemctl restart voxcpm@{group.name}`.",
        "Every setting: docs/deploy.md. Values here override the unit's Environment= lines.",
    ]
