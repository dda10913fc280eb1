"""Admission control: the engine's surplus starvation never reaches a client stream."""

from __future__ import annotations

import asyncio
import json
import time

from tests.conftest import running, url
from tests.wsclient import collect, open_ws
from voxws.admission import Admission, Busy
from voxws.config import Settings
from voxws.engines.base import GenerateRequest
from voxws.engines.synthetic import SyntheticEngine, natural_steps

TEXT = "一二三四五六七八九十一二三四五六七八九十"  # 20 chars -> 32 steps


async def _gaps_after_first(stream) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    last = None
    worst = 0.0
    n = 0
    async for _chunk in stream:
        now = time.perf_counter()
        if last is not None:
            worst = max(worst, now - last)
        last = now
        n += 1
    return worst, n


def test_raw_engine_starves_the_surplus_like_the_real_one() -> None:
    """Without voxws's admission control, requests over max_num_seqs stall after their first chunk."""

    async def scenario() -> list[float]:
        eng = SyntheticEngine(Settings(engine="synthetic", max_num_seqs=4, synthetic_step_base_ms=10,
                                       synthetic_step_per_seq_ms=0))
        await eng.start()
        try:
            reqs = [GenerateRequest(TEXT, 100, tag=f"r{i}/0") for i in range(8)]
            results = await asyncio.gather(*(_gaps_after_first(eng.generate(r)) for r in reqs))
        finally:
            await eng.stop()
        assert all(n == natural_steps(TEXT) for _, n in results)
        return [g for g, _ in results]

    gaps = asyncio.run(scenario())
    # The first four decode every step; the other four got one chunk at prefill and then waited
    # for the whole first wave (31 decode steps of 10 ms).
    assert max(gaps[:4]) < 0.2
    assert min(gaps[4:]) > 0.25


def test_surplus_waits_in_the_queue_and_no_stream_stalls() -> None:
    async def one(u: str, i: int) -> tuple[list[dict], float, dict]:
        ws, _ = await open_ws(u)
        await ws.send(json.dumps({"type": "speak", "text": TEXT, "context": f"q{i}"}))
        queued: list[dict] = []
        worst = 0.0
        last = None
        while True:
            msg = await asyncio.wait_for(ws.recv(), 60)
            now = time.perf_counter()
            if isinstance(msg, bytes):
                if last is not None:
                    worst = max(worst, now - last)
                last = now
                continue
            obj = json.loads(msg)
            if obj["type"] == "queued":
                queued.append(obj)
            if obj["type"] in ("done", "error"):
                await ws.close()
                return queued, worst, obj

    async def scenario() -> None:
        async with running(max_num_seqs=8, max_queue=64, synthetic_step_base_ms=10,
                           synthetic_step_per_seq_ms=0) as srv:
            results = await asyncio.gather(*(one(url(srv), i) for i in range(24)))
            ends = [r[2] for r in results]
            assert all(e["type"] == "done" and e["chunks"] == natural_steps(TEXT) for e in ends)
            queued = [r[0] for r in results if r[0]]
            assert len(queued) == 16  # capacity 8: the other 16 waited their turn
            assert sorted(q[0]["position"] for q in queued) == list(range(1, 17))
            # Raw, the surplus would stall >= 0.3 s mid-stream; admitted streams get every step.
            assert max(r[1] for r in results) < 0.25, [round(r[1], 3) for r in results]
            assert srv.engine.running == 0 and srv.admission.in_use == 0

    asyncio.run(scenario())


def test_busy_past_the_queue_bound_with_retry_after() -> None:
    async def scenario() -> None:
        async with running(max_num_seqs=2, max_queue=2, synthetic_step_base_ms=20,
                           synthetic_step_per_seq_ms=0) as srv:
            ws, _ = await open_ws(url(srv))
            # max_contexts is per socket: use one socket per context.
            sockets = [ws] + [(await open_ws(url(srv)))[0] for _ in range(5)]
            for i, s in enumerate(sockets):
                await s.send(json.dumps({"type": "speak", "text": TEXT, "context": f"b{i}"}))
            outcomes = []
            for s in sockets:
                streams, _ = await collect(s)
                (st,) = streams.values()
                outcomes.append((st.end["type"], st.end.get("code"), [m["position"] for m in st.queued],
                                 st.end.get("retry_after_ms")))
                await s.close()
            assert [o[:2] for o in outcomes] == [("done", None)] * 4 + [("error", "busy")] * 2
            assert [o[2] for o in outcomes[:4]] == [[], [], [1], [2]]
            assert all(o[3] > 0 for o in outcomes[4:])

    asyncio.run(scenario())


def test_continuations_jump_the_queue() -> None:
    async def scenario() -> None:
        adm = Admission(capacity=1, max_queue=1)
        await adm.acquire()
        order: list[str] = []

        async def take(name: str, priority: bool) -> None:
            await adm.acquire(priority=priority)
            order.append(name)

        newcomer = asyncio.create_task(take("new", False))
        await asyncio.sleep(0)
        cont = asyncio.create_task(take("continuation", True))
        await asyncio.sleep(0)
        try:
            await adm.acquire()
            raise AssertionError("queue bound not enforced")
        except Busy as e:
            assert e.retry_after_ms >= 100
        adm.release()
        await asyncio.sleep(0)
        adm.release()
        await asyncio.gather(newcomer, cont)
        assert order == ["continuation", "new"]
        adm.release()
        assert adm.in_use == 0

    asyncio.run(scenario())
