"""Gather a burst of requests into one engine prefill (used by every engine adapter)."""

from __future__ import annotations

import asyncio


class Coalescer:
    """Hands requests that arrive close together to the engine in one event-loop turn.

    A nano-vllm worker that is between steps takes the commands already queued (or, when
    idle, those arriving within NANOVLLM_QUEUE_COALESCE_MS = 2 ms of the first) into one
    prefill. A burst of speaks reaches the engine spread over the server's handling of each
    socket (tens of ms for 128); each slice that beats the worker became its own prefill
    step, and every prefill step stalls every stream's decode. Measured on the H100 at 128
    clients: three prefill waves, TTFB p50 275 ms against the raw engine's 174 ms. Holding
    each request until `quiet_s` passes with no new arrival (at most `max_hold_s` after the
    first) costs a lone request `quiet_s` and gives a burst one prefill, as the raw engine's.
    """

    def __init__(self, quiet_s: float = 0.002, max_hold_s: float = 0.020):
        self.quiet_s = quiet_s
        self.max_hold_s = max_hold_s
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._first = 0.0

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._waiters:
            self._first = now
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, min(self.quiet_s, self._first + self.max_hold_s - now))
        self._timer = loop.call_later(delay, self._release)
        await fut  # a cancelled waiter is simply skipped by _release

    def _release(self) -> None:
        self._timer = None
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
