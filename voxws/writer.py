"""One socket's output: the only sender and the only closer of its transport.

Frames leave in this order: the socket's own control frames (ready, pong, refusals, queued), then the
lane of the oldest open context (the head) until that context ends, then the next one's. So the audio
of different contexts never interleaves and a context's messages stay next to the audio they describe.
Closing happens here alone: after everything queued (`close`), at once on a stalled peer (`abort`),
or with 1011 if this task dies of a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog

from voxws.context import Context
from voxws.outbox import Audio

HEAD_AHEAD_S = 5.0  # unread audio of the streaming context past which its next segment waits
log = structlog.get_logger("voxws.writer")


class Transport(Protocol):
    async def send(self, data: str | bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class Writer:
    def __init__(self, transport: Transport, *, max_unsent_audio_s: float, on_first_audio: Callable[[float], None],
                 retire: Callable[[Context], None], after_final: Callable[[], None]):
        self.t = transport
        self.max_unsent_audio_s = max_unsent_audio_s
        self.on_first_audio = on_first_audio  # (seconds from the context's opening) for the TTFB metric
        self.retire = retire  # a finished head is about to send its final frame
        self.after_final = after_final
        self.order: deque[Context] = deque()  # contexts in audio delivery order
        self.control: deque[str] = deque()
        self.wake = asyncio.Event()
        self.room = asyncio.Event()  # set when audio went out: held segments may go
        self.close_code: tuple[int, str] | None = None
        self.send_started: float | None = None  # when the pending send began (stall detection)
        self.task: asyncio.Task[None] | None = None
        self._closer: asyncio.Future[None] | None = None

    def start(self, name: str) -> None:
        self.task = asyncio.create_task(self._loop(), name=name)
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A writer that dies of a bug would leave the client waiting forever: close 1011 instead."""
        if task.cancelled() or task.exception() is None or isinstance(task.exception(), ConnectionError):
            return
        log.error("writer_failed", error=repr(task.exception()))
        self._closer = asyncio.ensure_future(self.t.close(1011, "internal error"))

    async def stop(self) -> None:
        self.order.clear()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def send(self, frame: str) -> int:
        """Queue a control frame; returns how many wait."""
        self.control.append(frame)
        self.wake.set()
        return len(self.control)

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far is sent."""
        if self.close_code is None:
            self.close_code = (code, reason)
            self.wake.set()

    def abort(self, code: int, reason: str) -> None:
        """The peer stopped reading and the writer is stuck in send: close from here, now."""
        self.close_code = self.close_code or (code, reason)
        if self.task is not None:
            self.task.cancel()
        self._closer = asyncio.ensure_future(self.t.close(code, reason))

    def stalled(self, now: float, limit_s: float) -> bool:
        """Whether a send has been blocked for over limit_s (reported once)."""
        if self.send_started is not None and now - self.send_started > limit_s:
            self.send_started = None
            return True
        return False

    # -- contexts ---------------------------------------------------------------------------

    def add(self, ctx: Context) -> None:
        self.order.append(ctx)

    def remove(self, ctx: Context) -> bool:
        was_head = bool(self.order) and self.order[0] is ctx
        try:
            self.order.remove(ctx)
        except ValueError:
            return False
        if was_head and self.order:
            self.room.set()
        return True

    def notify(self, ctx: Context) -> bool:
        """ctx queued items; False when the client has left more than max_unsent_audio_s of it unread."""
        if self.order and ctx is self.order[0]:
            self.wake.set()
            return ctx.queued_seconds <= self.max_unsent_audio_s
        return True

    def over_budget(self, ctx: Context) -> bool:
        """Whether a context should hold its next segment. The head: while the client has more than
        HEAD_AHEAD_S of its audio unread (plenty to cover the next segment's prefill). Contexts behind
        it: while together they hold half the slow-consumer limit."""
        if not self.order:
            return False
        half = self.max_unsent_audio_s / 2
        if ctx is self.order[0]:
            return ctx.queued_seconds > min(HEAD_AHEAD_S, half)
        return sum(c.queued_seconds for c in itertools.islice(self.order, 1, None)) > half

    async def wait_room(self, ctx: Context, closed: Callable[[], bool]) -> None:
        # A client that reads slower than the engine makes (a real-time player) gets its next
        # segment once it catches up, instead of a pile of audio and then `slow_consumer`.
        while not closed() and self.over_budget(ctx):
            self.room.clear()
            await self.room.wait()

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        send = self.t.send
        control, order = self.control, self.order
        while True:
            self.send_started = None
            if control:
                self.send_started = time.monotonic()
                await send(control.popleft())
                continue
            if self.close_code is not None:
                code, reason = self.close_code
                await self.t.close(code, reason)
                return
            if order:
                head = order[0]
                if head.lane:
                    item = head.lane.take()
                    head.on_wire = True
                    self.send_started = time.monotonic()
                    if type(item) is Audio:
                        await send(item.payload)
                        head.sent_samples += item.samples
                        head.chunks += 1
                        self.room.set()
                        if head.first_frame_at is None and item.samples:
                            head.first_frame_at = time.perf_counter()
                            self.on_first_audio(head.first_frame_at - head.opened_at)
                    else:
                        await send(item.frame)
                    continue
                if head.outcome is not None:
                    self.retire(head)
                    self.send_started = time.monotonic()
                    await send(head.final_frame())
                    self.after_final()
                    continue
            self.wake.clear()
            await self.wake.wait()
