"""install / uninstall / status: rendered files onto a host (or a staging root) and back off again.

Live (root /) with systemd running: the units are reloaded and enabled for real. With --root, or
where systemd is not running (containers, image builds), everything that works on files happens
(systemctl --root enable, systemd-sysusers --root) and we say what is left for boot time.
"""

from __future__ import annotations

import contextlib
import difflib
import grp
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voxws.ops import envfile
from voxws.ops.plan import unit_path_problem
from voxws.ops.render import TARGET, UNIT, atomic_write
from voxws.ops.validate import validate

Say = Callable[[str], None]
SYSUSERS_MARK = "# voxws-ops: service user"
STATE_DIRS = ("var/lib/voxcpm", "var/cache/voxcpm")


class InstallError(RuntimeError):
    pass


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def live(self) -> bool:
        return self.root.resolve() == Path("/")

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def env_dir(self) -> Path:
        return self.root / "etc/voxcpm"

    def sysusers(self, user: str) -> Path:
        return self.root / f"etc/sysusers.d/{user}.conf"

    def at(self, path: str) -> Path:
        """A path of the target system (e.g. ExecStart=) as seen from here."""
        return self.root / path.lstrip("/")


def systemd_running() -> bool:
    """What sd_booted() checks: PID 1 is systemd."""
    return Path("/run/systemd/system").is_dir()


def run(cmd: list[str], say: Say | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    if say:
        say("$ " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and p.returncode:
        raise InstallError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p


def systemctl(layout: Layout, *args: str) -> list[str]:
    return ["systemctl", *([] if layout.live else [f"--root={layout.root}"]), *args]


def read_rendered(out: Path) -> dict[str, str]:
    """Files of a `voxws-ops render --out OUT` directory, keyed like render()."""
    files = {f"systemd/{n}": (out / "systemd" / n).read_text(encoding="utf-8") for n in (UNIT, TARGET)
             if (out / "systemd" / n).is_file()}
    if len(files) != 2:
        raise InstallError(f"--from={out}: must be a directory written by `voxws-ops render` "
                           f"(systemd/{UNIT} and systemd/{TARGET} missing)")
    envs = sorted((out / "env").glob("*.env"))
    if not envs:
        raise InstallError(f"--from={out}: must hold env/*.env files (one per GPU group); found none")
    files.update({f"env/{p.name}": p.read_text(encoding="utf-8") for p in envs})
    return files


def unit_setting(unit: str, key: str) -> str | None:
    m = re.search(rf"^{key}=(.*)$", unit, re.M)
    return m.group(1).strip() if m else None


def passwd_has(layout: Layout, name: str, db: str = "passwd") -> bool:
    f = layout.root / "etc" / db
    return f.is_file() and any(line.split(":", 1)[0] == name for line in f.read_text().splitlines())


def group_id(layout: Layout, name: str) -> int | None:
    f = layout.root / "etc/group"
    if layout.live:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None
    for line in f.read_text().splitlines() if f.is_file() else []:
        parts = line.split(":")
        if len(parts) > 2 and parts[0] == name:
            return int(parts[2])
    return None


def ensure_user(layout: Layout, user: str, say: Say) -> None:
    if passwd_has(layout, user):
        say(f"user {user}: exists")
        return
    conf = layout.sysusers(user)
    _put(conf, f"{SYSUSERS_MARK} (systemd-sysusers creates it at boot or on install)\n"
               f'u {user} - "voxws text-to-speech" /var/lib/voxcpm /usr/sbin/nologin\n', 0o644, -1, say)
    if not (layout.root / "etc/passwd").is_file():
        say(f"user {user}: {layout.root} has no etc/passwd; systemd-sysusers creates the user at first boot")
    elif shutil.which("systemd-sysusers"):
        run(["systemd-sysusers", *([] if layout.live else [f"--root={layout.root}"]), str(conf)], say)
    else:
        run(["useradd", *([] if layout.live else ["--root", str(layout.root)]), "--system", "--user-group",
             "--home-dir", "/var/lib/voxcpm", "--no-create-home", "--shell", "/usr/sbin/nologin", user], say)


def verify_units(layout: Layout, instances: list[str], say: Say) -> list[str]:
    """systemd-analyze verify prints nothing for good units; exit status alone misses bad keys."""
    if not shutil.which("systemd-analyze"):
        return ["systemd-analyze not found: units not verified"]
    # --recursive-errors=no: check our units, not whether the root holds sysinit.target & co.
    p = run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", f"--root={layout.root}",
             *instances, TARGET], say, check=False)
    return [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]


