"""Run a phase of requests: lanes of jobs over sockets, bounded, optionally in several processes.

A phase is a list of lanes. A lane is one client: with `fresh=False` it opens one socket
before the phase starts and sends its jobs one after another on it (closed loop); with
`fresh=True` every job opens its own socket when it is due (open loop, new users). All
lanes are connected first and then released together, so a burst of N really arrives
at once. Every phase ends by itself: when its jobs are done, at `max_duration_s` after
the start, or on ctrl-C; requests still in flight then are recorded as `stopped`.

With procs > 1 the lanes are dealt round-robin to child processes (spawned, so they do
not inherit the parent's threads); they connect, report, and start on one shared
perf_counter() instant (CLOCK_MONOTONIC is one clock for all processes on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from voxws.bench.client import ConnectFailed, StreamResult, Target, open_stream, speak_timed
from voxws.client import VoxClient

_clock = time.perf_counter
GO_DELAY_S = 0.05  # between "everyone connected" and the shared start instant


@dataclass(frozen=True)
class Job:
    id: int
    text: str
    level: Any
    at: float | None = None  # open loop: seconds after the phase start when it is due


@dataclass(frozen=True)
class Phase:
    lanes: tuple[tuple[Job, ...], ...]
    fresh: bool = False
    max_duration_s: float = 600.0

    @property
    def jobs(self) -> int:
        return sum(len(lane) for lane in self.lanes)


@dataclass
class PhaseResult:
    results: list[StreamResult]
    t_go: float
    ready: dict[str, Any] | None = None
    interrupted: bool = False  # ctrl-C
    timed_out: bool = False  # max_duration_s reached
    not_started: int = 0
    client_cpu_s: float = 0.0
    wall_s: float = 0.0
    procs: int = 1
    errors: list[str] = field(default_factory=list)  # client-side failures (a child died, ...)


async def run_lanes(
    target: Target,
    phase: Phase,
    gate: Callable[[int], Any],
    on_done: Callable[[StreamResult], None],
    stop: asyncio.Event,
) -> PhaseResult:
    """Run the lanes in this event loop. `gate(connected)` is awaited after connecting and
    returns the absolute perf_counter() instant to start at."""
    t_begin = _clock()
    lanes = phase.lanes
    conns: list[VoxClient | None] = [None] * len(lanes)
    first_conn: list[tuple[float, float] | ConnectFailed | None] = [None] * len(lanes)
    ready: dict[str, Any] = {}

    async def connect_lane(i: int) -> None:
        t = _clock()
        try:
            ws, hello = await open_stream(target)
        except ConnectFailed as e:
            first_conn[i] = e
            return
        conns[i] = ws
        first_conn[i] = (t, _clock())
        ready.setdefault("ready", hello)

    if not phase.fresh:
        await asyncio.gather(*(connect_lane(i) for i in range(len(lanes))))
    t_go = await gate(sum(c is not None for c in conns))
    await asyncio.sleep(max(0.0, t_go - _clock()))
    results: list[StreamResult] = []
    open_ws: set[VoxClient] = {c for c in conns if c is not None}

    async def lane(i: int, jobs: tuple[Job, ...]) -> None:
        ws = conns[i]
        for n, job in enumerate(jobs):
            if stop.is_set():
                return
            if job.at is not None:
                await asyncio.sleep(max(0.0, t_go + job.at - _clock()))
            res = StreamResult(job.id, job.level, len(job.text),
                               scheduled=None if job.at is None else t_go + job.at)
            results.append(res)
            first = first_conn[i]
            if n == 0 and isinstance(first, tuple):
                res.t_connect, res.t_ready = first
            if ws is None:
                if n == 0 and isinstance(first, ConnectFailed):
                    res.error, res.error_message, res.t_done = first.code, first.message, _clock()
                    on_done(res)
                    continue
                res.t_connect = _clock()
                try:
                    ws, hello = await open_stream(target)
                except ConnectFailed as e:
                    res.error, res.error_message, res.t_done = e.code, e.message, _clock()
                    on_done(res)
                    continue
                res.t_ready = _clock()
                ready.setdefault("ready", hello)
                open_ws.add(ws)
            usable = await speak_timed(ws, target, job.text, res)
            on_done(res)
            if not usable or phase.fresh:
                open_ws.discard(ws)
                await _close(ws)
                ws = None

    tasks = [asyncio.create_task(lane(i, jobs)) for i, jobs in enumerate(lanes)]
    everything = asyncio.gather(*tasks, return_exceptions=True)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([everything, stopper], timeout=max(0.0, t_go + phase.max_duration_s - _clock()),
                       return_when=asyncio.FIRST_COMPLETED)
    out = PhaseResult(results=results, t_go=t_go, interrupted=stop.is_set(),
                      timed_out=not everything.done() and not stop.is_set())
    for t in tasks:
        t.cancel()
    outcomes = await everything
    stopper.cancel()
    out.wall_s = _clock() - t_begin  # connecting included: it is client CPU too
    for r in results:
        if r.t_done is None:
            r.error, r.error_message = "stopped", "still streaming when the run stopped"
    for o in outcomes:
        if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError):
            out.errors.append(f"client lane failed: {type(o).__name__}: {o}")
    await asyncio.gather(*(_close(ws) for ws in open_ws))
    out.ready = ready.get("ready")
    out.not_started = phase.jobs - len(results)
    return out


async def _close(ws: VoxClient) -> None:
    try:
        await asyncio.wait_for(ws.close(), 2.0)
    except Exception:
        if ws.connection is not None:
            ws.connection.transport.abort()


def run_phase(target: Target, phase: Phase, procs: int = 1,
              progress: Callable[[int], None] | None = None) -> PhaseResult:
    """Run one phase to its end; ctrl-C stops it early (the result says so)."""
    procs = max(1, min(procs, len(phase.lanes)))
    if procs == 1:
        return _run_here(target, phase, progress)
    return _run_children(target, phase, procs, progress)


def _run_here(target: Target, phase: Phase, progress: Callable[[int], None] | None) -> PhaseResult:
    async def main() -> PhaseResult:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)

        async def gate(_connected: int) -> float:
            return _clock() + GO_DELAY_S

        def on_done(_r: StreamResult) -> None:
            if progress:
                progress(1)

        cpu0 = time.process_time()
        try:
            res = await run_lanes(target, phase, gate, on_done, stop)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        res.client_cpu_s = time.process_time() - cpu0
        return res

    return asyncio.run(main())


def _child_main(conn: Connection, target: Target, phase: Phase) -> None:
    """A client process: connect, report, wait for "go", run, send back the results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop, and says so

    async def main() -> PhaseResult:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        go: asyncio.Future[float] = loop.create_future()

        def on_msg() -> None:
            try:
                kind, value = conn.recv()
            except EOFError:
                kind, value = "stop", None
            if kind == "go" and not go.done():
                go.set_result(value)
            elif kind == "stop":
                stop.set()
                if not go.done():
                    go.set_result(_clock())

        loop.add_reader(conn.fileno(), on_msg)

        async def gate(connected: int) -> float:
            conn.send(("connected", connected))
            return await go

        def on_done(_r: StreamResult) -> None:
            conn.send(("done", 1))

        cpu0 = time.process_time()
        res = await run_lanes(target, phase, gate, on_done, stop)
        loop.remove_reader(conn.fileno())
        res.client_cpu_s = time.process_time() - cpu0
        return res

    conn.send(("result", asyncio.run(main())))
    conn.close()


