"""Load shapes over real loopback sockets, scaled to a small machine: overload at 10x capacity, and a
storm of clients that drop mid-stream. `bench/reliability.py` runs the full-size versions and measures."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from tests.conftest import running, url
from tests.wsclient import open_ws, run, until
from voxws.engines.synthetic import natural_steps, read_mark, tag_hash


def test_overload_at_10x_capacity_busy_for_the_excess_and_complete_audio_for_the_rest() -> None:
    text = "一二三四五六七八九十" * 3  # 47 steps: ~2.4 s per wave at 50 ms a step
    steps = natural_steps(text)
    capacity, queue, clients = 8, 8, 80

    async def one(ws, i: int, order: list[tuple[str, int]]) -> dict:  # type: ignore[no-untyped-def]
        cid = f"o{i}"
        await ws.send(json.dumps({"type": "speak", "text": text, "context": cid}))
        marks: list[tuple[int, int, int]] = []
        queued = False
        while True:
            m = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(m, bytes):
                mark = read_mark(np.frombuffer(m, "<i2"))
                assert mark is not None
                marks.append(mark)
                continue
            msg = json.loads(m)
            if msg["type"] == "queued":
                queued = True
            if msg["type"] in ("done", "error"):
                order.append((msg.get("code", "done"), i))
                await ws.close()
                return {"end": msg, "marks": marks, "queued": queued, "cid": cid}

    async def scenario() -> None:
        async with running(synthetic_step_base_ms=50, synthetic_step_per_seq_ms=0, max_num_seqs=capacity,
                           devices=(0,), max_queue=queue) as srv:
            socks = [(await open_ws(url(srv)))[0] for _ in range(clients)]
            order: list[tuple[str, int]] = []
            results = await asyncio.gather(*(one(ws, i, order) for i, ws in enumerate(socks)))
            busy = [r for r in results if r["end"]["type"] == "error"]
            done = [r for r in results if r["end"]["type"] == "done"]
            assert len(busy) == clients - capacity - queue and len(done) == capacity + queue
            for r in busy:
                assert r["end"]["code"] == "busy" and r["end"]["retry_after_ms"] > 0 and not r["marks"]
            for r in done:  # every admitted context, all of its audio, in order, its own
                assert r["end"]["chunks"] == steps
                assert r["marks"] == [(tag_hash(f"{r['cid']}/0"), 0, k) for k in range(steps)]
            assert sum(r["queued"] for r in done) == queue
            # The excess was told at once: every `busy` came before the first context finished.
            first_done = next(k for k, (code, _) in enumerate(order) if code == "done")
            assert all(code == "done" for code, _ in order[first_done:])
            assert srv.engine.running == 0 and srv.admission.in_use == 0 and srv.admission.queued == 0
            assert srv.engine.dead_reason is None and srv.ready

    run(scenario())


def test_disconnect_storm_leaves_no_sequence_slot_session_or_task_behind() -> None:
    clients = 200

    async def one(u: str, i: int) -> None:
        ws, _ = await open_ws(u)
        await ws.send(json.dumps({"type": "speak", "text": "长" * 200, "context": f"d{i}"}))
        await ws.send(json.dumps({"type": "text", "text": "还有一些没说完的", "context": f"t{i}"}))
        while not isinstance(await asyncio.wait_for(ws.recv(), 120), bytes):
            pass  # mid-stream now
        if i % 2:
            ws.transport.abort()  # vanish: no close frame, TCP reset
        else:
            await ws.close()

    async def scenario() -> None:
        async with running(synthetic_step_base_ms=10, synthetic_step_per_seq_ms=0, max_num_seqs=128,
                           devices=(0, 1)) as srv:
            await asyncio.sleep(0.1)
            baseline = len(asyncio.all_tasks())
            await asyncio.gather(*(one(url(srv), i) for i in range(clients)))
            await until(lambda: not srv.shared.sessions and srv.engine.running == 0)
            assert srv.admission.in_use == 0 and srv.admission.queued == 0
            assert srv.engine.worker_loads() == [(0, 0), (0, 0)]
            assert srv.metrics.value("voxws_contexts_active") == 0
            body = srv.metrics.render().decode()
            assert f'voxws_contexts_total{{outcome="disconnected"}} {2 * clients}.0' in body
            await until(lambda: len(asyncio.all_tasks()) <= baseline)
            # And the server still serves.
            ws, _ = await open_ws(url(srv))
            await ws.send(json.dumps({"type": "speak", "text": "风暴过后。", "context": "after"}))
            while True:
                m = await asyncio.wait_for(ws.recv(), 30)
                if isinstance(m, str) and json.loads(m)["type"] == "done":
                    break
            await ws.close()

    run(scenario())
