"""voxws serve with the nanovllm adapter (over the fake pool): a stream end to end, and what a
client and the process see when an engine worker dies mid-stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.test_nanovllm_adapter import FakePool, FakeTokenizer, aio, model_dir
from voxws.bench.proc import readyz
from voxws.config import Settings
from voxws.engines.nanovllm import NanoVllmEngine
from voxws.server import Server


def server(tmp_path: Path, pools: list[FakePool], **settings: Any) -> Server:
    def factory(**kw: Any) -> FakePool:
        pools.append(FakePool(kw["devices"], kw["max_model_len"], step_s=0.01))
        return pools[-1]

    s = Settings(engine="nanovllm", model_path=model_dir(tmp_path), port=0, log_format="json", **settings)
    engine = NanoVllmEngine(s, pool_factory=factory, tokenizer=FakeTokenizer(), watch_interval_s=0.05)
    return Server(s, engine=engine)


async def speak(port: int, text: str, context: str) -> tuple[Any, dict[str, Any]]:
    ws = await connect(f"ws://127.0.0.1:{port}/v1/tts", compression=None, max_size=None, open_timeout=20)
    hello = json.loads(await ws.recv())
    await ws.send(json.dumps({"type": "speak", "context": context, "text": text}))
    return ws, hello


@aio
async def test_a_stream_through_the_adapter(tmp_path: Path) -> None:
    pools: list[FakePool] = []
    srv = server(tmp_path, pools)
    await srv.start()
    try:
        ws, hello = await speak(srv.port, "我们好。", "a")
        assert hello["engine"] == "nanovllm" and hello["sample_rate"] == 44100
        frames, end = 0, None
        while end is None:
            msg = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(msg, bytes):
                assert len(msg) == 7056 * 2  # one engine step, pcm_s16le
                frames += 1
            elif json.loads(msg)["type"] in ("done", "error"):
                end = json.loads(msg)
        assert end["type"] == "done" and frames >= 1
        call = pools[0].calls[0]
        assert call["target_text"] == "我们好。" and 1 <= call["max_generate_length"] <= 2048 - 6
        await ws.close()
    finally:
        await srv.close()


@aio
async def test_a_dead_worker_fails_streams_turns_readyz_red_and_exits_non_zero(tmp_path: Path) -> None:
    pools: list[FakePool] = []
    srv = server(tmp_path, pools)
    run = asyncio.create_task(srv.serve_forever())
    try:
        while not srv.ready:
            assert not run.done(), run
            await asyncio.sleep(0.02)
        port = srv.port
        assert await asyncio.to_thread(readyz, port) == 200
        sockets = [await speak(port, "我们好。" * 20, f"c{i}") for i in range(3)]
        for ws, _ in sockets:  # every stream is under way
            while not isinstance(await asyncio.wait_for(ws.recv(), 30), bytes):
                pass
        pools[0].servers[0].die(reap_delay_s=30.0)  # the pool itself would notice only after 30 s
        errors = []
        for ws, _ in sockets:
            while True:
                msg = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(msg, str) and json.loads(msg)["type"] == "error":
                    errors.append(json.loads(msg))
                    break
        assert [e["code"] for e in errors] == ["engine_error"] * 3
        assert all("died" in e["message"] for e in errors)
        code = await asyncio.wait_for(run, 30)
        assert code != 0
    finally:
        if not run.done():
            run.cancel()