def _run_children(target: Target, phase: Phase, procs: int,
                  progress: Callable[[int], None] | None) -> PhaseResult:
    ctx = mp.get_context("spawn")
    pipes: list[Connection] = []
    children = []
    for k in range(procs):
        parent_end, child_end = ctx.Pipe()
        part = Phase(lanes=phase.lanes[k::procs], fresh=phase.fresh, max_duration_s=phase.max_duration_s)
        p = ctx.Process(target=_child_main, args=(child_end, target, part), daemon=True)
        p.start()
        child_end.close()
        pipes.append(parent_end)
        children.append(p)
    stopped = {"flag": False}
    old = signal.signal(signal.SIGINT, lambda *_: stopped.__setitem__("flag", True))
    parts: list[PhaseResult] = []
    errors: list[str] = []
    t_go = _clock()
    try:
        waiting = set(range(procs))
        connected = 0
        live = dict(enumerate(pipes))
        while waiting and live and not stopped["flag"]:
            for c in wait(list(live.values()), timeout=0.25):
                k = pipes.index(c)  # type: ignore[arg-type]
                try:
                    kind, value = c.recv()  # type: ignore[union-attr]
                except EOFError:
                    errors.append(f"client process {k} exited before connecting")
                    live.pop(k)
                    waiting.discard(k)
                    continue
                if kind == "connected":
                    connected += value
                    waiting.discard(k)
        t_go = _clock() + GO_DELAY_S
        for c in live.values():
            c.send(("stop", None) if stopped["flag"] else ("go", t_go))
        sent_stop = stopped["flag"]
        stop_deadline: float | None = None
        while live:
            if stopped["flag"] and not sent_stop:
                for c in live.values():
                    with contextlib.suppress(OSError):
                        c.send(("stop", None))
                sent_stop = True
                stop_deadline = _clock() + 30
            if stop_deadline and _clock() > stop_deadline:
                errors.append("client processes did not stop within 30 s")
                break
            for c in wait(list(live.values()), timeout=0.25):
                k = pipes.index(c)  # type: ignore[arg-type]
                try:
                    kind, value = c.recv()  # type: ignore[union-attr]
                except EOFError:
                    errors.append(f"client process {k} died")
                    live.pop(k)
                    continue
                if kind == "done" and progress:
                    progress(value)
                elif kind == "result":
                    parts.append(value)
                    live.pop(k)
    finally:
        signal.signal(signal.SIGINT, old)
        for p in children:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    results = [r for part in parts for r in part.results]
    ready = next((part.ready for part in parts if part.ready), None)
    return PhaseResult(
        results=results, t_go=t_go, ready=ready,
        interrupted=stopped["flag"] or any(p.interrupted for p in parts),
        timed_out=any(p.timed_out for p in parts),
        not_started=phase.jobs - len(results),
        client_cpu_s=sum(p.client_cpu_s for p in parts),
        wall_s=max((p.wall_s for p in parts), default=0.0),
        procs=procs,
        errors=errors + [e for p in parts for e in p.errors],
    )
