"""render-nginx with certificates (issue 17): a `listen ... ssl` server that a real nginx accepts, and a
wss:// session through it to `voxws serve`, with a self-signed certificate made here by openssl."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from tests.conftest import free_port, serve_process
from tests.test_ops_nginx import NGINX, start_nginx
from voxws.ops.cli import app

runner = CliRunner()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.fail("openssl not found: apt-get install openssl (bin/test installs what the tests need)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def render(tmp_path: Path, *args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["render-nginx", *args, "--out", str(tmp_path / "voxws.conf")])
    return r.exit_code, (tmp_path / "voxws.conf").read_text() if r.exit_code == 0 else r.output


def test_tls_renders_a_listen_ssl_server_with_the_certificates() -> None:
    r = runner.invoke(app, ["render-nginx", "--listen", "443", "--upstream", "127.0.0.1:8081", "--tls-cert",
                            "/etc/ssl/voxws/fullchain.pem", "--tls-key", "/etc/ssl/voxws/privkey.pem",
                            "--server-name", "tts.example.com", "--out", "-"])
    assert r.exit_code == 0, r.output
    assert "    listen 443 ssl;\n    server_name tts.example.com;\n" in r.output
    assert "ssl_certificate /etc/ssl/voxws/fullchain.pem;" in r.output
    assert "ssl_certificate_key /etc/ssl/voxws/privkey.pem;" in r.output
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in r.output


@pytest.mark.parametrize(("args", "needle"), [
    (["--tls-cert", "/etc/ssl/c.pem"], "--tls-cert and --tls-key: give both"),
    (["--tls-key", "/etc/ssl/k.pem"], "--tls-cert and --tls-key: give both"),
    (["--tls-cert", "c.pem", "--tls-key", "/etc/ssl/k.pem"], "--tls-cert=c.pem: must be an absolute path"),
    (["--tls-cert", "/etc/ssl/c.pem", "--tls-key", "/etc/k.pem;"], "--tls-key=/etc/k.pem;: must be an absolute"),
    (["--server-name", "a b"], "--server-name=a b: must be a host name"),
])
def test_tls_refusals(args: list[str], needle: str) -> None:
    r = runner.invoke(app, ["render-nginx", "--listen", "443", "--upstream", "127.0.0.1:8081", *args, "--out", "-"])
    assert r.exit_code == 2 and needle in r.output, r.output


@pytest.mark.nginx
def test_nginx_accepts_the_tls_config_and_carries_a_wss_session(tmp_path: Path) -> None:
    if not Path(NGINX).exists():
        pytest.fail(f"nginx not found at {NGINX}: apt-get install nginx (bin/test does)")
    cert, key = self_signed(tmp_path)
    with serve_process(env={"VOXWS_GROUP": "tls0"}) as (_proc, port):
        front = free_port()
        code, conf = render(tmp_path, "--listen", f"127.0.0.1:{front}", "--upstream", f"127.0.0.1:{port}",
                            "--tls-cert", str(cert), "--tls-key", str(key), "--server-name", "localhost")
        assert code == 0, conf
        proc = start_nginx(tmp_path, tmp_path / "voxws.conf", front)  # runs `nginx -t` first
        try:
            got = asyncio.run(speak_over_wss(front, cert))
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert got["group"] == "tls0" and got["done"]["type"] == "done" and got["audio_bytes"] > 0


async def speak_over_wss(port: int, cert: Path) -> dict:
    ctx = ssl.create_default_context(cafile=str(cert))
    async with connect(f"wss://localhost:{port}/v1/tts", ssl=ctx, compression=None, open_timeout=30) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        await ws.send(json.dumps({"type": "speak", "text": "你好，世界。"}))
        audio = 0
        while True:
            msg = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(msg, bytes):
                audio += len(msg)
            elif (m := json.loads(msg))["type"] in ("done", "error"):
                return {"group": hello["group"], "done": m, "audio_bytes": audio}
