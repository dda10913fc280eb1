"""voxws-ops in the first hour (issue 17): validate names every problem of a set of env files in one
run; plan/render/install refuse what the unit could never run; status says why it has nothing to show."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_ops_validate import group_env
from voxws.ops.cli import app
from voxws.ops.validate import validate

runner = CliRunner()
ARGS = ["--gpus", "3,4", "--group-size", "2", "--base-port", "8081", "--model-path", "/opt/voxcpm/VoxCPM1.5"]


def test_validate_reports_every_problem_of_every_file_in_one_run(tmp_path: Path) -> None:
    g0 = group_env(tmp_path, "group0", "3,4", 8081, VOXWS_HOST="127.0.0.1  # loopback", VOXWS_PROT="9000")
    g0.write_text(g0.read_text() + "this line has no equals sign\n")
    group_env(tmp_path, "group1", "4,5", 8081, VOXCPM_GPU_MEMORY_UTILIZATION="0.3")  # GPU 4 and 8081 twice
    group_env(tmp_path, "group2", "6,7", 8083, VOXWS_PORT="abc", VOXCPM_MAX_MODEL_LEN="256")
    rep = validate([tmp_path / "etc", tmp_path / "missing"], max_text_chars=300)
    e = "\n".join(rep.errors)
    expected = [
        f"{tmp_path}/missing: must be an env file or a directory of them",  # a path that does not exist
        "group0.env:13: 'this line has no equals sign': must be KEY=VALUE",  # a bad line ...
        "group0.env: VOXWS_HOST=127.0.0.1  # loopback: must be a host name or IP address",  # ... a bad value
        "group1.env: VOXCPM_GPU_MEMORY_UTILIZATION=0.3: must be a number from 0.4 to 0.95",
        "group1.env: CUDA_VISIBLE_DEVICES=4,5: must be GPUs no other group uses; GPU 4 is also in",  # cross-file
        "group1.env: VOXWS_PORT=8081: must be a port no other group uses",  # although group0 had errors
        "group2.env: VOXWS_PORT=abc: must be an integer from 1 to 65535",
        "group2.env: VOXCPM_MAX_MODEL_LEN=256: must be at least 1024",  # a rule beyond the server's
    ]
    for needle in expected:
        assert needle in e, (needle, e)
    assert len(rep.errors) == len(expected), e
    assert any("VOXWS_PROT is not a voxws setting (did you mean VOXWS_PORT?)" in w for w in rep.warnings)
    r = runner.invoke(app, ["validate", str(tmp_path / "etc")])
    assert r.exit_code == 1 and r.output.count("error: ") == len(expected) - 1, r.output


def test_a_refused_value_stands_for_nothing_in_the_cross_file_checks(tmp_path: Path) -> None:
    group_env(tmp_path, "group0", "3,4", 8081, VOXCPM_DEVICES="0,0")
    group_env(tmp_path, "group1", "3,4", 8082, VOXWS_ENGINE="foo")
    e = "\n".join(validate([tmp_path / "etc"], max_text_chars=300).errors)
    assert "group0.env: VOXCPM_DEVICES=0,0: must be comma-separated distinct GPU indices" in e
    assert "group1.env: VOXWS_ENGINE=foo: must be one of" in e
    assert "VOXCPM_MODEL_PATH" not in e and "is also in" not in e, e


@pytest.mark.parametrize("exe", ["/tmp/venv/bin/voxws", "/var/tmp/voxws/bin/voxws", "/tmp"])
@pytest.mark.parametrize("command", ["plan", "render", "install"])
def test_an_exec_under_tmp_is_refused(tmp_path: Path, command: str, exe: str) -> None:
    extra = {"plan": [], "render": ["--out", str(tmp_path / "out")], "install": ["--root", str(tmp_path / "root")]}
    r = runner.invoke(app, [command, *ARGS, "--exec", exe, *extra[command]])
    assert r.exit_code == 2, r.output
    assert f"--exec={exe}: must be outside /tmp and /var/tmp: the unit's PrivateTmp=yes" in r.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "root").exists()


@pytest.mark.skipif(not shutil.which("systemctl"), reason="systemctl not installed")
def test_install_from_a_rendering_with_an_exec_under_tmp_is_refused(tmp_path: Path) -> None:
    r = runner.invoke(app, ["render", *ARGS, "--exec", "/opt/voxws/bin/voxws", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    unit = tmp_path / "out/systemd/voxcpm@.service"
    unit.write_text(unit.read_text().replace("/opt/voxws/bin/voxws", "/tmp/voxws/bin/voxws"))
    r = runner.invoke(app, ["install", "--from", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    assert r.exit_code == 1 and "ExecStart=/tmp/voxws/bin/voxws: must be outside /tmp and /var/tmp" in r.output
    assert not (tmp_path / "root").exists()


def test_a_model_under_tmp_is_refused_by_plan() -> None:
    args = [a if a != "/opt/voxcpm/VoxCPM1.5" else "/var/tmp/VoxCPM1.5" for a in ARGS]
    r = runner.invoke(app, ["plan", *args])
    assert r.exit_code == 2 and "--model-path=/var/tmp/VoxCPM1.5: must be outside /tmp and /var/tmp" in r.output


def test_status_without_groups_says_so_without_an_empty_table(tmp_path: Path) -> None:
    for extra in ([], ["--json"]):
        r = runner.invoke(app, ["status", "--root", str(tmp_path), *extra])
        assert r.exit_code == 3
        assert r.output.strip() == f"error: no groups installed (no {tmp_path}/etc/voxcpm/*.env): " \
                                   "`voxws-ops install` first"
