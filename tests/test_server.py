"""The core service over real loopback WebSockets: messages, errors, ordering, cancel, scale."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import running, url
from tests.wsclient import collect, open_ws, run, until
from voxws.engines.synthetic import CHUNK, natural_steps, tag_hash

ZH68 = (
    "今天天气很好，我们一起去公园散步吧。路边的花开得正艳，小鸟在树上欢快"
    "地歌唱，孩子们在草地上奔跑嬉戏，大家都很开心，真是美好的一天啊！！！"
)
FAST = {"synthetic_step_base_ms": 2.0, "synthetic_step_per_seq_ms": 0.0}



def test_speak_streams_start_frames_done_with_exact_audio_ms() -> None:
    assert len(ZH68) == 68

    async def scenario() -> None:
        async with running(**FAST) as srv:
            ws, hello = await open_ws(url(srv))
            assert hello["protocol"] == "voxws.v1" and hello["engine"] == "synthetic"
            assert hello["sample_rate"] == 44100 and "pcm_s16le" in hello["formats"]
            assert set(hello["limits"]) >= {"max_text_chars", "max_contexts", "max_message_bytes", "idle_timeout_s"}
            await ws.send(json.dumps({"type": "speak", "text": ZH68, "context": "a"}))
            streams, _ = await collect(ws)
            st = streams["a"]
            assert st.start == {"type": "start", "context": "a", "format": "pcm_s16le", "sample_rate": 44100,
                                "channels": 1}
            assert st.end is not None and st.end["type"] == "done"
            assert all(len(f) == CHUNK * 2 == 14112 for f in st.frames)
            assert st.end["chunks"] == len(st.frames) == natural_steps(ZH68)
            assert st.end["audio_ms"] == int(st.audio_bytes / 2 / 44100 * 1000)
            assert st.end["text_chars"] == 68 and st.end["segments"] == 1 and st.end["ttfb_ms"] >= 0
            assert [m[2] for m in st.marks()] == list(range(len(st.frames)))  # no loss, dup or reorder
            await ws.close()

    run(scenario())


def test_plain_text_frames_queue_in_order_with_server_ids() -> None:
    async def scenario() -> None:
        async with running(**FAST) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send("第一句话。")
            await ws.send("second line")
            streams, log = await collect(ws, 2)
            starts = [m["context"] for m in log if m["type"] == "start"]
            dones = [m["context"] for m in log if m["type"] == "done"]
            assert len(set(starts)) == 2 and starts == dones
            first, second = (streams[c] for c in starts)
            assert first.end["text_chars"] == 5 and second.end["text_chars"] == len("second line")
            await ws.close()

    run(scenario())


def test_contexts_are_never_interleaved_and_keep_open_order() -> None:
    async def scenario() -> None:
        async with running(**FAST) as srv:
            ws, _ = await open_ws(url(srv))
            texts = {"long": "很长的一句话" * 8, "short": "短。", "mid": "中等长度的句子。"}
            for cid, t in texts.items():
                await ws.send(json.dumps({"type": "speak", "text": t, "context": cid}))
            streams, log = await collect(ws, 3)
            order = [m["context"] for m in log if m["type"] in ("start", "done")]
            assert order == ["long", "long", "short", "short", "mid", "mid"]
            for cid, t in texts.items():
                marks = streams[cid].marks()
                assert {m[0] for m in marks} == {tag_hash(f"{cid}/0")}  # every frame is its own
                assert [m[2] for m in marks] == list(range(natural_steps(t)))
            await ws.close()

    run(scenario())


def test_errors_keep_the_socket_usable() -> None:
    async def scenario() -> None:
        async with running(**FAST, max_text_chars=50, max_contexts=2) as srv:
            ws, _ = await open_ws(url(srv))
            cases = [
                ('{"type":"speak"', "bad_message"),
                ('{"type":"dance"}', "bad_message"),
                ('{"type":"speak","text":5}', "bad_message"),
                ('{"type":"speak","text":"hi","seed":-1}', "bad_message"),
                ('{"type":"speak","text":"hi","context":"bad id!"}', "bad_message"),
                ('{"type":"speak","text":"   ...  "}', "empty_text"),
                (json.dumps({"type": "speak", "text": "长" * 51}), "text_too_long"),
                ('{"type":"speak","text":"hi","format":"vorbis"}', "unsupported_format"),
                ('{"type":"speak","text":"hi","sample_rate":11025}', "unsupported_format"),
                ('{"type":"speak","text":"hi","voice":"nobody"}', "unknown_voice"),
                ('{"type":"flush","context":"nope"}', "unknown_context"),
                ('{"type":"cancel","context":"nope"}', "unknown_context"),
            ]
            for frame, code in cases:
                await ws.send(frame)
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["type"] == "error" and msg["code"] == code, (frame, msg)
                assert isinstance(msg["message"], str) and msg["message"]
            await ws.send(b"\x00\x01")
            msg = json.loads(await ws.recv())
            assert msg["code"] == "bad_message"
            await ws.send('{"type":"ping"}')
            assert json.loads(await ws.recv()) == {"type": "pong"}
            # context_exists and too_many_contexts
            await ws.send(json.dumps({"type": "speak", "text": "一二三四五六七八九十" * 4, "context": "x"}))
            await ws.send(json.dumps({"type": "speak", "text": "再来", "context": "x"}))
            await ws.send(json.dumps({"type": "speak", "text": "第二个", "context": "y"}))
            await ws.send(json.dumps({"type": "speak", "text": "第三个", "context": "z"}))
            _, log = await collect(ws, 4)  # two refusals, two streams
            codes = [(m.get("context"), m["code"]) for m in log if m["type"] == "error"]
            assert codes == [("x", "context_exists"), ("z", "too_many_contexts")]
            assert [m["context"] for m in log if m["type"] == "done"] == ["x", "y"]
            # and it still speaks afterwards
            await ws.send(json.dumps({"type": "speak", "text": "好的。", "context": "x"}))
            streams, _ = await collect(ws)
            assert streams["x"].end["type"] == "done"
            await ws.close()

    run(scenario())


def test_message_too_big_closes_1009_with_the_code() -> None:
    async def scenario() -> None:
        async with running(**FAST, max_message_bytes=4096) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "a" * 10_000}))
            msg = json.loads(await ws.recv())
            assert msg["code"] == "message_too_big"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009

    run(scenario())


def test_cancel_frees_the_engine_slot_within_one_step() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=20, synthetic_step_per_seq_ms=0) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "长" * 200, "context": "c"}))
            while not isinstance(await ws.recv(), bytes):
                pass
            assert srv.engine.running == 1
            await ws.send('{"type":"cancel","context":"c"}')
            while True:
                msg = await ws.recv()
                if isinstance(msg, str) and json.loads(msg)["type"] == "cancelled":
                    break
            # The slot is free before the engine's next step (counted in steps, not wall-clock time).
            step = srv.engine.steps
            await until(lambda: srv.engine.running == 0 and srv.admission.in_use == 0)
            assert srv.engine.steps - step <= 1
            end = json.loads(msg)
            assert end["context"] == "c" and end["audio_ms"] > 0
            await ws.send('{"type":"ping"}')  # nothing of the cancelled context follows
            assert json.loads(await ws.recv()) == {"type": "pong"}
            await ws.close()

    run(scenario())


def test_disconnect_mid_stream_frees_every_slot() -> None:
    async def scenario() -> None:
        async with running(synthetic_step_base_ms=10, synthetic_step_per_seq_ms=0) as srv:
            for _ in range(3):
                ws, _ = await open_ws(url(srv))
                for i in range(4):
                    await ws.send(json.dumps({"type": "speak", "text": "长" * 100, "context": f"k{i}"}))
                while not isinstance(await ws.recv(), bytes):
                    pass
                await ws.close()
            for _ in range(50):
                if srv.engine.running == 0:
                    break
                await asyncio.sleep(0.02)
            assert srv.engine.running == 0 and srv.admission.in_use == 0 and not srv.shared.sessions

    run(scenario())


def test_128_concurrent_clients_get_every_chunk() -> None:
    text = "一二三四五六七八九十，百千万。"

    async def one(u: str, i: int) -> tuple[int, list[int], dict]:
        ws, _ = await open_ws(u)
        await ws.send(json.dumps({"type": "speak", "text": text, "context": f"n{i}"}))
        streams, _ = await collect(ws, timeout=120)
        await ws.close()
        st = streams[f"n{i}"]
        return i, [m[2] for m in st.marks() if m[0] == tag_hash(f"n{i}/0")], st.end

    async def scenario() -> None:
        async with running() as srv:  # the H100 step model
            results = await asyncio.gather(*(one(url(srv), i) for i in range(128)))
            steps = natural_steps(text)
            for _i, marks, end in results:
                assert end["type"] == "done"
                assert marks == list(range(steps))
                assert end["chunks"] == steps

    run(scenario())


def test_http_routes() -> None:
    async def scenario() -> None:
        async with running(**FAST) as srv:
            base = f"http://127.0.0.1:{srv.port}"

            def get(path: str) -> tuple[int, str, str]:
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as r:
                        return r.status, r.headers["Content-Type"], r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, e.headers["Content-Type"], e.read().decode()

            loop = asyncio.get_running_loop()
            status, _, _ = await loop.run_in_executor(None, get, "/healthz")
            assert status == 200
            status, _, _ = await loop.run_in_executor(None, get, "/readyz")
            assert status == 200
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "测试。", "context": "m"}))
            await collect(ws)
            status, ctype, body = await loop.run_in_executor(None, get, "/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            assert 'voxws_contexts_total{outcome="done"} 1.0' in body
            assert "voxws_ttfb_seconds_bucket" in body and "voxws_connections_open 1.0" in body
            status, _, _ = await loop.run_in_executor(None, get, "/nope")
            assert status == 404
            srv.shared.draining = True
            status, _, body = await loop.run_in_executor(None, get, "/readyz")
            assert status == 503 and "draining" in body
            srv.shared.draining = False
            await ws.close()

    run(scenario())


def test_subprotocol_is_selected() -> None:
    async def scenario() -> None:
        async with running(**FAST) as srv, connect(url(srv), subprotocols=["voxws.v1"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "voxws.v1"
            assert json.loads(await ws.recv())["type"] == "ready"

    run(scenario())


def test_pcm_f32le_at_native_rate() -> None:
    async def scenario() -> None:
        async with running(**FAST) as srv:
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "浮点。", "context": "f", "format": "pcm_f32le"}))
            streams, _ = await collect(ws)
            st = streams["f"]
            assert st.start["format"] == "pcm_f32le"
            assert all(len(f) == CHUNK * 4 for f in st.frames)
            audio = np.frombuffer(b"".join(st.frames), "<f4")
            assert np.abs(audio[16:]).max() > 0.05  # audible, not silence
            await ws.close()

    run(scenario())