def install(files: dict[str, str], root: Path = Path("/"), force: bool = False, say: Say = print) -> int:
    layout = Layout(root)
    unit = files[f"systemd/{UNIT}"]
    user = unit_setting(unit, "User") or "voxcpm"
    exec_path = (unit_setting(unit, "ExecStart") or "").split()[0]
    envs = {Path(rel).name: text for rel, text in files.items() if rel.startswith("env/")}
    groups = [Path(n).stem for n in envs]

    # 1. Refuse before touching anything: the env files break a rule, or the binary is missing.
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in envs.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        rep = validate([Path(tmp)], max_text_chars=None, check_model=layout.live)
    for w in rep.warnings:
        say("warning: " + w.replace(tmp, str(layout.env_dir)))
    errors = [e.replace(tmp, str(layout.env_dir)) for e in rep.errors]
    if where := unit_path_problem("ExecStart", exec_path):
        errors.append(where)
    if errors:
        raise InstallError("\n".join(errors))
    exe = layout.at(exec_path)
    exe_missing = not (exe.is_file() and os.access(exe, os.X_OK))
    if exe_missing:
        msg = (f"ExecStart={exec_path}: must be an executable voxws (install voxws-server into a venv as the "
               "README says; or --exec)")
        if layout.live:
            raise InstallError(msg)
        say(f"warning: {msg}; not found under {layout.root} (yet)")

    # 2. An env file an admin edited is not overwritten without --force; show what would change.
    conflicts = []
    for name, text in envs.items():
        dest = layout.env_dir / name
        if dest.is_file() and (old := dest.read_text(encoding="utf-8")) != text:
            diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                str(dest), f"{dest} (new)"))
            say(diff.rstrip("\n"))
            conflicts.append(str(dest))
    if conflicts and not force:
        raise InstallError("these env files differ from the new rendering (edited by an admin?) and were not "
                           "overwritten; nothing was changed. Keep them, or pass --force to replace them:\n  "
                           + "\n  ".join(conflicts))

    # 3. User, units, env files (0640 root:<user group>: the service user may read them, others not).
    ensure_user(layout, user, say)
    for name in (UNIT, TARGET):
        _put(layout.unit_dir / name, files[f"systemd/{name}"], 0o644, -1, say)
    gid = group_id(layout, user)
    if gid is None:
        say(f"group {user} not found under {layout.root}: env files stay root:root")
    for name, text in envs.items():
        _put(layout.env_dir / name, text, 0o640, -1 if gid is None else gid, say)
    stale = sorted(p.name for p in layout.env_dir.glob("*.env") if p.name not in envs)
    if stale:
        say(f"note: left in place (not in this rendering): {', '.join(stale)}; "
            "`voxws-ops uninstall` removes every group")

    # 4. Verify, reload, enable.
    instances = [f"voxcpm@{g}.service" for g in groups]
    problems = [line for line in verify_units(layout, instances, say)
                if not (exe_missing and f"Command {exec_path} is not executable" in line)]  # said above
    for line in problems:
        say(f"verify: {line}")
    if problems and layout.live:
        raise InstallError("systemd-analyze verify found problems in the units (above)")
    if layout.live and systemd_running():
        run(["systemctl", "daemon-reload"], say)
    elif layout.live:
        say("systemd is not running here (no /run/systemd/system): skipped `systemctl daemon-reload`; "
            "the units load at the next boot")
    run(systemctl(layout, "enable", TARGET, *instances), say)
    say(f"installed {len(groups)} group(s): {', '.join(groups)}; start them with `systemctl start {TARGET}`")
    return 0


def _put(dest: Path, text: str, mode: int, gid: int, say: Say) -> None:
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        st = dest.stat()
        if st.st_mode & 0o7777 == mode and (gid == -1 or st.st_gid == gid):
            say(f"unchanged {dest}")
            return
    atomic_write(dest, text, mode, 0 if gid != -1 else -1, gid)
    say(f"wrote {dest}")


