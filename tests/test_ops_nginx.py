"""render-nginx: the config, and a real nginx on loopback in front of two `voxws serve` processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import free_port, serve_process
from tests.ops_fixtures.wsprobe import probe
from voxws.bench.proc import readyz
from voxws.ops.cli import app

runner = CliRunner()
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render_nginx(tmp_path: Path, *args: str) -> tuple[int, str]:
    out = tmp_path / "voxws.conf"
    r = runner.invoke(app, ["render-nginx", *args, "--out", str(out)])
    return r.exit_code, (out.read_text() if r.exit_code == 0 else r.output)


def test_config_has_least_conn_upgrade_and_failover(tmp_path: Path) -> None:
    code, conf = render_nginx(tmp_path, "--listen", "8080", "--upstream", "127.0.0.1:8081",
                              "--upstream", "10.0.0.6:8081")
    assert code == 0, conf
    for line in ("least_conn;", "server 127.0.0.1:8081 max_fails=1 fail_timeout=10s;",
                 "server 10.0.0.6:8081 max_fails=1 fail_timeout=10s;", "listen 8080;",
                 "proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $voxws_connection;", "proxy_read_timeout 3600s;",
                 "proxy_next_upstream error timeout http_502 http_503;"):
        assert line in conf, line


def test_upstreams_from_env_files(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "group0.env").write_text("VOXWS_HOST=127.0.0.1\nVOXWS_PORT=8081\n")
    (d / "group1.env").write_text("VOXWS_HOST=0.0.0.0\nVOXWS_PORT=8082\n")
    code, conf = render_nginx(tmp_path, "--listen", "0.0.0.0:8080", "--from-env", str(d))
    assert code == 0, conf
    assert "server 127.0.0.1:8081 " in conf and "server 127.0.0.1:8082 " in conf


@pytest.mark.parametrize(("args", "needle"), [
    (["--listen", "8080"], "--upstream: must name at least one group"),
    (["--listen", "8080", "--upstream", "localhost"], "--upstream=localhost: must be HOST:PORT"),
    (["--listen", "99999", "--upstream", "a:1"], "--listen=99999"),
    (["--listen", "8080", "--upstream", "a:1", "--upstream", "a:1"], "must not name a group twice"),
])
def test_refusals(tmp_path: Path, args: list[str], needle: str) -> None:
    code, output = render_nginx(tmp_path, *args)
    assert code == 2 and needle in output


# -- a real nginx ------------------------------------------------------------------------------------


def start_nginx(tmp_path: Path, snippet: Path, port: int) -> subprocess.Popen:
    """nginx with a main config that includes the snippet in http{}, as Debian's conf.d does."""
    main = tmp_path / "nginx.conf"
    temp = "".join(f"    {k}_temp_path {tmp_path}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log info;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n    log_format up '$status $upstream_addr $upstream_status';\n"
        f"    access_log {tmp_path}/access.log up;\n{temp}    include {snippet};\n}}\n")
    check = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(main)], stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
    raise TimeoutError("nginx did not listen")


@pytest.fixture
def nginx_front(tmp_path: Path) -> Iterator[tuple[int, dict[str, tuple[subprocess.Popen, int]]]]:
    slow = {"VOXWS_SYNTHETIC_STEP_BASE_MS": "40"}  # a stream lasts seconds: the drain has work to finish
    with serve_process(env={"VOXWS_GROUP": "ga", **slow}) as a, \
            serve_process(env={"VOXWS_GROUP": "gb", **slow}) as b:
        front = free_port()
        code, conf = render_nginx(tmp_path, "--listen", f"127.0.0.1:{front}",
                                  "--upstream", f"127.0.0.1:{a[1]}", "--upstream", f"127.0.0.1:{b[1]}")
        assert code == 0, conf
        proc = start_nginx(tmp_path, tmp_path / "voxws.conf", front)
        try:
            yield front, {"ga": a, "gb": b}
        finally:
            proc.send_signal(signal.SIGQUIT)  # graceful: finish, then exit
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def open_session(port: int) -> tuple[ClientConnection, str]:
    ws = await connect(f"ws://127.0.0.1:{port}/v1/tts", compression=None, max_size=None, open_timeout=30)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return ws, hello["group"]


@pytest.mark.nginx
def test_nginx_spreads_sessions_and_fails_over(nginx_front, tmp_path: Path) -> None:
    front, backends = nginx_front
    log_dir = tmp_path

    async def scenario() -> None:
        # Sessions spread over both groups (least_conn), and audio flows through the proxy.
        sessions = [await open_session(front) for _ in range(8)]
        count = Counter(g for _, g in sessions)
        assert count["ga"] >= 3 and count["gb"] >= 3, count
        got = await probe(f"ws://127.0.0.1:{front}/v1/tts", "你好，世界。")
        assert got["start"] and got["frames"] > 0 and got["done"]["chunks"] == got["frames"], got

        # Leave ga with 3 idle sessions and gb with 1 that streams a long text, then stop gb.
        on_a = [ws for ws, g in sessions if g == "ga"]
        on_b = [ws for ws, g in sessions if g == "gb"]
        for ws in on_a[3:] + on_b[1:]:
            await ws.close()
        streaming = on_b[0]
        long_text = "这是一段很长的文字。" * 8
        await streaming.send(json.dumps({"type": "speak", "context": "long", "text": long_text}))
        while not isinstance(await asyncio.wait_for(streaming.recv(), 30), bytes):
            pass  # until the first audio frame
        proc_b, port_b = backends["gb"]
        proc_b.send_signal(signal.SIGTERM)
        end = time.monotonic() + 30
        while readyz(port_b) != 503:
            assert time.monotonic() < end, "gb never reported draining on /readyz"
            await asyncio.sleep(0.02)

        # gb has the fewest sessions, so least_conn picks it: it answers 503 while draining and nginx
        # moves the handshake to the survivor.
        assert proc_b.poll() is None, "gb exited before the test could see its drain"
        ws, group = await open_session(front)
        assert group == "ga"
        await ws.close()
        await asyncio.sleep(0.5)  # nginx logs the request when the tunnel closes
        tried = (log_dir / "access.log").read_text().splitlines()
        # "$upstream_addr $upstream_status": gb was tried first and said 503, then ga took the session.
        assert any(f"127.0.0.1:{port_b}, " in line and line.endswith(" 503, 101") for line in tried), tried

        # The session on gb still gets all its audio, then 1001 (the drain).
        frames, done = 1, None
        while True:
            try:
                msg = await asyncio.wait_for(streaming.recv(), 60)
            except Exception:
                break
            if isinstance(msg, bytes):
                frames += 1
            elif json.loads(msg)["type"] == "done":
                done = json.loads(msg)
        assert done is not None and done["chunks"] == frames and streaming.close_code == 1001
        assert proc_b.wait(30) == 0

        # gb is gone: every new session lands on ga and gets audio.
        later = [await open_session(front) for _ in range(4)]
        assert {g for _, g in later} == {"ga"}
        got = await probe(f"ws://127.0.0.1:{front}/v1/tts", "你好。")
        assert got["ready"]["group"] == "ga" and got["done"]["chunks"] == got["frames"] > 0
        for ws, _ in later + [(w, "") for w in on_a[:3]]:
            await ws.close()

    asyncio.run(scenario())
