"""Failures over real loopback sockets: one failed request, a dead engine (in-process and as a
`voxws serve` process that must exit non-zero), a crash inside one connection's handler, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import running, serve_process, url
from tests.wsclient import collect, open_ws, read_until_closed, run
from voxws.context import Context
from voxws.engines.synthetic import natural_steps, tag_hash
from voxws.session import Session

FAST = {"synthetic_step_base_ms": 2.0, "synthetic_step_per_seq_ms": 0.0}
LONG = "长" * 120  # 30 s of audio, 188 steps



def http_status(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def first_audio(ws) -> None:  # type: ignore[no-untyped-def]
    while not isinstance(await asyncio.wait_for(ws.recv(), 30), bytes):
        pass


async def read_to_close(ws, timeout: float = 30) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every JSON message until the server closes the socket."""
    out = []

    async def loop() -> None:
        try:
            while True:
                m = await ws.recv()
                if isinstance(m, str):
                    out.append(json.loads(m))
        except ConnectionClosed:
            return

    await asyncio.wait_for(loop(), timeout)
    return out


def test_engine_failure_of_one_request_fails_that_context_only() -> None:
    async def scenario() -> None:
        # max_model_len 512 makes the long text several segments: the failing one is not the first.
        async with running(**FAST, synthetic_fail_marker="FAILME", max_model_len=512) as srv:
            a, _ = await open_ws(url(srv))
            b, _ = await open_ws(url(srv))
            tail = "今天天气很好。" * 30 + "最后一句 FAILME。"
            await b.send(json.dumps({"type": "speak", "text": LONG, "context": "b"}))
            await a.send(json.dumps({"type": "speak", "text": "第一句。", "context": "a1"}))
            await a.send(json.dumps({"type": "speak", "text": "FAILME 第二句。", "context": "a2"}))
            await a.send(json.dumps({"type": "speak", "text": tail, "context": "a3"}))
            await a.send(json.dumps({"type": "speak", "text": "第四句。", "context": "a4"}))
            streams, _ = await collect(a, 4)
            assert streams["a1"].end["type"] == "done" and streams["a4"].end["type"] == "done"
            assert streams["a2"].end["code"] == "engine_error" and streams["a2"].start is None
            # A later segment failed: the audio that went out stays, the error ends the context.
            a3 = streams["a3"]
            assert a3.start is not None and a3.frames and a3.end["code"] == "engine_error"
            await a.send('{"type":"ping"}')
            assert json.loads(await a.recv()) == {"type": "pong"}
            streams, _ = await collect(b)
            assert [m[2] for m in streams["b"].marks()] == list(range(natural_steps(LONG)))
            assert srv.engine.dead_reason is None and srv.ready
            assert 'voxws_errors_total{code="engine_error"} 2.0' in srv.metrics.render().decode()
            await a.close()
            await b.close()

    run(scenario())


def test_an_exception_in_one_connections_handler_never_touches_another(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Session.handle_text

    def handle_text(self: Session, frame: str) -> None:
        if frame == "BOOM":
            raise RuntimeError("injected handler failure")
        real(self, frame)

    monkeypatch.setattr(Session, "handle_text", handle_text)

    async def scenario() -> None:
        async with running(synthetic_step_base_ms=10, synthetic_step_per_seq_ms=0) as srv:
            good, _ = await open_ws(url(srv))
            bad, _ = await open_ws(url(srv))
            await good.send(json.dumps({"type": "speak", "text": LONG, "context": "g"}))
            await bad.send(json.dumps({"type": "speak", "text": LONG, "context": "x"}))
            await first_audio(bad)
            await bad.send("BOOM")
            await read_to_close(bad)
            assert bad.close_code == 1011  # an internal error, said as such
            streams, _ = await collect(good)
            assert [m[2] for m in streams["g"].marks()] == list(range(natural_steps(LONG)))
            assert {m[0] for m in streams["g"].marks()} == {tag_hash("g/0")}
            for _ in range(100):
                if srv.engine.running == 0 and len(srv.shared.sessions) == 1:
                    break
                await asyncio.sleep(0.02)
            assert srv.engine.running == 0 and srv.admission.in_use == 0 and len(srv.shared.sessions) == 1
            await good.close()

    run(scenario())


def test_an_exception_in_a_connections_writer_closes_that_socket_1011(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Context.final_frame

    def final_frame(ctx: Context) -> str:
        if ctx.id == "boom":
            raise RuntimeError("injected writer failure")
        return real(ctx)

    monkeypatch.setattr(Context, "final_frame", final_frame)

    async def scenario() -> None:
        async with running(**FAST) as srv:
            other, _ = await open_ws(url(srv))
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "一二三。", "context": "boom"}))
            await read_to_close(ws)
            assert ws.close_code == 1011
            await other.send(json.dumps({"type": "speak", "text": "一二三。", "context": "fine"}))
            streams, _ = await collect(other)
            assert streams["fine"].end["type"] == "done"
            for _ in range(100):
                if len(srv.shared.sessions) == 1:
                    break
                await asyncio.sleep(0.02)
            assert len(srv.shared.sessions) == 1
            await other.close()

    run(scenario())


