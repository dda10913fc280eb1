"""Plan -> file contents: the unit template, the target and one env file per group."""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path
from string import Template

from voxws.ops import envfile
from voxws.ops.plan import Group, Options, check, env_entries, env_header

UNIT = "voxcpm@.service"
TARGET = "voxcpm.target"
# Unit timings (notes/systemd.md). validate.py checks VOXWS_DRAIN_TIMEOUT_S against TIMEOUT_STOP_S.
TIMEOUT_START = "20min"  # model load + warm-up + CUDA graph capture
TIMEOUT_STOP_S = 90  # covers the default 60 s drain plus closing sockets and stopping the engine
STOP_MARGIN_S = 10
WATCHDOG = "30s"
RESTART_SEC = "10s"


def template(name: str) -> str:
    return resources.files("voxws.ops").joinpath("templates").joinpath(name).read_text(encoding="utf-8")


def unit_text(opts: Options) -> str:
    return Template(template(UNIT)).substitute(
        exec_path=opts.exec_path, user=opts.user, timeout_start=TIMEOUT_START,
        timeout_stop=f"{TIMEOUT_STOP_S}s", watchdog=WATCHDOG, restart_sec=RESTART_SEC)


def env_text(group: Group, opts: Options) -> str:
    return envfile.render(env_header(group), env_entries(group, opts))


def render(opts: Options) -> dict[str, str]:
    """{relative path: content}: systemd/voxcpm@.service, systemd/voxcpm.target, env/<group>.env."""
    groups = check(opts)
    files = {f"systemd/{UNIT}": unit_text(opts), f"systemd/{TARGET}": template(TARGET)}
    for g in groups:
        files[f"env/{g.name}.env"] = env_text(g, opts)
    return files


def atomic_write(path: Path, text: str, mode: int = 0o644, uid: int = -1, gid: int = -1) -> None:
    """Write via a temp file in the same directory + rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(files: dict[str, str], out: Path) -> list[Path]:
    written = []
    for rel, text in files.items():
        p = out / rel
        atomic_write(p, text)
        written.append(p)
    return written