def installed_groups(layout: Layout) -> list[str]:
    names = {p.stem for p in layout.env_dir.glob("*.env")}
    wants = layout.unit_dir / f"{TARGET}.wants"
    names |= {p.name[len("voxcpm@"):-len(".service")] for p in wants.glob("voxcpm@*.service")}
    return sorted(names)


def uninstall(root: Path = Path("/"), purge: bool = False, user: str | None = None, say: Say = print) -> int:
    layout = Layout(root)
    unit_file = layout.unit_dir / UNIT
    user = user or (unit_setting(unit_file.read_text(), "User") if unit_file.is_file() else None) or "voxcpm"
    instances = [f"voxcpm@{g}.service" for g in installed_groups(layout)]
    if unit_file.exists() or (layout.unit_dir / TARGET).exists():
        # --now: stop waits for each group's drain (stopping the target alone would not).
        now = ["--now"] if layout.live and systemd_running() else []
        p = run(systemctl(layout, "disable", *now, TARGET, *instances), say, check=False)
        if p.returncode:
            say(f"warning: systemctl disable: {(p.stderr or p.stdout).strip()}")
    removed = [p for p in (unit_file, layout.unit_dir / TARGET, *layout.env_dir.glob("*.env")) if p.exists()]
    conf = layout.sysusers(user)
    if conf.is_file() and conf.read_text().startswith(SYSUSERS_MARK):
        removed.append(conf)
    for p in removed:
        p.unlink()
        say(f"removed {p}")
    if purge:
        if passwd_has(layout, user):
            run(["userdel", *([] if layout.live else ["--root", str(layout.root)]), user], say, check=False)
        for d in STATE_DIRS:
            if layout.at(d).exists():
                shutil.rmtree(layout.at(d))
                say(f"removed {layout.at(d)}")
    if layout.live and systemd_running():
        run(["systemctl", "daemon-reload"], say)
    # Directories we (or systemctl enable) created and that are empty now.
    for d in (layout.env_dir, layout.unit_dir / f"{TARGET}.wants",
              layout.unit_dir / "multi-user.target.wants"):
        _rmdir_empty(d)
    if not layout.live:  # a staging root: leave no empty scaffolding either
        for d in (layout.unit_dir, layout.unit_dir.parent, conf.parent, layout.root / "etc"):
            _rmdir_empty(d)
    left = [p for p in (layout.unit_dir / f"{UNIT}.d",) if p.exists()]
    for p in left:
        say(f"note: left in place (an admin's drop-ins): {p}")
    if not removed:
        say("nothing to remove: voxws-ops is not installed here")
    return 0


def _rmdir_empty(d: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or not there
        d.rmdir()


def readyz(host: str, port: int, timeout: float = 2.0) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "*") else "::1" if host == "::" else host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return f"{r.status} ready"
    except urllib.error.HTTPError as e:
        return f"{e.code} not ready"
    except OSError as e:
        return f"unreachable ({getattr(e, 'reason', e)})"


def status(root: Path = Path("/")) -> list[dict[str, str]]:
    """Per group: unit state (from systemd, when it runs) and the server's /readyz."""
    layout = Layout(root)
    rows = []
    for g in installed_groups(layout):
        env_path = layout.env_dir / f"{g}.env"
        try:
            env = envfile.read(env_path)
        except (OSError, envfile.EnvFileError):
            env = {}
        row = {"group": g, "unit": f"voxcpm@{g}.service", "port": env.get("VOXWS_PORT", "8081"),
               "gpus": env.get("CUDA_VISIBLE_DEVICES", "")}
        if layout.live and systemd_running():
            p = run(["systemctl", "show", row["unit"],
                     "--property=ActiveState,SubState,StatusText,NRestarts"], check=False)
            props = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
            row["state"] = f"{props.get('ActiveState', '?')} ({props.get('SubState', '?')})"
            row["status"] = props.get("StatusText", "")
            row["restarts"] = props.get("NRestarts", "")
        else:
            row["state"] = "unknown (systemd not running here)"
        try:
            row["readyz"] = readyz(env.get("VOXWS_HOST", "127.0.0.1"), int(row["port"]))
        except ValueError:
            row["readyz"] = "bad VOXWS_PORT"
        rows.append(row)
    return rows


def status_json(rows: list[dict[str, str]]) -> str:
    return json.dumps(rows, indent=2)
