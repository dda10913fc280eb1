"""voxws-ops validate: every refusal names the file, the variable, the value and the rule."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import VOXWS
from voxws.ops.cli import app
from voxws.ops.validate import validate

runner = CliRunner()
UTIL = "VOXCPM_GPU_MEMORY_UTILIZATION"


def model_dir(tmp_path: Path, skip: str = "") -> Path:
    d = tmp_path / "VoxCPM1.5"
    d.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors", "audiovae.pth", "tokenizer.json",
                 "tokenizer_config.json"):
        if name != skip:
            (d / name).write_text("{}")
    return d


def group_env(tmp_path: Path, name: str = "group0", gpus: str = "3,4", port: int = 8081,
              **extra: str | None) -> Path:
    """A valid env file as render writes it, with overrides (value None drops the variable)."""
    model = extra["VOXCPM_MODEL_PATH"] if "VOXCPM_MODEL_PATH" in extra else str(model_dir(tmp_path))
    env = {"CUDA_VISIBLE_DEVICES": gpus, "VOXCPM_DEVICES": "0,1", "VOXCPM_MODEL_PATH": model,
           "VOXCPM_GPU_MEMORY_UTILIZATION": "0.4", "VOXCPM_MAX_NUM_SEQS": "128",
           "VOXCPM_MAX_MODEL_LEN": "1024",
           "VOXWS_GROUP": name, "VOXWS_PORT": str(port), "VOXWS_ENGINE": "nanovllm", **extra}
    d = tmp_path / "etc"
    d.mkdir(exist_ok=True)
    p = d / f"{name}.env"
    p.write_text("# test\n" + "".join(f"{k}={v}\n" for k, v in env.items() if v is not None))
    return p


def test_the_report_layout_passes(tmp_path: Path) -> None:
    group_env(tmp_path, "group0", "3,4", 8081)
    group_env(tmp_path, "group1", "5,6", 8082)
    rep = validate([tmp_path / "etc"], max_text_chars=300)
    assert rep.ok and not rep.warnings, rep.errors + rep.warnings
    r = runner.invoke(app, ["validate", str(tmp_path / "etc"), "--gpu-memory-gb", "80"])
    assert r.exit_code == 0 and "ok: 2 env file(s)" in r.output, r.output


@pytest.mark.parametrize(("extra", "needle"), [
    ({UTIL: "0.35"}, f"{UTIL}=0.35: must be a number from 0.4 to 0.95"),
    ({UTIL: "0.96"}, f"{UTIL}=0.96: must be a number from 0.4 to 0.95"),
    ({UTIL: "high"}, f"{UTIL}=high: must be a number"),
    ({"VOXCPM_MAX_MODEL_LEN": "1000"}, "VOXCPM_MAX_MODEL_LEN=1000: must be a multiple of 256"),
    ({"VOXCPM_MAX_MODEL_LEN": "256"}, "VOXCPM_MAX_MODEL_LEN=256: must be at least 1024 to fit texts of 300 "),
    ({"VOXCPM_MAX_NUM_SEQS": "0"}, "VOXCPM_MAX_NUM_SEQS=0: must be an integer from 1 to 512"),
    ({"VOXCPM_MAX_NUM_SEQS": "1024"}, "VOXCPM_MAX_NUM_SEQS=1024: must be an integer from 1 to 512"),
    ({"VOXWS_PORT": "70000"}, "VOXWS_PORT=70000: must be an integer from 1 to 65535"),
    ({"VOXWS_PORT": "80"}, "VOXWS_PORT=80: must be 1024 or above"),
    ({"VOXWS_ENGINE": "tensorrt"}, "VOXWS_ENGINE=tensorrt: must be one of: nanovllm, synthetic"),
    ({"VOXCPM_DEVICES": "0,0"}, "VOXCPM_DEVICES=0,0: must be comma-separated distinct GPU indices"),
    ({"VOXCPM_DEVICES": "0,1,2"}, "VOXCPM_DEVICES=0,1,2: must be indices below 2"),
    ({"CUDA_VISIBLE_DEVICES": None}, "CUDA_VISIBLE_DEVICES=: must be this group's physical GPUs"),
    ({"VOXCPM_MODEL_PATH": None}, "VOXCPM_MODEL_PATH=: must be set to a model directory"),
    ({"VOXCPM_MODEL_PATH": "/nonexistent/model"}, "VOXCPM_MODEL_PATH=/nonexistent/model: must be an exist"),
    ({"VOXCPM_MODEL_PATH": "/root/models/VoxCPM1.5"}, "ProtectHome=yes hides"),
    ({"VOXWS_GROUP": "group7"}, "VOXWS_GROUP=group7: must be the file's name (group0"),
    ({"VOXWS_DRAIN_TIMEOUT_S": "120"}, "VOXWS_DRAIN_TIMEOUT_S=120: must be at most 80 s"),
])
def test_refusals(tmp_path: Path, extra: dict, needle: str) -> None:
    p = group_env(tmp_path, **extra)
    rep = validate([p], max_text_chars=300)
    assert any(needle in e and e.startswith(str(p)) for e in rep.errors), rep.errors
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 1 and needle in r.output


def test_313_characters_fail_at_512_and_fit_1024(tmp_path: Path) -> None:
    """The report's check-point, through voxws.sizing."""
    p = group_env(tmp_path, VOXCPM_MAX_MODEL_LEN="512")
    assert any("VOXCPM_MAX_MODEL_LEN=512: must be at least 1024 to fit texts of 313" in e
               for e in validate([p], max_text_chars=313).errors)
    p = group_env(tmp_path, VOXCPM_MAX_MODEL_LEN="1024")
    assert validate([p], max_text_chars=313).ok


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "audiovae.pth", "tokenizer.json",
                                     "tokenizer_config.json"])
