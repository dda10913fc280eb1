"""Every limit of issue 7 over real loopback sockets: echoed in `ready`, enforced with its code,
and the socket (or the server) keeps working afterwards."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import running, url
from tests.wsclient import collect, open_ws, run, until
from voxws.engines.synthetic import natural_steps

FAST = {"synthetic_step_base_ms": 2.0, "synthetic_step_per_seq_ms": 0.0}



async def next_json(ws, timeout: float = 20.0) -> dict:  # type: ignore[no-untyped-def]
    """The next text message, skipping audio."""
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(msg, str):
            return json.loads(msg)


def test_every_limit_is_echoed_in_ready() -> None:
    limits = {"max_text_chars": 321, "max_contexts": 3, "max_message_bytes": 5000, "idle_timeout_s": 42.0,
              "max_queue": 7, "rate_limit_per_s": 9.0, "max_unsent_audio_s": 11.0}

    async def scenario() -> None:
        async with running(**FAST, **limits) as srv:
            ws, hello = await open_ws(url(srv))
            for k, v in limits.items():
                assert hello["limits"][k] == v, k
            await ws.close()

    run(scenario())


def test_connections_past_the_limit_get_503_at_the_handshake_even_in_a_burst() -> None:
    async def attempt(u: str) -> object:
        try:
            ws, _ = await open_ws(u)
            return ws
        except InvalidStatus as e:
            assert e.response.headers.get("Retry-After")
            return e.response.status_code

    async def scenario() -> None:
        async with running(**FAST, max_connections=4) as srv:
            u = url(srv)
            # 20 handshakes at once: exactly 4 open, however they interleave.
            results = await asyncio.gather(*(attempt(u) for _ in range(20)))
            opened = [r for r in results if not isinstance(r, int)]
            assert len(opened) == 4 and sorted(r for r in results if isinstance(r, int)) == [503] * 16
            assert await attempt(u) == 503
            # Sessions still work, and a freed place is taken again.
            ws = opened[0]
            await ws.send(json.dumps({"type": "speak", "text": "还在。", "context": "a"}))
            streams, _ = await collect(ws)
            assert streams["a"].end["type"] == "done"
            await ws.close()
            await until(lambda: len(srv.shared.sessions) == 3)
            again = await attempt(u)
            assert not isinstance(again, int)
            for w in [*opened[1:], again]:
                await w.close()

    run(scenario())


def test_contexts_per_socket() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=20, synthetic_step_per_seq_ms=0, max_contexts=2) as srv:
            ws, _ = await open_ws(url(srv))
            for cid in ("a", "b", "c"):
                await ws.send(json.dumps({"type": "speak", "text": "一二三四五六七八" * 4, "context": cid}))
            streams, _ = await collect(ws, 3)
            assert streams["c"].end["code"] == "too_many_contexts"
            assert "2" in streams["c"].end["message"]
            assert streams["a"].end["type"] == streams["b"].end["type"] == "done"
            await ws.send(json.dumps({"type": "speak", "text": "再来。", "context": "c"}))  # room again
            streams, _ = await collect(ws)
            assert streams["c"].end["type"] == "done"
            await ws.close()

    run(scenario())


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_a_frame_over_max_message_bytes_gets_message_too_big_and_1009(kind: str) -> None:
    async def scenario() -> None:
        async with running(**FAST, max_message_bytes=4096, max_text_chars=10_000) as srv:
            other, _ = await open_ws(url(srv))
            ws, _ = await open_ws(url(srv))
            # At the limit exactly: served.
            at_limit = json.dumps({"type": "speak", "context": "ok", "text": ""})
            # Padded with spaces (collapsed before speaking), so the frame is big and the audio short.
            at_limit = at_limit.replace('"text": ""', '"text": "ok.' + " " * (4096 - len(at_limit) - 3) + '"')
            assert len(at_limit.encode()) == 4096
            await ws.send(at_limit)
            streams, _ = await collect(ws)
            assert streams["ok"].end["type"] == "done"
            await ws.send("a" * 4097 if kind == "text" else b"\x00" * 4097)
            msg = await next_json(ws)
            assert msg["type"] == "error" and msg["code"] == "message_too_big" and msg["context"] is None
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009
            await other.send(json.dumps({"type": "speak", "text": "别人没事。", "context": "o"}))
            streams, _ = await collect(other)
            assert streams["o"].end["type"] == "done"
            await other.close()

    run(scenario())


def test_text_length_limit_for_speak_and_for_incremental_text() -> None:
    async def scenario() -> None:
        async with running(**FAST, max_text_chars=40) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "长" * 40, "context": "max"}))
            await ws.send(json.dumps({"type": "speak", "text": "长" * 41, "context": "over"}))
            streams, _ = await collect(ws, 2)
            assert streams["max"].end["type"] == "done" and streams["max"].end["text_chars"] == 40
            assert streams["over"].end["code"] == "text_too_long" and "40" in streams["over"].end["message"]
            # Incremental: the piece that crosses the limit is refused; what came before is spoken in full.
            await ws.send(json.dumps({"type": "text", "text": "一" * 30, "context": "inc"}))
            await ws.send(json.dumps({"type": "text", "text": "二" * 11, "context": "inc"}))
            msg = await next_json(ws)
            assert msg["code"] == "text_too_long" and msg["context"] == "inc"
            await ws.send(json.dumps({"type": "text", "text": "三" * 10, "context": "inc"}))  # 40 in all: fine
            await ws.send(json.dumps({"type": "end", "context": "inc"}))
            streams, _ = await collect(ws)
            end = streams["inc"].end
            assert end["type"] == "done" and end["text_chars"] == 40
            assert end["chunks"] == natural_steps("一" * 30 + "三" * 10)
            await ws.close()

    run(scenario())


def test_idle_socket_gets_idle_timeout_and_close_1000_but_a_streaming_one_does_not() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=15, synthetic_step_per_seq_ms=0, idle_timeout_s=1) as srv:
            idle, _ = await open_ws(url(srv))
            busy, _ = await open_ws(url(srv))
            # ~2.4 s of streaming (160 steps x 15 ms): longer than the idle timeout, and never idle.
            await busy.send(json.dumps({"type": "speak", "text": "长" * 100, "context": "long"}))
            msg = await next_json(idle, timeout=20)
            assert msg["type"] == "error" and msg["code"] == "idle_timeout" and msg["context"] is None
            with pytest.raises(ConnectionClosed):
                await idle.recv()
            assert idle.close_code == 1000
            streams, _ = await collect(busy)
            assert streams["long"].end["type"] == "done"
            # Once its context is done, the busy socket is idle too.
            msg = await next_json(busy, timeout=20)
            assert msg["code"] == "idle_timeout"

    run(scenario())


@pytest.mark.parametrize("frame", ['{"type":"ping"}', b"\x00"])
def test_rate_limit_answers_rate_limited_and_the_socket_recovers(frame: str | bytes) -> None:
    answer = "pong" if isinstance(frame, str) else "bad_message"  # binary frames count as messages too

    async def scenario() -> None:
        async with running(**FAST, rate_limit_per_s=5) as srv:
            ws, _ = await open_ws(url(srv))
            for _ in range(40):
                await ws.send(frame)
            replies = [await next_json(ws) for _ in range(40)]
            pongs = sum(1 for r in replies if r["type"] == answer or r.get("code") == answer)
            limited = [r for r in replies if r.get("code") == "rate_limited"]
            assert pongs + len(limited) == 40
            assert 10 <= pongs < 40 and limited  # the burst (2 x rate) passes, the rest is refused
            assert "5" in limited[0]["message"]
            await asyncio.sleep(1.0)  # tokens refill
            await ws.send('{"type":"ping"}')
            assert await next_json(ws) == {"type": "pong"}
            await ws.close()

    run(scenario())


def test_admission_queue_full_answers_busy_with_retry_after() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=20, synthetic_step_per_seq_ms=0, max_num_seqs=2, max_queue=2,
                           devices=(0,)) as srv:
            ws, _ = await open_ws(url(srv))
            text = "一二三四五六七八九十" * 4  # ~1.3 s per wave: all six arrive while the first two run
            for i in range(6):
                await ws.send(json.dumps({"type": "speak", "text": text, "context": f"k{i}"}))
            streams, _ = await collect(ws, 6)
            ends = {c: s.end for c, s in streams.items()}
            busy = [c for c, e in ends.items() if e["type"] == "error"]
            assert busy == ["k4", "k5"]
            for c in busy:
                assert ends[c]["code"] == "busy" and isinstance(ends[c]["retry_after_ms"], int)
                assert ends[c]["retry_after_ms"] > 0
            assert [streams[c].queued[0]["position"] for c in ("k2", "k3")] == [1, 2]
            for c in ("k0", "k1", "k2", "k3"):
                assert ends[c]["type"] == "done" and ends[c]["chunks"] == natural_steps(text)
            assert srv.admission.in_use == 0 and srv.admission.queued == 0
            await ws.close()

    run(scenario())
