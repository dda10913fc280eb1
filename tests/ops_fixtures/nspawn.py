"""A real systemd for tests: a debootstrap'ed Debian tree booted with systemd-nspawn.

Recipe and timings: shared/notes/systemd.md. The tree is built once (debootstrap, ~1 min) and cached
under .cache/voxws-ops/ (git-ignored); each test boots a copy. Python wheels for the container (our
dependencies at the host venv's versions, for CPython 3.11 = bookworm's python3) are downloaded once
and cached next to it; voxws itself is built from the working tree on every run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "voxws-ops"
SUITE = "bookworm"
INCLUDE = "python3-venv"  # bookworm's python3 is 3.11
WHEEL_TAGS = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
              "--platform", "manylinux2014_x86_64"]
PATH = "/opt/voxws/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def debian_tree() -> Path:
    """The cached Debian tree, built on first use."""
    tree = CACHE / f"debian-{SUITE}"
    stamp = tree / ".voxws-ops-tree"
    with _lock("tree"):
        if stamp.is_file() and stamp.read_text() == INCLUDE:
            return tree
        tmp = CACHE / f"debian-{SUITE}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
        p = subprocess.run(["debootstrap", f"--include={INCLUDE}", SUITE, str(tmp)], capture_output=True,
                           text=True, timeout=900)
        if p.returncode:
            raise RuntimeError(f"debootstrap {SUITE} failed ({p.returncode}): "
                               f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
        (tmp / ".voxws-ops-tree").write_text(INCLUDE)
        tmp.rename(tree)
        return tree


def _pins() -> list[str]:
    """voxws's runtime dependencies at the versions this venv has (what the unit tests ran with)."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in deps]  # type: ignore[union-attr]
    return sorted(f"{n}=={importlib.metadata.version(n)}" for n in names)


def wheels(dest: Path) -> Path:
    """dest/ with every wheel the container needs: cached dependencies + voxws built from this tree."""
    pins = _pins()
    cached = CACHE / f"wheels-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}"
    with _lock("wheels"):
        if not (cached / ".done").is_file():
            shutil.rmtree(cached, ignore_errors=True)
            p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(cached),
                                "--only-binary=:all:", *WHEEL_TAGS, *pins], capture_output=True, text=True,
                               timeout=600)
            if p.returncode:
                raise RuntimeError(f"pip download failed: {p.stderr[-3000:]}")
            (cached / ".done").write_text("\n".join(pins))
    dest.mkdir(parents=True, exist_ok=True)
    for w in cached.glob("*.whl"):
        shutil.copy(w, dest)
    # Build from a copy: a build in the working tree would leave build/ and *.egg-info behind.
    src = dest.parent / "voxws-src"
    shutil.copytree(ROOT / "voxws", src / "voxws", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", src)
    readme = ROOT / "README.md"
    (src / "README.md").write_text(readme.read_text() if readme.is_file() else "# voxws\n")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(src)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode:
        raise RuntimeError(f"building the voxws wheel failed: {p.stderr[-3000:]}")
    return dest


def _children(pid: int) -> list[int]:
    """Child PIDs from /proc (no procps needed)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


class Container:
    """A booted copy of the tree. run() executes inside (all namespaces, clean environment)."""

    def __init__(self, tree: Path, workdir: Path, binds: dict[str, str]):
        self.dir = workdir / "tree"
        subprocess.run(["cp", "-a", "--reflink=auto", str(tree), str(self.dir)], check=True, timeout=300)
        self.name = f"voxws-{uuid.uuid4().hex[:8]}"
        self.console = open(workdir / "console.log", "w")  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_SECCOMP": "0"}
        # The host runs no systemd: --register=no --keep-unit. --private-network: the groups' ports
        # live in the container's own loopback, so they never collide with anything on the host.
        cmd = ["systemd-nspawn", "-D", str(self.dir), "-M", self.name, "--register=no", "--keep-unit",
               "--private-network", "-b", "--console=pipe",
               *(f"--bind-ro={src}:{dst}" for src, dst in binds.items())]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.console,
                                     stderr=subprocess.STDOUT)
        self.leader = self._leader()
        self._wait_booted(workdir / "console.log")

    def _wait_booted(self, console: Path, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while True:
            p = self.run("systemctl is-system-running --wait", check=False, timeout=timeout)
            if p.stdout.strip() in ("running", "degraded"):
                return
            # Until PID 1 has set up its private socket: "Failed to connect to bus".
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"container did not boot: {p.stdout}{p.stderr}; see {console}")
            time.sleep(0.1)

    def _leader(self, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}; "
                                   f"see {self.console.name}")
            for pid in _children(self.proc.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
            time.sleep(0.05)
        raise TimeoutError("no systemd inside the container")

    def run(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i", f"PATH={PATH}",
                            "HOME=/root", "LANG=C.UTF-8", "sh", "-c", command],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode:
            raise AssertionError(f"in container: {command!r} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def host_in_netns(self, args: list[str], **kw: object) -> subprocess.Popen[str]:
        """A host program (e.g. this venv's python) inside the container's network namespace only."""
        return subprocess.Popen(["nsenter", "-t", str(self.leader), "-n", "--", *args], text=True, **kw)  # type: ignore[call-overload]

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.run("systemctl poweroff", check=False, timeout=30)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)  # PID 1 of the container: takes all of it along
                self.proc.kill()
                self.proc.wait(30)
        self.console.close()
        # nspawn leaves these behind on a host whose /run is not a tmpfs: ours, by name and inode.
        st = self.dir.stat()
        for leftover in (Path("/run/systemd/nspawn/propagate") / self.name,
                         Path(f"/run/systemd/nspawn/locks/inode-{st.st_dev}:{st.st_ino}")):
            with contextlib.suppress(OSError):
                leftover.rmdir() if leftover.is_dir() else leftover.unlink()
        shutil.rmtree(self.dir, ignore_errors=True)
