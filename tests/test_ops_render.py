"""voxws-ops plan / render: golden files, the settings written, refusals, and systemd's own checks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxws import config, sizing
from voxws.ops import envfile
from voxws.ops.cli import app
from voxws.ops.plan import Options, PlanError, check
from voxws.ops.render import render
from voxws.ops.validate import validate

ROOT = Path(__file__).resolve().parent.parent
# The report's layout; ops/ in the repo is exactly this rendering.
REPORT_ARGS = ["--gpus", "3,4,5,6", "--group-size", "2", "--base-port", "8081",
               "--model-path", "/opt/voxcpm/VoxCPM1.5", "--exec", "/opt/voxws/bin/voxws"]
REPORT = Options(gpus=(3, 4, 5, 6), group_size=2, base_port=8081, model_path="/opt/voxcpm/VoxCPM1.5",
                 exec_path="/opt/voxws/bin/voxws")
runner = CliRunner()


def test_repo_ops_files_are_the_rendering_of_the_report_layout(tmp_path: Path) -> None:
    r = runner.invoke(app, ["render", *REPORT_ARGS, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rendered = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert rendered == ["env/group0.env", "env/group1.env", "systemd/voxcpm.target",
                        "systemd/voxcpm@.service"]
    for rel in rendered:
        assert (ROOT / "ops" / rel).read_text() == (tmp_path / rel).read_text(), (
            f"ops/{rel} drifted from `voxws-ops render`; regenerate with: "
            f"voxws-ops render {' '.join(REPORT_ARGS)} --out ops")


def test_repo_ops_env_files_validate() -> None:
    rep = validate([ROOT / "ops/env"], max_text_chars=300, gpu_memory_gb=80, check_model=False)
    assert rep.ok and not rep.warnings, rep.errors + rep.warnings


def test_env_files_hold_the_groups_settings() -> None:
    files = render(REPORT)
    g0 = envfile.parse(files["env/group0.env"])
    g1 = envfile.parse(files["env/group1.env"])
    assert g0["CUDA_VISIBLE_DEVICES"] == "3,4" and g1["CUDA_VISIBLE_DEVICES"] == "5,6"
    assert g0["VOXCPM_DEVICES"] == g1["VOXCPM_DEVICES"] == "0,1"
    assert (g0["VOXWS_PORT"], g1["VOXWS_PORT"]) == ("8081", "8082")
    assert (g0["VOXWS_GROUP"], g1["VOXWS_GROUP"]) == ("group0", "group1")
    assert g0["VOXWS_ENGINE"] == "nanovllm"
    assert g0["VOXCPM_MODEL_PATH"] == "/opt/voxcpm/VoxCPM1.5"
    assert g0["VOXCPM_GPU_MEMORY_UTILIZATION"] == "0.4" and g0["VOXCPM_MAX_NUM_SEQS"] == "128"
    assert int(g0["VOXCPM_MAX_MODEL_LEN"]) == sizing.min_max_model_len(300) == 1024
    # Every variable line has a comment line above it saying what it does.
    lines = files["env/group0.env"].splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), line
    # The server would start with exactly these files (its own rules, voxws.config).
    for env in (g0, g1):
        s = config.load(env)
        assert s.devices == (0, 1)


def test_max_text_chars_sizes_max_model_len() -> None:
    for chars, want in ((68, 256), (300, 1024), (313, 1024)):
        env = envfile.parse(render(Options(gpus=(0,), group_size=1, engine="synthetic",
                                           max_text_chars=chars))["env/group0.env"])
        assert int(env["VOXCPM_MAX_MODEL_LEN"]) == want


def test_unit_carries_the_contract() -> None:
    unit = render(REPORT)["systemd/voxcpm@.service"]
    for line in ("Type=notify", "NotifyAccess=main", "ExecStart=/opt/voxws/bin/voxws serve",
                 "EnvironmentFile=/etc/voxcpm/%i.env", "Restart=on-failure", "WatchdogSec=30s",
                 "TimeoutStartSec=20min", "TimeoutStopSec=90s", "KillMode=mixed", "StartLimitBurst=5",
                 "DevicePolicy=closed", "DeviceAllow=char-nvidia* rw", "User=voxcpm", "PartOf=voxcpm.target",
                 "WantedBy=voxcpm.target", "ProtectSystem=strict", "CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        assert line in unit.splitlines() or f"Environment={line}" in unit.splitlines(), line
    # The known traps (notes/systemd.md): these hide the GPUs or break the JIT.
    settings = [line for line in unit.splitlines() if not line.startswith("#")]
    for bad in ("PrivateDevices=yes", "MemoryDenyWriteExecute=yes", "ProcSubset=pid", "PrivateUsers=yes"):
        assert bad not in settings
    assert "char-nvidia-frontend" not in unit
    # The server's default drain fits inside the stop timeout.
    assert config.Settings().drain_timeout_s < 90


@pytest.mark.parametrize(("opts", "needle"), [
    (dict(gpus=(3, 4, 5)), "--gpus=3,4,5: must hold a multiple of --group-size=2"),
    (dict(gpus=(3, 4), group_size=0), "--group-size=0"),
    (dict(gpus=(3, 4), base_port=80), "--base-port=80: must leave every group a port from 1024"),
    (dict(gpus=(3, 4, 5, 6), base_port=65535), "--base-port=65535"),
    (dict(gpus=(3, 4), exec_path="/root/venv/bin/voxws"), "ProtectHome=yes hides"),
    (dict(gpus=(3, 4), exec_path="voxws"), "--exec=voxws: must be an absolute path"),
    (dict(gpus=(3, 4), model_path=None), "--model-path: must be given for the nanovllm engine"),
    (dict(gpus=(3, 4), model_path="/home/me/VoxCPM1.5"), "--model-path=/home/me/VoxCPM1.5"),
    (dict(gpus=(3, 4), user="Bad User"), "--user=Bad User"),
    (dict(gpus=(3, 4), util=0.3), "VOXCPM_GPU_MEMORY_UTILIZATION=0.3: must be a number from 0.4 to 0.95"),
    (dict(gpus=(3, 4), max_num_seqs=0), "VOXCPM_MAX_NUM_SEQS=0: must be an integer from 1 to 512"),
    (dict(gpus=(3, 4), engine="tensorrt"), "VOXWS_ENGINE=tensorrt: must be one of"),
])
def test_render_refuses_what_cannot_work(opts: dict, needle: str) -> None:
    base = {"model_path": "/opt/voxcpm/VoxCPM1.5", "exec_path": "/opt/voxws/bin/voxws"}
    with pytest.raises(PlanError) as e:
        check(Options(**{**base, **opts}))
    assert needle in str(e.value)


def test_cli_plan_and_refusals(tmp_path: Path) -> None:
    r = runner.invoke(app, ["plan", *REPORT_ARGS])
    assert r.exit_code == 0, r.output
    for text in ("group0", "3,4", "8082", "VOXCPM_MAX_MODEL_LEN=1024"):
        assert text in r.output
    r = runner.invoke(app, ["render", "--gpus", "3,3", "--out", str(tmp_path), "--engine", "synthetic"])
    assert r.exit_code == 2 and "--gpus=3,3: must not name a GPU twice" in r.output
    assert not any(tmp_path.iterdir())
    for cmd in ("plan", "render", "validate", "recommend", "install", "uninstall", "status", "render-nginx"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Example:" in r.output, cmd


def test_recommend_picks_a_safe_utilization() -> None:
    r = runner.invoke(app, ["recommend", "--gpu-memory-gb", "80", "--max-text-chars", "313"])
    assert r.exit_code == 0, r.output
    assert "VOXCPM_MAX_MODEL_LEN=1024" in r.output and "VOXCPM_MAX_NUM_SEQS=128" in r.output
    util = float(r.output.split("VOXCPM_GPU_MEMORY_UTILIZATION=")[1].split()[0])
    assert 0.4 <= util < 0.9  # 0.9 on an 80 GB card came within 0.6 GB of out-of-memory
    r = runner.invoke(app, ["recommend", "--gpu-memory-gb", "8", "--concurrency", "512"])
    assert r.exit_code == 1 and "lower --concurrency" in r.output


# -- systemd's own checks on the rendered units ---------------------------------------------------


def _staged_root(tmp_path: Path) -> Path:
    """A root holding the rendered units and an executable at ExecStart (verify checks it exists)."""
    root = tmp_path / "root"
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for rel, text in render(REPORT).items():
        if rel.startswith("systemd/"):
            (units / Path(rel).name).write_text(text)
    exe = root / "opt/voxws/bin/voxws"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return root


needs_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                   reason="systemd-analyze not installed (Debian: apt-get install systemd)")


@needs_analyze
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    root = _staged_root(tmp_path)
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", f"--root={root}",
                        "voxcpm@group0.service", "voxcpm@group1.service", "voxcpm.target"],
                       capture_output=True, text=True)
    # verify exits 0 on unknown keys and bad values: any output at all is a failure.
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
    # And it does catch a missing ExecStart binary, which is why install verifies against the root.
    (root / "opt/voxws/bin/voxws").unlink()
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", f"--root={root}",
                        "voxcpm@group0.service"], capture_output=True, text=True)
    assert "/opt/voxws/bin/voxws" in p.stdout + p.stderr


@needs_analyze
def test_systemd_analyze_security_rates_the_service_2_or_better(tmp_path: Path) -> None:
    root = _staged_root(tmp_path)
    # --threshold is exposure x 10: exit status 1 above 2.0.
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--threshold=20",
                        "--no-pager", "voxcpm@group0.service"], capture_output=True, text=True,
                       env={**os.environ, "SYSTEMD_COLORS": "0"})
    overall = [line for line in p.stdout.splitlines() if "Overall exposure level" in line]
    assert p.returncode == 0 and overall, p.stdout + p.stderr
    assert float(overall[0].split(":")[1].split()[0]) <= 2.0
