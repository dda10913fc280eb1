"""voxws-bench end to end against a real `voxws serve --engine synthetic` on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxws.bench import proc as proc_

BIN = Path(sys.executable).parent
FAST = {"VOXWS_SYNTHETIC_STEP_BASE_MS": "2", "VOXWS_SYNTHETIC_STEP_PER_SEQ_MS": "0.05"}


def _cmd(name: str, module: str) -> list[str]:
    exe = BIN / name
    return [str(exe)] if exe.exists() else [sys.executable, "-c", f"from {module} import app; app()"]


@contextlib.contextmanager
def voxws_server(tmp_path: Path, **env: str) -> Iterator[str]:
    port = proc_.free_port()
    log_path = tmp_path / f"server-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115
    cmd = [*_cmd("voxws", "voxws.cli"), "serve", "--engine", "synthetic", "--host", "127.0.0.1",
           "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, "VOXWS_LOG_FORMAT": "json", **env}, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        proc_.wait_ready(port, proc, log=log_path)
        yield f"ws://127.0.0.1:{port}/v1/tts"
    finally:
        proc_.stop(proc)
        log.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    with voxws_server(tmp_path_factory.mktemp("server"), **FAST) as u:
        yield u


def bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cmd("voxws-bench", "voxws.bench"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def _doc(out: Path, scenario: str) -> dict:
    return json.loads((out / f"{scenario}.json").read_text())


def test_ttfb_prints_the_table_and_writes_json_markdown_and_plots(url, tmp_path):
    r = bench("ttfb", "--url", url, "--concurrency", "1,4", "--rounds", "2", "--out", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    assert "TTFB" in r.stdout and "concurrency" in r.stdout
    doc = _doc(tmp_path, "ttfb")
    assert doc["server"]["engine"] == "synthetic" and doc["server"]["server"].startswith("voxws/")
    assert doc["status"]["complete"] is True
    assert [lv["level"] for lv in doc["levels"]] == [1, 4]
    assert len(doc["requests"]) == 10 and all(rec["ok"] for rec in doc["requests"])
    for rec in doc["requests"]:
        # What the client measured agrees with what the server says it sent.
        assert rec["audio_s"] * 1000 == pytest.approx(rec["server_audio_ms"], abs=1)
        assert rec["ttfb_ms"] > 0 and rec["frames"] == len(rec["frames_ms"])
    md = (tmp_path / "ttfb.md").read_text()
    assert "| concurrency | requests | success |" in md
    for png in ("ttfb-ttfb.png", "ttfb-throughput.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_fullload_closed_loop_over_two_client_processes(url, tmp_path):
    r = bench("fullload", "--url", url, "--concurrency", "3", "--requests", "7", "--procs", "2",
              "--out", str(tmp_path), "-q", "--no-plots")
    assert r.returncode == 0, r.stderr
    doc = _doc(tmp_path, "fullload")
    assert doc["client"]["procs"] == 2
    assert sorted(rec["id"] for rec in doc["requests"]) == list(range(7))
    assert doc["overall"]["success_rate"] == 1 and doc["overall"]["throughput_x"] > 0
    assert not list(tmp_path.glob("*.png"))


def test_every_run_is_bounded_by_max_requests(url, tmp_path):
    r = bench("ttfb", "--url", url, "--concurrency", "1,8", "--rounds", "1", "--max-requests", "4",
              "--out", str(tmp_path), "-q", "--no-plots")
    assert r.returncode == 0, r.stderr
    doc = _doc(tmp_path, "ttfb")
    assert len(doc["requests"]) == 4
    assert doc["status"]["request_limit_hit"] is True and doc["status"]["complete"] is False
    assert "incomplete run" in (tmp_path / "ttfb.md").read_text()


def test_every_run_is_bounded_by_max_duration(tmp_path):
    with voxws_server(tmp_path) as slow_url:  # H100 step model: a 313-character text takes seconds
        t0 = time.monotonic()
        r = bench("lengths", "--url", slow_url, "--concurrency", "2", "--rounds", "50", "--max-duration", "3",
                  "--out", str(tmp_path), "-q", "--no-plots")
        elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    doc = _doc(tmp_path, "lengths")
    assert doc["status"]["timed_out"] is True
    assert elapsed < 120  # stopped by itself, long before its 50 rounds of ~3 s
    assert doc["overall"]["ok"] >= 1


def test_ctrl_c_prints_and_writes_what_was_measured(tmp_path):
    with voxws_server(tmp_path) as slow_url:
        p = subprocess.Popen([*_cmd("voxws-bench", "voxws.bench"), "fullload", "--url", slow_url,
                              "--concurrency", "4", "--requests", "400", "--out", str(tmp_path), "-q",
                              "--no-plots"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "COLUMNS": "200"})
        time.sleep(6)  # the first requests (about 0.5 s of work each) finish meanwhile
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "fullload" in out
    doc = _doc(tmp_path, "fullload")
    assert doc["status"]["interrupted"] is True
    assert doc["overall"]["ok"] >= 1
    assert doc["overall"]["requests"] < 400


def test_errors_from_the_server_are_counted_per_code(tmp_path):
    # Capacity 2 and a queue of 2: a burst of 8 gets 4 `busy` refusals.
    with voxws_server(tmp_path, VOXCPM_MAX_NUM_SEQS="2", VOXWS_MAX_QUEUE="2", **FAST) as small:
        r = bench("overload", "--url", small, "--concurrency", "8", "--out", str(tmp_path), "-q",
                  "--no-plots")
    assert r.returncode == 0, r.stderr
    lv = _doc(tmp_path, "overload")["levels"][0]
    assert lv["ok"] == 4 and lv["errors"] == {"busy": 4} and lv["success_rate"] == 0.5
    assert lv["queued"] == 2
    assert "busy" in r.stdout


def test_token_is_sent_as_bearer_and_refusal_is_reported(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    with voxws_server(tmp_path, VOXWS_AUTH_TOKEN_FILE=str(token), **FAST) as locked:
        ok = bench("ttfb", "--url", locked, "--concurrency", "2", "--rounds", "1", "--token", "s3cret-token",
                   "--out", str(tmp_path / "ok"), "-q", "--no-plots")
        refused = bench("ttfb", "--url", locked, "--concurrency", "2", "--rounds", "1",
                        "--out", str(tmp_path / "no"), "-q", "--no-plots")
    assert ok.returncode == 0, ok.stderr
    assert _doc(tmp_path / "ok", "ttfb")["overall"]["ok"] == 2
    assert "s3cret-token" not in (tmp_path / "ok" / "ttfb.json").read_text()
    assert refused.returncode == 1
    assert _doc(tmp_path / "no", "ttfb")["overall"]["errors"] == {"http_401": 2}


def test_format_and_sample_rate_are_asked_for_and_measured(url, tmp_path):
    r = bench("ttfb", "--url", url, "--concurrency", "2", "--rounds", "1", "--format", "pcm_mulaw",
              "--sample-rate", "8000", "--text", "Hello there, this is a benchmark.", "--out", str(tmp_path),
              "-q", "--no-plots")
    assert r.returncode == 0, r.stderr
    for rec in _doc(tmp_path, "ttfb")["requests"]:
        assert rec["format"] == "pcm_mulaw" and rec["sample_rate"] == 8000
        assert rec["audio_s"] * 1000 == pytest.approx(rec["server_audio_ms"], abs=1)
        assert rec["text_chars"] == len("Hello there, this is a benchmark.")


def test_open_loop_limit_and_lengths(url, tmp_path):
    r = bench("open", "--url", url, "--rate", "20", "--duration", "1", "--out", str(tmp_path), "-q",
              "--no-plots")
    assert r.returncode == 0, r.stderr
    doc = _doc(tmp_path, "open")
    assert doc["overall"]["requests"] >= 5 and doc["overall"]["success_rate"] == 1
    assert all(rec["scheduled_s"] is not None and rec["connect_ms"] is not None for rec in doc["requests"])

    r = bench("limit", "--url", url, "--start", "1", "--max-concurrency", "4", "--out", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    v = _doc(tmp_path, "limit")["verdicts"]["limit"]
    assert [s["concurrency"] for s in v["steps"]] == [1, 2, 4] and v["max_passing_concurrency"] == 4

    texts = tmp_path / "texts.txt"
    texts.write_text("你好，欢迎光临。\nThe quick brown fox jumps over the lazy dog.\n", encoding="utf-8")
    r = bench("lengths", "--url", url, "--text-file", str(texts), "--rounds", "1", "--out", str(tmp_path),
              "-q")
    assert r.returncode == 0, r.stderr
    doc = _doc(tmp_path, "lengths")
    assert [lv["level"] for lv in doc["levels"]] == ["line1", "line2"]
    assert (tmp_path / "lengths-ttfb.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["ttfb", "--concurrency", "0,8"], "--concurrency=0,8: must be a comma-separated list of positive"),
    (["ttfb", "--format", "wav"], "--format=wav: must be one of pcm_s16le, pcm_f32le, pcm_mulaw"),
    (["ttfb", "--url", "http://x/v1/tts"], "--url=http://x/v1/tts: must start with ws:// or wss://"),
    (["open", "--rate", "0"], "--rate=0.0: must be more than 0"),
    (["ttfb", "--text", "hi", "--text-file", "x.txt"], "give one of them"),
])
def test_bad_options_name_the_option_the_value_and_the_rule(args, message, tmp_path):
    r = bench(*args, "--out", str(tmp_path))
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split())