def test_model_directory_contents(tmp_path: Path, missing: str) -> None:
    d = model_dir(tmp_path, skip=missing)
    p = group_env(tmp_path, VOXCPM_MODEL_PATH=str(d))
    errors = validate([p]).errors
    label = {"model.safetensors": "*.safetensors", "tokenizer.json": "tokenizer.json or tokenizer.model"}
    assert any(f"VOXCPM_MODEL_PATH={d}: must be a VoxCPM 1.5 model directory; missing: "
               f"{label.get(missing, missing)}" in e for e in errors), errors


def test_same_gpu_in_two_groups(tmp_path: Path) -> None:
    group_env(tmp_path, "group0", "3,4", 8081)
    g1 = group_env(tmp_path, "group1", "4,5", 8082)
    errors = validate([tmp_path / "etc"]).errors
    assert any(e.startswith(f"{g1}: CUDA_VISIBLE_DEVICES=4,5: must be GPUs no other group uses; GPU 4 is "
                            f"also in {tmp_path / 'etc/group0.env'}") for e in errors), errors


def test_same_port_twice(tmp_path: Path) -> None:
    group_env(tmp_path, "group0", "3,4", 8081)
    g1 = group_env(tmp_path, "group1", "5,6", 8081)
    errors = validate([tmp_path / "etc"]).errors
    assert any(e.startswith(f"{g1}: VOXWS_PORT=8081: must be a port no other group uses") for e in errors), \
        errors


def test_unparsable_line_and_missing_path(tmp_path: Path) -> None:
    p = group_env(tmp_path)
    p.write_text(p.read_text() + "export VOXWS_PORT 8085\n")
    errors = validate([p, tmp_path / "nope.env"]).errors
    assert any(str(p) in e and "must be KEY=VALUE" in e for e in errors), errors
    assert any("nope.env: must be an env file or a directory" in e for e in errors), errors


def test_typo_is_a_warning(tmp_path: Path) -> None:
    p = group_env(tmp_path, VOXWS_PROT="8085")
    rep = validate([p])
    assert rep.ok and any("VOXWS_PROT is not a voxws setting" in w for w in rep.warnings)
    assert runner.invoke(app, ["validate", str(p), "--strict"]).exit_code == 1


def test_memory_budget_warnings(tmp_path: Path) -> None:
    # util 0.9 on an 80 GB card: within 0.6 GB of out-of-memory in the H100 run.
    p = group_env(tmp_path, VOXCPM_GPU_MEMORY_UTILIZATION="0.9")
    rep = validate([p], gpu_memory_gb=80)
    assert rep.ok and any("VOXCPM_GPU_MEMORY_UTILIZATION=0.9: leaves" in w and "use at most 0.85" in w
                          for w in rep.warnings), rep.warnings
    # A small card: the KV cache for 128 x 2048 does not fit 0.4 x 16 GB.
    p = group_env(tmp_path, VOXCPM_MAX_MODEL_LEN="2048")
    rep = validate([p], gpu_memory_gb=16)
    assert any("does not hold weights, activations and a KV cache for 128 seqs x 2048" in w
               for w in rep.warnings), rep.warnings
    assert not validate([p], gpu_memory_gb=80).warnings
    r = runner.invoke(app, ["validate", str(p), "--gpu-memory-gb", "16", "--strict"])
    assert r.exit_code == 1 and "warning:" in r.output


def test_one_rule_set_with_the_server(tmp_path: Path) -> None:
    """A value validate refuses makes `voxws serve` refuse to start with the same words."""
    p = group_env(tmp_path, VOXCPM_GPU_MEMORY_UTILIZATION="0.3", VOXWS_ENGINE="synthetic")
    rule = "VOXCPM_GPU_MEMORY_UTILIZATION=0.3: must be a number from 0.4 to 0.95"
    assert any(rule in e for e in validate([p]).errors)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXWS_", "VOXCPM_"))}
    env.update(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line and line[0] != "#")
    proc = subprocess.run([VOXWS, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and rule in proc.stderr, proc.stderr
