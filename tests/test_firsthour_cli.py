"""What a new user meets first on the command line (issue 17): one-line refusals with exit 2 for flags
and variables alike, typo warnings, bin/serve's banner, --help and --version of every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from voxws import __version__, cli, config

BIN = Path(sys.executable).parent
COMMANDS = ("voxws", "voxws-ops", "voxws-bench")


def run(*args: str, env: dict[str, str] | None = None, exe: str = "voxws") -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOXWS_", "VOXCPM_"))}
    return subprocess.run([str(BIN / exe), *args], env={**base, "COLUMNS": "100", **(env or {})},
                          capture_output=True, text=True, timeout=60)


def refusals(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr and "╭" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith("voxws: invalid setting: ") for line in lines), lines
    return [line.removeprefix("voxws: invalid setting: ") for line in lines]


@pytest.mark.parametrize(("args", "expected"), [
    (["--port", "abc"], "--port=abc: must be an integer from 1 to 65535"),
    (["--port", "70000"], "--port=70000: must be an integer from 1 to 65535"),
    (["--host", "bad host!"], "--host=bad host!: must be a host name or IP address"),
    (["--engine", "foo"], "--engine=foo: must be one of: nanovllm, synthetic"),
])
def test_a_bad_flag_is_one_line_naming_the_flag(args: list[str], expected: str) -> None:
    lines = refusals(run("serve", "--engine", "synthetic", *args))
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_bad_variable_is_named_by_its_variable() -> None:
    lines = refusals(run("serve", env={"VOXWS_ENGINE": "synthetic", "VOXWS_PORT": "70000"}))
    assert lines == ["VOXWS_PORT=70000: must be an integer from 1 to 65535"]


def test_an_unknown_engine_is_exactly_one_error() -> None:
    lines = refusals(run("serve", env={"VOXWS_ENGINE": "foo"}))
    assert lines == ["VOXWS_ENGINE=foo: must be one of: nanovllm, synthetic"]


def test_nanovllm_without_a_model_path_is_one_line() -> None:
    lines = refusals(run("serve", "--engine", "nanovllm"))
    assert len(lines) == 1 and lines[0].startswith("VOXCPM_MODEL_PATH=: must be set to a model directory")
    assert "--model-path" in lines[0]


def test_nanovllm_with_a_missing_model_directory_is_refused_before_the_engine_loads(tmp_path: Path) -> None:
    lines = refusals(run("serve", "--engine", "nanovllm", "--model-path", str(tmp_path / "nope")))
    assert lines[0].startswith(f"--model-path={tmp_path / 'nope'}: must be an existing VoxCPM 1.5 model directory")
    (tmp_path / "config.json").write_text("{}")
    lines = refusals(run("serve", env={"VOXWS_ENGINE": "nanovllm", "VOXCPM_MODEL_PATH": str(tmp_path)}))
    assert lines[0].startswith(f"VOXCPM_MODEL_PATH={tmp_path}: must be a VoxCPM 1.5 model directory; missing: "
                               "*.safetensors, audiovae.pth")


def test_nanovllm_without_the_gpu_extra_is_one_line(tmp_path: Path) -> None:
    for name in ("config.json", "m.safetensors", "audiovae.pth", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text("{}")
    settings = config.Settings(engine="nanovllm", model_path=str(tmp_path))
    assert cli._settings({"VOXWS_ENGINE": "nanovllm", "VOXCPM_MODEL_PATH": str(tmp_path)}, True,
                         find_spec=lambda m: object()) == settings
    with pytest.raises(Exception) as e:  # typer.Exit(2), after printing the line
        cli._settings({"VOXWS_ENGINE": "nanovllm", "VOXCPM_MODEL_PATH": str(tmp_path)}, True,
                      find_spec=lambda m: None)
    assert getattr(e.value, "exit_code", None) == 2


@pytest.mark.parametrize("host", ["bad host!", "127.0.0.1  # loopback", "-lead.example", "", "a..b"])
def test_host_must_be_a_host_name_or_address(host: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.load({"VOXWS_ENGINE": "synthetic", "VOXWS_HOST": host})
    assert e.value.problems[0].startswith(f"VOXWS_HOST={host.strip()}: must be a host name or IP address")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "fe80::1", "localhost", "gpu-3.example.com",
                                  "node7"])
def test_host_names_and_addresses_pass(host: str) -> None:
    assert config.load({"VOXWS_ENGINE": "synthetic", "VOXWS_HOST": host}).host == host


def test_a_trailing_comment_is_explained() -> None:
    with pytest.raises(config.ConfigError) as e:
        config.load({"VOXWS_ENGINE": "synthetic", "VOXWS_HOST": "127.0.0.1  # loopback"})
    assert "put `# ...` on a line of its own" in e.value.problems[0]


def test_a_misspelt_variable_is_warned_at_start_up() -> None:
    r = run("serve", "--check", env={"VOXWS_ENGINE": "synthetic", "VOXWS_PROT": "9000", "VOXCPM_MODEL_PTH": "/x",
                                     "VOXWS_BENCH_TOKEN": "t"})
    assert r.returncode == 0, r.stderr
    warnings = r.stderr.strip().splitlines()
    assert warnings == [
        "voxws: warning: VOXCPM_MODEL_PTH is not a voxws setting (did you mean VOXCPM_MODEL_PATH?); it is ignored "
        "(`voxws config` lists them all)",
        "voxws: warning: VOXWS_PROT is not a voxws setting (did you mean VOXWS_PORT?); it is ignored "
        "(`voxws config` lists them all)"]


def test_the_typo_warning_comes_with_the_error_it_explains() -> None:
    r = run("serve", env={"VOXWS_ENGINE": "synthetic", "VOXWS_PORT": "99999", "VOXWS_PROT": "9000"})
    assert r.returncode == 2
    assert "VOXWS_PROT is not a voxws setting" in r.stderr and "VOXWS_PORT=99999" in r.stderr


def test_bin_serve_checks_before_its_banner_and_names_the_real_engine(tmp_path: Path) -> None:
    script = ROOT / "bin/serve"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXWS_", "VOXCPM_"))}
    bad = subprocess.run([str(script), "--port", "abc"], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2
    assert "http://" not in bad.stdout and "--port=abc: must be an integer from 1 to 65535" in bad.stderr
    # The banner is what `voxws serve --check` prints: the engine and address after flags and variables.
    r = run("serve", "--check", "--engine", "nanovllm", "--port", "9001", env={"VOXCPM_MODEL_PATH": str(tmp_path)})
    assert r.returncode == 2  # an empty model directory
    r = run("serve", "--check", "--port", "9001", env={"VOXWS_ENGINE": "synthetic", "VOXWS_HOST": "::"})
    assert r.returncode == 0 and r.stdout.strip() == (
        "voxws (synthetic engine): demo page http://[::1]:9001/  WebSocket ws://[::1]:9001/v1/tts")
    assert ".venv/bin/voxws serve --check" in script.read_text()


@pytest.mark.parametrize("exe", COMMANDS)
def test_every_command_has_version(exe: str) -> None:
    r = run("--version", exe=exe)
    assert r.returncode == 0 and r.stdout == f"{exe} {__version__}\n"


def test_serve_help_shows_each_flags_variable_and_default() -> None:
    out = " ".join(run("serve", "--help").stdout.split())
    for env, flag in (("VOXWS_HOST", "--host"), ("VOXWS_PORT", "--port"), ("VOXWS_ENGINE", "--engine"),
                      ("VOXWS_GROUP", "--group"), ("VOXCPM_MODEL_PATH", "--model-path"),
                      ("VOXWS_LOG_FORMAT", "--log-format")):
        f = config.FIELD_BY_ENV[env]
        assert f"[env {env}; default {config.describe_default(f)}]" in out, (env, out)
        assert flag in out
    assert "[env VOXWS_PORT; default 8081]" in out


@pytest.mark.parametrize(("exe", "command"), [("voxws-ops", "plan"), ("voxws-ops", "render"),
                                              ("voxws-ops", "validate"), ("voxws-ops", "install"),
                                              ("voxws-ops", "render-nginx"), ("voxws-bench", "ttfb"),
                                              ("voxws-bench", "fullload")])
def test_help_shows_defaults_and_keeps_bracketed_text(exe: str, command: str) -> None:
    out = " ".join(run(command, "--help", exe=exe).stdout.split())
    assert "╭" not in out
    if command in ("plan", "render", "install"):
        assert "[default: 8081]" in out and "[default: the voxws next to this voxws-ops" in out
        for env in ("CUDA_VISIBLE_DEVICES", "VOXWS_PORT", "VOXCPM_MODEL_PATH", "VOXCPM_GPU_MEMORY_UTILIZATION",
                    "VOXCPM_MAX_NUM_SEQS", "VOXCPM_MAX_MODEL_LEN", "VOXWS_ENGINE", "VOXWS_HOST"):
            assert env in out, env  # the variable each option writes into the env files
    if exe == "voxws-bench":
        assert "[default: ws://127.0.0.1:8081/v1/tts]" in out and "[env var: VOXWS_BENCH_TOKEN]" in out


def test_voxws_config_prints_values_as_a_user_writes_them() -> None:
    out = run("config").stdout
    assert "None" not in out and "(0,)" not in out and "()" not in out
    assert re.search(r"^VOXCPM_DEVICES +default 0 ", out, re.M)
    assert re.search(r"^VOXWS_AUTH_TOKEN_FILE +default unset ", out, re.M)
    assert len(out.splitlines()) == len(config.FIELDS)
