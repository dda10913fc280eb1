"""Admission control: never more engine requests in flight than the engine decodes per step.

The real engine accepts any number of requests, but decodes only the first
`max_num_seqs` running sequences per worker: the surplus gets one chunk and then
starves for seconds. So voxws holds one slot per engine request, capacity
workers x max_num_seqs (the pool routes to the least loaded worker, so no worker
exceeds max_num_seqs), and the surplus waits here, in FIFO order, bounded by
`max_queue`. Continuation segments of contexts already streaming jump the queue
(`priority`), so an admitted stream is never starved by newcomers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class Busy(Exception):
    def __init__(self, retry_after_ms: int):
        super().__init__(f"admission queue full, retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class Admission:
    def __init__(self, capacity: int, max_queue: int):
        self.capacity = capacity
        self.max_queue = max_queue
        self.in_use = 0
        self._queue: deque[asyncio.Future[None]] = deque()  # new contexts, FIFO
        self._priority: deque[asyncio.Future[None]] = deque()  # continuations
        self._hold_s = 2.0  # running mean of how long a slot is held, for retry_after_ms

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._priority)

    def retry_after_ms(self) -> int:
        waves = (self.queued + 1) / max(1, self.capacity)
        return int(min(60_000, max(100, 1000 * self._hold_s * waves)))

    async def acquire(self, *, priority: bool = False, on_queued: Callable[[int], None] | None = None) -> None:
        """Take a slot, waiting in line if none is free. Raises Busy when the line is full."""
        if self.in_use < self.capacity and not self._priority and (priority or not self._queue):
            self.in_use += 1
            return
        line = self._priority if priority else self._queue
        if not priority and len(self._queue) >= self.max_queue:
            raise Busy(self.retry_after_ms())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(fut)
        if on_queued is not None:
            on_queued(len(self._priority) + len(self._queue) if not priority else len(self._priority))
        try:
            await fut  # the releaser counted the slot as ours
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled in the same tick: hand it on
            elif fut in line:  # release() may have dropped it already (it skips cancelled waiters)
                line.remove(fut)
            raise

    def release(self, held_s: float | None = None) -> None:
        if held_s is not None:
            self._hold_s += 0.05 * (held_s - self._hold_s)
        for line in (self._priority, self._queue):
            while line:
                fut = line.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot passes straight to the waiter
                    return
        self.in_use -= 1


class TokenBucket:
    """Control messages per second per socket (`rate_limited` past it), bursts of twice the rate."""

    def __init__(self, rate: float):
        self.rate = rate
        self.tokens = 2 * rate
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(2 * self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
