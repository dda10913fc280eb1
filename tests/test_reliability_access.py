"""Access control over real loopback sockets: the token (three ways in, 401 otherwise, never logged),
allowed origins (403), open monitoring routes, the loopback default and the open-bind warning."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ROOT, running, serve_process, url
from tests.wsclient import collect, open_ws, run
from voxws import config

TOKEN = "tok-3f9a1c77e2b54d0e9b1a-secret"
FAST = {"synthetic_step_base_ms": 2.0, "synthetic_step_per_seq_ms": 0.0}



@pytest.fixture
def token_file(tmp_path: Path) -> str:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")  # a trailing newline, as `echo` writes it
    return str(p)


async def status_of(uri: str, **kw: object) -> int:
    """HTTP status of a handshake: 101 when it opens (and the server said `ready`), else the refusal."""
    try:
        ws, _ = await open_ws(uri, **kw)
    except InvalidStatus as e:
        return e.response.status_code
    await ws.close()
    return 101


async def speak_once(uri: str, **kw: object) -> dict:
    ws, _ = await open_ws(uri, **kw)
    await ws.send(json.dumps({"type": "speak", "text": "授权成功。", "context": "t"}))
    streams, _ = await collect(ws)
    await ws.close()
    return streams["t"].end or {}


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_token_missing_or_wrong_is_401_in_every_form_and_nothing_runs(token_file: str) -> None:
    wrong = TOKEN[:-1] + "X"

    async def scenario() -> None:
        async with running(**FAST, auth_token_file=token_file) as srv:
            u = url(srv)
            refused = [
                await status_of(u),
                await status_of(u, additional_headers={"Authorization": f"Bearer {wrong}"}),
                await status_of(u, additional_headers={"Authorization": f"Basic {TOKEN}"}),
                await status_of(u, additional_headers={"Authorization": "Bearer "}),
                await status_of(u + f"?token={wrong}"),
                await status_of(u + "?token="),
                await status_of(u + f"?tok={TOKEN}"),
                await status_of(u, subprotocols=["voxws.v1", f"bearer.{wrong}"]),
                await status_of(u, subprotocols=["voxws.v1", f"Bearer.{TOKEN}"]),
                await status_of(u, additional_headers={"Authorization": f"Bearer {TOKEN[:8]}"}),
            ]
            assert refused == [401] * len(refused)
            # Nothing reached a session, nothing reached the engine.
            assert srv.metrics.value("voxws_connections_total") == 0
            assert sum(w.steps for w in srv.engine._workers) == 0 and srv.engine.running == 0
            body = srv.metrics.render().decode()
            assert f'voxws_handshake_refused_total{{status="401"}} {len(refused)}.0' in body

    run(scenario())


def test_each_of_the_three_ways_to_present_the_token_works(token_file: str) -> None:
    async def scenario() -> None:
        async with running(**FAST, auth_token_file=token_file) as srv:
            u = url(srv)
            for kw in ({"additional_headers": {"Authorization": f"Bearer {TOKEN}"}},
                       {"additional_headers": {"Authorization": f"bearer   {TOKEN}"}},  # scheme is case-blind
                       {"uri": u + f"?token={TOKEN}"},
                       {"subprotocols": ["voxws.v1", f"bearer.{TOKEN}"]}):
                target = kw.pop("uri", u)
                end = await speak_once(target, **kw)  # type: ignore[arg-type]
                assert end["type"] == "done", kw
            # The browser form: the server answers with voxws.v1, never echoes the token back.
            async with connect(u, subprotocols=["voxws.v1", f"bearer.{TOKEN}"]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "voxws.v1"
                assert TOKEN not in str(ws.response.headers)

    run(scenario())


def test_monitoring_routes_stay_open_when_a_token_is_set(token_file: str) -> None:
    async def scenario() -> None:
        async with running(**FAST, auth_token_file=token_file) as srv:
            loop = asyncio.get_running_loop()
            for path in ("/healthz", "/readyz", "/metrics", "/"):
                status, body = await loop.run_in_executor(None, http_get, srv.port, path)
                assert status == 200, path
                assert TOKEN not in body

    run(scenario())


def test_origins_outside_the_list_get_403() -> None:
    allowed = ("https://app.example.com", "http://localhost:3000")

    async def scenario() -> None:
        async with running(**FAST, allowed_origins=allowed) as srv:
            u = url(srv)
            for origin in ("https://evil.example", "https://app.example.com.evil.example", "http://app.example.com",
                           "https://APP.example.com.", "null", "http://localhost:3001"):
                assert await status_of(u, origin=origin) == 403, origin
            for origin in ("https://app.example.com", "https://app.example.com/", "http://localhost:3000"):
                assert await status_of(u, origin=origin) == 101, origin
            assert await status_of(u) == 101  # no Origin: not a browser, nothing to hijack
            assert 'voxws_handshake_refused_total{status="403"} 6.0' in srv.metrics.render().decode()

    run(scenario())


def test_token_and_text_never_appear_in_the_log(token_file: str) -> None:
    """Run `voxws serve`, present the token every way (right and nearly right), speak a marked text,
    get refused for other reasons with the token in the URL: no log line holds the token or the text."""
    wrong = "WRONG" + TOKEN
    secret_text = "zebraquartz7781 说的话。"

    async def clients(port: int) -> None:
        u = f"ws://127.0.0.1:{port}/v1/tts"
        for kw in ({"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}, {"uri": u + f"?token={TOKEN}"},
                   {"subprotocols": ["voxws.v1", f"bearer.{TOKEN}"]}):
            target = kw.pop("uri", u)
            ws, _ = await open_ws(target, **kw)  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "speak", "text": secret_text, "context": "s"}))
            await ws.send(json.dumps({"type": "speak", "text": secret_text * 400, "context": "t"}))  # too long
            streams, _ = await collect(ws, 2)
            assert streams["s"].end["type"] == "done" and streams["t"].end["code"] == "text_too_long"
            await ws.close()
        for kw in ({"additional_headers": {"Authorization": f"Bearer {wrong}"}}, {"uri": u + f"?token={wrong}"},
                   {"subprotocols": ["voxws.v1", f"bearer.{wrong}"]}, {"uri": u + f"?token={TOKEN}",
                                                                       "origin": "https://evil.example"}):
            target = kw.pop("uri", u)
            status = await status_of(target, **kw)  # type: ignore[arg-type]
            assert status in (401, 403)
        # A handshake the websockets library itself rejects (a malformed subprotocol list holding the
        # token, the token in the URL too): answered 400, and its error path logs no header either.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((f"GET /v1/tts?token={TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: voxws.v1, bearer.{TOKEN}, a//b\r\n"
                      "\r\n").encode())
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 400")
        writer.close()

    env = {"VOXWS_AUTH_TOKEN_FILE": token_file, "VOXWS_ALLOWED_ORIGINS": "https://app.example.com",
           "VOXWS_SYNTHETIC_STEP_BASE_MS": "2", "VOXWS_MAX_TEXT_CHARS": "1000"}
    with serve_process(env) as (proc, port):
        run(clients(port))
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    refusals = [x for x in lines if x["event"] == "handshake_refused"]
    assert sorted(x["status"] for x in refusals) == [401, 401, 401, 403]
    assert any(x["event"] == "refused" and x["code"] == "text_too_long" for x in lines)
    for needle in (TOKEN, TOKEN[:12], wrong, "zebraquartz", "说的话"):
        assert needle not in out, needle


def test_loopback_by_default_and_a_warning_for_an_open_bind_without_token(token_file: str) -> None:
    assert config.Settings().host == "127.0.0.1" and config.load({"VOXWS_ENGINE": "synthetic"}).host == "127.0.0.1"
    # Run the real CLI with the server stubbed out, so nothing binds to 0.0.0.0 here.
    probe = ("import sys, voxws.server as s; s.run = lambda settings: 0; from voxws.cli import app; "
             "app(sys.argv[1:])")

    def serve(*args: str, env: dict[str, str] | None = None) -> str:
        r = subprocess.run([sys.executable, "-c", probe, "serve", "--engine", "synthetic", "--log-format", "json",
                            *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                           env={"PATH": "/usr/bin:/bin", **(env or {})})
        assert r.returncode == 0, r.stderr
        return r.stdout

    for host in ("0.0.0.0", "::"):
        out = serve("--host", host)
        warn = [json.loads(x) for x in out.splitlines() if '"open_bind"' in x]
        assert warn and warn[0]["level"] == "warning" and warn[0]["host"] == host
        assert "VOXWS_AUTH_TOKEN_FILE" in warn[0]["advice"]
    assert "open_bind" not in serve("--host", "0.0.0.0", env={"VOXWS_AUTH_TOKEN_FILE": token_file})
    assert "open_bind" not in serve()