def test_a_dead_engine_fails_every_context_closes_1011_and_turns_readyz_red() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=10, synthetic_step_per_seq_ms=0,
                           synthetic_crash_after_steps=40) as srv:
            idle, _ = await open_ws(url(srv))
            clients = [(await open_ws(url(srv)))[0] for _ in range(3)]
            for i, ws in enumerate(clients):
                for j in range(2):
                    await ws.send(json.dumps({"type": "speak", "text": LONG, "context": f"c{i}-{j}"}))
            logs = await asyncio.gather(*(read_to_close(ws) for ws in [idle, *clients]))
            assert idle.close_code == 1011 and not [m for m in logs[0] if m["type"] == "error"]
            for i, (ws, log) in enumerate(zip(clients, logs[1:], strict=True)):
                assert ws.close_code == 1011
                errors = [m for m in log if m["type"] == "error"]
                assert sorted(m["context"] for m in errors) == [f"c{i}-0", f"c{i}-1"]  # each once
                assert all(m["code"] == "engine_error" for m in errors)
                assert not [m for m in log if m["type"] == "done"]
            loop = asyncio.get_running_loop()
            status, body = await loop.run_in_executor(None, http_status, srv.port, "/readyz")
            assert status == 503 and "dead" in body
            with pytest.raises(InvalidStatus) as e:
                await open_ws(url(srv))
            assert e.value.response.status_code == 503
            assert srv.exit_code != 0 and srv.engine.running == 0

    run(scenario())


def test_voxws_serve_exits_non_zero_when_the_engine_dies() -> None:
    async def clients(port: int) -> list[tuple[int | None, list[dict]]]:
        u = f"ws://127.0.0.1:{port}/v1/tts"
        socks = [(await open_ws(u))[0] for _ in range(4)]
        for i, ws in enumerate(socks):
            await ws.send(json.dumps({"type": "speak", "text": LONG, "context": f"k{i}"}))
        logs = await asyncio.gather(*(read_to_close(ws) for ws in socks))
        return [(ws.close_code, log) for ws, log in zip(socks, logs, strict=True)]

    env = {"VOXWS_SYNTHETIC_CRASH_AFTER_STEPS": "60", "VOXWS_SYNTHETIC_STEP_BASE_MS": "10"}
    with serve_process(env) as (proc, port):
        results = run(clients(port))
        code = proc.wait(30)
    out = proc.stdout.read() if proc.stdout else ""
    assert code not in (0, None), out
    for i, (close_code, log) in enumerate(results):
        assert close_code == 1011
        assert [(m["context"], m["code"]) for m in log if m["type"] == "error"] == [(f"k{i}", "engine_error")]
    assert '"engine_dead"' in out


def test_sigterm_drains_in_flight_contexts_then_exits_0() -> None:
    async def scenario(proc, port: int) -> None:  # type: ignore[no-untyped-def]
        u = f"ws://127.0.0.1:{port}/v1/tts"
        idle, _ = await open_ws(u)
        ws, _ = await open_ws(u)
        await ws.send(json.dumps({"type": "speak", "text": LONG, "context": "inflight"}))
        await first_audio(ws)
        proc.send_signal(signal.SIGTERM)
        frames = 1
        while True:  # going_away jumps ahead of the queued audio
            m = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(m, bytes):
                frames += 1
                continue
            away = json.loads(m)
            break
        assert away["type"] == "going_away" and away["deadline_ms"] == 30_000 and away["reason"]
        await ws.send(json.dumps({"type": "speak", "text": "新的。", "context": "late"}))
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, http_status, port, "/readyz")
        assert status == 503 and "draining" in body
        with pytest.raises(InvalidStatus) as e:
            await open_ws(u)
        assert e.value.response.status_code == 503
        more, log = await read_until_closed(ws)
        frames += more
        assert ws.close_code == 1001
        late = [m for m in log if m.get("context") == "late"]
        assert [m["code"] for m in late] == ["shutting_down"]
        done = [m for m in log if m["type"] == "done"]
        assert [d["context"] for d in done] == ["inflight"]
        assert done[0]["chunks"] == frames == natural_steps(LONG)  # every chunk of it, none lost
        idle_log = await read_to_close(idle)
        assert [m["type"] for m in idle_log] == ["going_away"] and idle.close_code == 1001

    env = {"VOXWS_DRAIN_TIMEOUT_S": "30", "VOXWS_SYNTHETIC_STEP_BASE_MS": "10"}
    with serve_process(env) as (proc, port):
        t0 = time.monotonic()
        run(scenario(proc, port))
        code = proc.wait(30)
        assert time.monotonic() - t0 < 30  # it did not wait for the whole drain budget
    out = proc.stdout.read() if proc.stdout else ""
    assert code == 0, out
    events = [json.loads(x)["event"] for x in out.splitlines() if x.startswith("{")]
    assert "draining" in events and events[-1] == "stopped"
