"""Helpers shared by the client and agent-framework tests: /metrics reads and server-feature probes."""

from __future__ import annotations

import asyncio
import urllib.request


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def slots_in_use(port: int) -> float:
    # In a thread: an in-process server answers /metrics on the caller's own event loop.
    return await asyncio.to_thread(metric, port, "voxws_engine_slots_in_use")


async def slots_free(port: int, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await slots_in_use(port) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("engine slots still in use")


