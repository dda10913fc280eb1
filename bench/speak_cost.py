"""CPU a `speak` costs the server before it reaches the engine (no sockets).

Feeds N identical `speak` frames to one Session whose transport drops everything, then waits until
every context's first segment is inside the synthetic engine. Prints microseconds per `speak` for
the two halves: `handle_text` (parse, validate, normalise, segment, open the context) and the hand-off
to the engine (producer and segment tasks, admission, sizing, engine.generate).

    .venv/bin/python bench/speak_cost.py [--n 1000] [--text-file bench/gpu/text67.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from voxws.config import Settings
from voxws.server import Server
from voxws.session import Session


class _Drop:
    async def send(self, data: str | bytes) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass


async def measure(text: str, n: int) -> tuple[float, float]:
    srv = Server(Settings(engine="synthetic", port=0, max_num_seqs=n, max_queue=n, max_contexts=n,
                          rate_limit_per_s=100_000, synthetic_step_base_ms=1000))
    await srv.start()
    session = Session(srv.shared, _Drop())
    session.start()
    frame = json.dumps({"type": "speak", "text": text})
    t0 = time.perf_counter()
    for _ in range(n):
        session.handle_text(frame)
    t1 = time.perf_counter()
    while srv.engine.running < n:
        await asyncio.sleep(0)
    t2 = time.perf_counter()
    await session.finish()
    await srv.close()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--text-file", default=str(Path(__file__).parent / "gpu" / "text67.txt"))
    a = ap.parse_args()
    text = Path(a.text_file).read_text().strip()
    handle, handoff = asyncio.run(measure(text, a.n))
    print(f"{len(text)}-character text, {a.n} speaks: handle_text {handle:.0f} us + hand-off to the engine "
          f"{handoff:.0f} us = {handle + handoff:.0f} us per speak")


if __name__ == "__main__":
    main()
