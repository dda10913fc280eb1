"""voxws-ops install --root / uninstall --root / status: staged installs, no running systemd needed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import free_port, serve_process
from voxws.ops.cli import app

runner = CliRunner()
ARGS = ["--gpus", "3,4,5,6", "--group-size", "2", "--base-port", "8081",
        "--model-path", "/opt/voxcpm/VoxCPM1.5", "--exec", "/opt/voxws/bin/voxws"]
needs_systemctl = pytest.mark.skipif(not shutil.which("systemctl"), reason="systemctl not installed")


def install(root: Path, *extra: str) -> tuple[int, str]:
    r = runner.invoke(app, ["install", "--root", str(root), *ARGS, *extra])
    return r.exit_code, r.output


def tree(root: Path) -> dict[str, str]:
    """Every file and link under root: path -> content or link target."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_text()
    return out


def with_exec(root: Path) -> None:
    exe = root / "opt/voxws/bin/voxws"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)


@needs_systemctl
def test_install_root_writes_units_env_files_and_enables(tmp_path: Path) -> None:
    root = tmp_path / "stage"
    with_exec(root)
    code, out = install(root)
    assert code == 0, out
    units, env = root / "etc/systemd/system", root / "etc/voxcpm"
    assert (units / "voxcpm@.service").stat().st_mode & 0o777 == 0o644
    assert (units / "voxcpm.target").is_file()
    for g in ("group0", "group1"):
        assert (env / f"{g}.env").stat().st_mode & 0o777 == 0o640
        link = units / f"voxcpm.target.wants/voxcpm@{g}.service"
        assert os.readlink(link) == "/etc/systemd/system/voxcpm@.service"
    assert os.readlink(units / "multi-user.target.wants/voxcpm.target") == "/etc/systemd/system/voxcpm.target"
    assert "u voxcpm " in (root / "etc/sysusers.d/voxcpm.conf").read_text()
    assert "systemd-sysusers creates the user at first boot" in out
    assert "verify:" not in out  # systemd-analyze verify had nothing to say
    assert "installed 2 group(s): group0, group1" in out


@needs_systemctl
def test_install_is_idempotent_and_keeps_an_admins_edit(tmp_path: Path) -> None:
    root = tmp_path / "stage"
    with_exec(root)
    assert install(root)[0] == 0
    before = tree(root)
    code, out = install(root)
    assert code == 0 and tree(root) == before
    assert out.count("unchanged ") == 5 and "wrote " not in out, out  # 2 units, 2 env files, sysusers.d
    # An admin raises the utilization by hand: a plain re-install must not undo it.
    g0 = root / "etc/voxcpm/group0.env"
    edited = g0.read_text().replace("VOXCPM_GPU_MEMORY_UTILIZATION=0.4", "VOXCPM_GPU_MEMORY_UTILIZATION=0.6")
    g0.write_text(edited)
    code, out = install(root)
    assert code == 1
    assert "-VOXCPM_GPU_MEMORY_UTILIZATION=0.6" in out and "+VOXCPM_GPU_MEMORY_UTILIZATION=0.4" in out
    assert "--force" in out and "nothing was changed" in out
    assert g0.read_text() == edited
    code, out = install(root, "--force")
    assert code == 0 and tree(root) == before


def test_install_refuses_bad_settings_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "stage"
    code, out = install(root, "--util", "0.3")
    assert code == 2 and "VOXCPM_GPU_MEMORY_UTILIZATION=0.3: must be a number from 0.4 to 0.95" in out
    assert not root.exists()
    r = runner.invoke(app, ["install", "--root", str(root)])
    assert r.exit_code == 2 and "--from" in r.output


@needs_systemctl
def test_uninstall_root_leaves_no_file_behind(tmp_path: Path) -> None:
    root = tmp_path / "stage"
    assert install(root)[0] == 0  # no binary in the stage: a warning, still staged
    assert tree(root)
    r = runner.invoke(app, ["uninstall", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert list(root.rglob("*")) == []
    r = runner.invoke(app, ["uninstall", "--root", str(root)])
    assert r.exit_code == 0 and "not installed" in r.output


@needs_systemctl
def test_install_from_a_render_directory(tmp_path: Path) -> None:
    out_dir, root = tmp_path / "deploy", tmp_path / "stage"
    assert runner.invoke(app, ["render", *ARGS, "--out", str(out_dir)]).exit_code == 0
    r = runner.invoke(app, ["install", "--root", str(root), "--from", str(out_dir)])
    assert r.exit_code == 0, r.output
    assert (root / "etc/voxcpm/group1.env").read_text() == (out_dir / "env/group1.env").read_text()
    r = runner.invoke(app, ["install", "--root", str(root), "--from", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "must be a directory written by `voxws-ops render`" in r.output


@needs_systemctl
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-sysusers"),
                    reason="needs root (chown to the service group) and systemd-sysusers")
def test_install_into_an_os_tree_creates_the_user(tmp_path: Path) -> None:
    root = tmp_path / "os"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    with_exec(root)
    code, out = install(root)
    assert code == 0, out
    line = next(x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("voxcpm:"))
    gid = int(line.split(":")[3])
    st = (root / "etc/voxcpm/group0.env").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    assert install(root)[1].count("user voxcpm: exists") == 1
    r = runner.invoke(app, ["uninstall", "--root", str(root)])
    assert r.exit_code == 0, r.output
    left = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert not any(x.startswith(("etc/voxcpm", "etc/systemd", "etc/sysusers.d")) for x in left), left


@needs_systemctl
def test_status_reports_readyz(tmp_path: Path) -> None:
    root, port = tmp_path / "stage", free_port()
    r = runner.invoke(app, ["install", "--root", str(root), "--gpus", "0", "--group-size", "1", "--base-port",
                            str(port), "--engine", "synthetic", "--exec", "/opt/voxws/bin/voxws"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["status", "--root", str(root), "--json"])
    assert r.exit_code == 3 and "unreachable" in r.output
    with serve_process(port=port):
        r = runner.invoke(app, ["status", "--root", str(root), "--json"])
        assert r.exit_code == 0 and '"readyz": "200 ready"' in r.output, r.output
    r = runner.invoke(app, ["status", "--root", str(tmp_path / "empty")])
    assert r.exit_code == 3 and "no groups installed" in r.output
