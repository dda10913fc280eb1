#!/usr/bin/env python3
"""Reliability figures (issue 7): load shapes against a real voxws server over loopback, measured.

    .venv/bin/python bench/reliability.py                       # everything, soak 10 minutes
    .venv/bin/python bench/reliability.py --duration 60         # the CI-sized run (soak 1 minute)
    .venv/bin/python bench/reliability.py --only soak --duration 600

Scenarios (each starts its own server on a free loopback port, synthetic engine, and stops it):
- fuzz, badinput: run the hypothesis fuzz tests and the bad-input corpus test, record their counts.
- storm: 1,000 clients stream, then all drop at once (half close, half reset), three times:
  engine sequences and sessions back to 0, asyncio tasks and RSS after each storm.
- overload: 10x capacity at once: time to `busy` for the excess, complete audio for the admitted.
- slowloris: 200 handshakes that never finish: a normal client's time to first audio, with and without.
- slow: clients that stop reading: time to `slow_consumer`, engine slots freed, memory per slow client.
- crash: `voxws serve` with VOXWS_SYNTHETIC_CRASH_AFTER_STEPS under load: time to `engine_error` for
  every client, /readyz red, exit status.
- soak: 80% of capacity, closed loop, for --duration: p99 TTFB and RSS, first minute against last.

Every scenario is bounded in clients and time and stops by itself. Results go to
bench/results/reliability-<date>.json (merged by scenario, each with its commit and machine) and
the table between the markers in docs/reliability.md.

The storm, slowloris, slow and soak servers run `voxws.server.Server` as `voxws serve` does (via
`--serve-probe`), plus a probe that writes the process's asyncio task count to a file twice a second;
the crash scenario runs `voxws serve` itself, since its exit status is the point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxws.bench.proc import free_port, stop, wait_ready  # noqa: E402
from voxws.bench.report import machine, write_marked_block  # noqa: E402
from voxws.engines.synthetic import natural_steps, read_mark, tag_hash  # noqa: E402

VOXWS = str(Path(sys.executable).with_name("voxws"))
DOC_BEGIN, DOC_END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
SCENARIOS = ("fuzz", "badinput", "storm", "overload", "slowloris", "slow", "crash", "soak")
SHORT = "今天天气很好，我们一起去公园散步吧。"  # 17 characters, 4.25 s of audio
_clock = time.perf_counter


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def stats_ms(xs: list[float]) -> dict[str, float | None]:
    """Seconds in, milliseconds out."""
    ms = [x * 1000 for x in xs]
    return {"n": len(ms), "p50": pct(ms, 50), "p99": pct(ms, 99), "max": max(ms) if ms else None}


# -- the server under test -------------------------------------------------


class ServerProc:
    """A voxws server subprocess on a free loopback port; its log goes to a file."""

    def __init__(self, env: dict[str, str], real_cli: bool = False):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="voxws-rel-"))
        self.log_path = self.dir / "server.log"
        self.probe_path = self.dir / "probe.json"
        full = {**os.environ, "VOXWS_ENGINE": "synthetic", "VOXWS_HOST": "127.0.0.1", "VOXWS_PORT": str(self.port),
                "VOXWS_LOG_FORMAT": "json", "VOXWS_PROBE_FILE": str(self.probe_path), **env}
        cmd = [VOXWS, "serve"] if real_cli else [sys.executable, __file__, "--serve-probe"]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=full, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.ps = psutil.Process(self.proc.pid)
        self.url = f"ws://127.0.0.1:{self.port}/v1/tts"
        wait_ready(self.port, self.proc, log=self.log_path)

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.http("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def probe(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.probe_path.read_text()))
        except (OSError, ValueError):
            return {}

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self) -> int:
        code = stop(self.proc)
        self._log.close()
        return code


@contextlib.contextmanager
def server(env: dict[str, str], real_cli: bool = False) -> Iterator[ServerProc]:
    s = ServerProc(env, real_cli)
    try:
        yield s
    finally:
        s.stop()


def serve_probe() -> int:
    """`voxws serve`, plus the asyncio task count written to $VOXWS_PROBE_FILE twice a second."""
    from voxws import config, logs
    from voxws.server import Server

    settings = config.load()
    logs.configure(settings.log_format)
    path = Path(os.environ["VOXWS_PROBE_FILE"])
    traced = os.environ.get("VOXWS_PROBE_TRACEMALLOC") == "1"
    if traced:  # the Python heap itself, so that a leak is told from the allocator's high-water mark
        import gc
        import tracemalloc

        tracemalloc.start(1)

    async def main() -> int:
        srv = Server(settings)

        async def probe() -> None:
            while True:
                data = {"tasks": len(asyncio.all_tasks()), "sessions": len(srv.shared.sessions),
                        "engine_running": srv.engine.running, "slots": srv.admission.in_use,
                        "queued": srv.admission.queued, "t": time.time()}
                if traced and not srv.shared.sessions:  # measured when idle only: a collection is not free
                    gc.collect()
                    data["traced"] = tracemalloc.get_traced_memory()[0]
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data))
                tmp.replace(path)
                await asyncio.sleep(0.5)

        task = asyncio.get_running_loop().create_task(probe())
        try:
            return await srv.serve_forever()
        finally:
            task.cancel()

    return asyncio.run(main())


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Seconds it took for cond() to hold; raises TimeoutError past the timeout."""
    t0 = _clock()
    while not cond():
        if _clock() - t0 > timeout:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(step)
    return _clock() - t0


async def ws_open(u: str, **kw: Any) -> ClientConnection:
    ws = await connect(u, compression=None, max_size=None, open_timeout=60, close_timeout=5, **kw)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert hello["type"] == "ready"
    return ws


def speak(text: str, context: str) -> str:
    return json.dumps({"type": "speak", "text": text, "context": context})


# -- fuzz and bad input: the tests themselves ----------------------------


def run_pytest(files: list[str]) -> dict[str, Any]:
    t0 = _clock()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *files],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    return {"ok": r.returncode == 0, "wall_s": _clock() - t0, "summary": tail, "stdout": r.stdout}


def scenario_fuzz(args: argparse.Namespace) -> dict[str, Any]:
    r = run_pytest(["tests/test_fuzz_protocol.py", "tests/test_fuzz_session.py"])
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"fuzz (\w+): (\d+)", r["stdout"])}
    total = sum(counts.values())
    return {"ok": r["ok"], "wall_s": r["wall_s"], "summary": r["summary"], "counts": counts, "total": total,
            "pass": r["ok"] and total >= 100_000}


def scenario_badinput(args: argparse.Namespace) -> dict[str, Any]:
    from tests.test_reliability_badinput import CORPUS

    r = run_pytest(["tests/test_reliability_badinput.py"])
    closing = 6  # the parametrised frames that close the socket (1007, 1009)
    return {"ok": r["ok"], "wall_s": r["wall_s"], "summary": r["summary"], "cases": len(CORPUS) + 1 + closing,
            "pass": r["ok"]}


# -- disconnect storm --------------------------------------------------------


async def _storm_round(srv: ServerProc, clients: int) -> dict[str, Any]:
    drop = asyncio.Event()
    streaming = 0
    connect_gate = asyncio.Semaphore(100)  # handshakes in flight at once (the listen backlog is 100)

    async def one(i: int) -> bool:
        nonlocal streaming
        async with connect_gate:
            ws = await ws_open(srv.url, max_queue=4)
        await ws.send(speak("长" * 200, f"d{i}"))
        await ws.send(json.dumps({"type": "text", "text": "还有一些没说完的", "context": f"t{i}"}))
        got = False
        reader = None

        async def read() -> None:
            nonlocal got, streaming
            with contextlib.suppress(ConnectionClosed):
                async for m in ws:
                    if isinstance(m, bytes) and not got:
                        got = True
                        streaming += 1

        reader = asyncio.create_task(read())
        await drop.wait()
        if i % 2:
            ws.transport.abort()  # vanish: TCP reset, no close frame
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
        reader.cancel()
        return got

    tasks = [asyncio.create_task(one(i)) for i in range(clients)]
    t0 = _clock()
    await until(lambda: streaming >= clients, timeout=300)
    all_streaming_s = _clock() - t0
    drop.set()
    got = await asyncio.gather(*tasks)
    t_drop = _clock()
    settle_s = await until(lambda: srv.probe().get("sessions") == 0 and srv.probe().get("engine_running") == 0
                           and srv.probe().get("slots") == 0 and srv.probe().get("t", 0) > time.time() - 1.5,
                           timeout=120, step=0.05)
    await asyncio.sleep(2.0)  # let the allocator and the probe settle
    p = srv.probe()
    return {"clients": clients, "mid_stream": sum(got), "all_streaming_s": all_streaming_s, "settle_s": settle_s,
            "drop_to_idle_s": _clock() - t_drop - 2.0, "tasks": p.get("tasks"), "rss": srv.rss(),
            "traced": p.get("traced"),
            "engine_running": p.get("engine_running"), "slots": p.get("slots"), "sessions": p.get("sessions")}


def scenario_storm(args: argparse.Namespace) -> dict[str, Any]:
    n = args.storm_clients
    env = {"VOXWS_PROBE_TRACEMALLOC": "1", "VOXCPM_MAX_NUM_SEQS": "512", "VOXCPM_DEVICES": "0,1",
           "VOXWS_MAX_QUEUE": str(n),
           "VOXWS_MAX_CONNECTIONS": str(n + 100), "VOXWS_SYNTHETIC_STEP_BASE_MS": "500",
           "VOXWS_SYNTHETIC_STEP_PER_SEQ_MS": "0"}

    async def go(srv: ServerProc) -> dict[str, Any]:
        cold = {"tasks": srv.probe().get("tasks"), "rss": srv.rss()}
        rounds = [await _storm_round(srv, n) for _ in range(args.storm_rounds)]
        return {"cold": cold, "rounds": rounds}

    with server(env) as srv:
        res = asyncio.run(go(srv))
        m = srv.metrics()
    rounds = res["rounds"]
    # The first storms raise the allocator's high-water mark (buffers for n sockets at once); a leak shows
    # as growth from storm to storm after that. Steady state: from the second storm on.
    ref = rounds[1]["rss"]
    growth = [(r["rss"] - ref) / ref for r in rounds[2:]]
    res.update({
        "clients": n, "rss_growth_from_second": growth,
        "disconnected_contexts": m.get('voxws_contexts_total{outcome="disconnected"}'),
        "pass": all(r["mid_stream"] == n and r["engine_running"] == 0 and r["sessions"] == 0 and r["slots"] == 0
                    and r["tasks"] <= rounds[0]["tasks"] for r in rounds) and max(growth) < 0.10,
    })
    return res


# -- overload ----------------------------------------------------------------


def scenario_overload(args: argparse.Namespace) -> dict[str, Any]:
    seqs, queue = 32, 32
    clients = 10 * seqs
    env = {"VOXCPM_MAX_NUM_SEQS": str(seqs), "VOXCPM_DEVICES": "0", "VOXWS_MAX_QUEUE": str(queue)}
    steps = natural_steps(SHORT)

    async def one(ws: ClientConnection, i: int, go: asyncio.Event) -> dict[str, Any]:
        cid = f"o{i}"
        await go.wait()
        t0 = _clock()
        await ws.send(speak(SHORT, cid))
        r: dict[str, Any] = {"queued": False, "marks_ok": True, "frames": 0}
        want = tag_hash(f"{cid}/0")
        while True:
            m = await asyncio.wait_for(ws.recv(), 300)
            if isinstance(m, bytes):
                mark = read_mark(np.frombuffer(m, "<i2"))
                r["marks_ok"] &= mark == (want, 0, r["frames"])
                if r["frames"] == 0:
                    r["ttfb_s"] = _clock() - t0
                r["frames"] += 1
                continue
            msg = json.loads(m)
            if msg["type"] == "queued":
                r["queued"] = True
            elif msg["type"] in ("done", "error"):
                r["end"] = msg
                r["end_s"] = _clock() - t0
                await ws.close()
                return r

    async def go(srv: ServerProc) -> list[dict[str, Any]]:
        socks = [await ws_open(srv.url) for _ in range(clients)]
        start = asyncio.Event()
        tasks = [asyncio.create_task(one(ws, i, start)) for i, ws in enumerate(socks)]
        await asyncio.sleep(0.5)
        start.set()
        return await asyncio.gather(*tasks)

    with server(env) as srv:
        results = asyncio.run(go(srv))
        alive = srv.http("/readyz")[0] == 200
    busy = [r for r in results if r["end"]["type"] == "error"]
    done = [r for r in results if r["end"]["type"] == "done"]
    complete = [r for r in done if r["frames"] == steps and r["end"]["chunks"] == steps and r["marks_ok"]]
    first_wave = [r["ttfb_s"] for r in done if not r["queued"]]
    second_wave = [r["ttfb_s"] for r in done if r["queued"]]
    busy_ms = stats_ms([r["end_s"] for r in busy])
    return {
        "capacity": seqs, "max_queue": queue, "clients": clients, "busy": len(busy),
        "busy_codes": sorted({r["end"].get("code") for r in busy}), "admitted": len(done),
        "admitted_complete": len(complete), "busy_latency_ms": busy_ms,
        "ttfb_first_wave_ms": stats_ms(first_wave), "ttfb_queued_ms": stats_ms(second_wave),
        "retry_after_ms": sorted({r["end"].get("retry_after_ms") for r in busy})[:3], "ready_after": alive,
        "first_done_ms": min(r["end_s"] for r in done) * 1000,
        # "At once": no busy client waited for a slot to free, i.e. every `busy` came before the first `done`.
        "pass": len(busy) == clients - seqs - queue and len(complete) == len(done) == seqs + queue and alive
        and (busy_ms["max"] or 0) < min(r["end_s"] for r in done) * 1000,
    }


# -- slowloris ---------------------------------------------------------------


def scenario_slowloris(args: argparse.Namespace) -> dict[str, Any]:
    n_loris, n_probe = 200, 40
    env = {"VOXCPM_MAX_NUM_SEQS": "32", "VOXCPM_DEVICES": "0"}

    async def probe_once(u: str, i: int) -> tuple[float, float]:
        t0 = _clock()
        ws = await ws_open(u)
        t1 = _clock()
        await ws.send(speak("你好。", f"p{i}"))
        while not isinstance(await asyncio.wait_for(ws.recv(), 30), bytes):
            pass
        t2 = _clock()
        await ws.close()
        return t2 - t0, t2 - t1  # connect -> first audio, speak -> first audio

    async def loris(port: int, stop: asyncio.Event, closed: list[float], t0: float) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /v1/tts HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        await w.drain()
        while not stop.is_set():
            try:
                w.write(b"X-Slow: 1\r\n")  # a header line now and then, never the blank line
                await w.drain()
                if await asyncio.wait_for(r.read(1), 1.0) == b"" or r.at_eof():
                    closed.append(_clock() - t0)
                    return
            except asyncio.TimeoutError:
                continue
            except OSError:
                closed.append(_clock() - t0)
                return
        w.close()

    async def go(srv: ServerProc) -> dict[str, Any]:
        for i in range(5):  # warm up
            await probe_once(srv.url, 1000 + i)
        base = [await probe_once(srv.url, i) for i in range(n_probe)]
        stop = asyncio.Event()
        closed: list[float] = []
        t0 = _clock()
        lorises = [asyncio.create_task(loris(srv.port, stop, closed, t0)) for _ in range(n_loris)]
        await asyncio.sleep(1.0)
        under = [await probe_once(srv.url, 100 + i) for i in range(n_probe)]
        window_s = _clock() - t0
        with contextlib.suppress(TimeoutError):
            await until(lambda: len(closed) == n_loris, timeout=20)
        stop.set()
        await asyncio.gather(*lorises, return_exceptions=True)
        return {"base": base, "under": under, "closed": closed, "window_s": window_s}

    with server(env) as srv:
        r = asyncio.run(go(srv))
    b_first, u_first = [x[0] for x in r["base"]], [x[0] for x in r["under"]]
    b_speak, u_speak = [x[1] for x in r["base"]], [x[1] for x in r["under"]]
    out = {
        "slow_handshakes": n_loris, "probes": n_probe, "probes_window_s": r["window_s"],
        "connect_to_audio_ms": {"without": stats_ms(b_first), "with": stats_ms(u_first)},
        "speak_to_audio_ms": {"without": stats_ms(b_speak), "with": stats_ms(u_speak)},
        "slow_handshakes_dropped": len(r["closed"]), "dropped_after_s": stats_ms(r["closed"]),
    }
    d50 = out["connect_to_audio_ms"]["with"]["p50"] - out["connect_to_audio_ms"]["without"]["p50"]
    d99 = out["connect_to_audio_ms"]["with"]["p99"] - out["connect_to_audio_ms"]["without"]["p99"]
    out.update({"delay_p50_ms": d50, "delay_p99_ms": d99, "pass": d50 <= 50})
    return out


# -- slow consumers ----------------------------------------------------------


def scenario_slow(args: argparse.Namespace) -> dict[str, Any]:
    n, unsent_s = 20, 10
    env = {"VOXCPM_MAX_NUM_SEQS": "32", "VOXCPM_DEVICES": "0", "VOXWS_MAX_UNSENT_AUDIO_S": str(unsent_s),
           "VOXWS_SYNTHETIC_STEP_BASE_MS": "2", "VOXWS_SYNTHETIC_STEP_PER_SEQ_MS": "0"}

    async def go(srv: ServerProc) -> dict[str, Any]:
        rss0 = srv.rss()
        socks = [await ws_open(srv.url, max_queue=1) for _ in range(n)]
        t0 = _clock()
        for i, ws in enumerate(socks):
            await ws.send(speak("长" * 5000, f"s{i}"))  # 1,250 s of audio each, never read
        peak = rss0
        while True:
            peak = max(peak, srv.rss())
            m = srv.metrics()
            if m.get("voxws_slow_consumers_total", 0) >= n and m.get("voxws_engine_slots_in_use", 1) == 0:
                break
            if _clock() - t0 > 120:
                raise TimeoutError("slow consumers not cut off")
            await asyncio.sleep(0.05)
        cut_s = _clock() - t0
        gone_s = await until(lambda: srv.probe().get("sessions") == 0, timeout=60)
        codes = []
        for ws in socks:
            frames = 0
            with contextlib.suppress(ConnectionClosed, asyncio.TimeoutError):
                while True:
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(msg, bytes):
                        frames += 1
            codes.append(ws.close_code)
        return {"rss0": rss0, "peak": peak, "cut_s": cut_s, "gone_s": cut_s + gone_s, "close_codes": codes,
                "rss_after": srv.rss()}

    with server(env) as srv:
        r = asyncio.run(go(srv))
    per_client = (r["peak"] - r["rss0"]) / n
    bound = unsent_s * 44100 * 2 + 4 * 2**20  # the unsent-audio limit + socket buffers and slack
    return {"clients": n, "max_unsent_audio_s": unsent_s, "all_cut_off_s": r["cut_s"],
            "all_disconnected_s": r["gone_s"], "close_codes": sorted({int(c) for c in r["close_codes"] if c}),
            "rss_peak_growth_per_client_mb": per_client / 2**20, "rss_bound_per_client_mb": bound / 2**20,
            "pass": per_client <= bound and set(r["close_codes"]) <= {1008, 1006}}


# -- engine crash ------------------------------------------------------------


def scenario_crash(args: argparse.Namespace) -> dict[str, Any]:
    n = 50
    env = {"VOXCPM_MAX_NUM_SEQS": "128", "VOXCPM_DEVICES": "0", "VOXWS_SYNTHETIC_CRASH_AFTER_STEPS": "150"}

    async def one(ws: ClientConnection, i: int) -> dict[str, Any]:
        await ws.send(speak("长" * 120, f"k{i}"))
        await ws.send(speak("长" * 120, f"q{i}"))  # a second context, waiting its turn
        r: dict[str, Any] = {"last_audio": None, "errors": [], "first_audio": None}
        with contextlib.suppress(ConnectionClosed):
            while True:
                m = await asyncio.wait_for(ws.recv(), 60)
                now = _clock()
                if isinstance(m, bytes):
                    r["last_audio"] = now
                    r["first_audio"] = r["first_audio"] or now
                    continue
                msg = json.loads(m)
                if msg["type"] == "error":
                    r["errors"].append((now, msg["code"], msg["context"]))
        r["closed"] = _clock()
        r["close_code"] = ws.close_code
        return r

    readyz: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll(srv: ServerProc) -> None:
        while not stop.is_set():
            readyz.append((_clock(), srv.http("/readyz")[0]))
            time.sleep(0.01)

    async def go(srv: ServerProc) -> list[dict[str, Any]]:
        socks = [await ws_open(srv.url) for _ in range(n)]
        return await asyncio.gather(*(one(ws, i) for i, ws in enumerate(socks)))

    srv = ServerProc(env, real_cli=True)
    poller = threading.Thread(target=poll, args=(srv,), daemon=True)
    poller.start()
    try:
        results = asyncio.run(go(srv))
        code = srv.proc.wait(60)
        exited = _clock()
    finally:
        stop.set()
        poller.join()
        srv.stop()
    crash = max(r["last_audio"] for r in results if r["last_audio"])  # the last step before the worker died
    err_lat = [max(t for t, _, _ in r["errors"]) - crash for r in results if r["errors"]]
    every = all(sorted(c for _, _, c in r["errors"]) == sorted([f"k{i}", f"q{i}"])
                and {code for _, code, _ in r["errors"]} == {"engine_error"} for i, r in enumerate(results))
    red = next((t for t, s in readyz if t >= crash - 0.05 and s != 200), None)
    return {"clients": n, "contexts": 2 * n, "every_context_got_engine_error": every,
            "engine_error_after_crash_ms": stats_ms(err_lat),
            "close_codes": sorted({int(r["close_code"]) for r in results if r["close_code"]}),
            "readyz_red_after_ms": None if red is None else (red - crash) * 1000,
            "exit_status": code, "exit_after_crash_s": exited - crash,
            "pass": every and max(err_lat) < 1.0 and code != 0 and {r["close_code"] for r in results} == {1011}}


# -- soak --------------------------------------------------------------------


def scenario_soak(args: argparse.Namespace) -> dict[str, Any]:
    seqs = 16
    lanes = round(0.8 * seqs)
    duration = args.duration
    window = min(60.0, duration / 3)
    env = {"VOXCPM_MAX_NUM_SEQS": str(seqs), "VOXCPM_DEVICES": "0"}
    texts = [SHORT, "你好，欢迎使用语音合成服务。", "The quick brown fox jumps over the lazy dog.",
             "一二三四五六七八九十，十九八七六五四三二一。"]
    records: list[tuple[float, float | None, bool]] = []  # (start since t0, ttfb, ok)
    samples: list[tuple[float, int, int | None, float]] = []  # (t, rss, tasks, CPU s of other processes)

    async def lane(srv: ServerProc, k: int, t0: float) -> None:
        i = 0
        while _clock() - t0 < duration:
            ws = await ws_open(srv.url)
            try:
                for _ in range(20):  # a new socket every 20 requests: handshakes are part of the day
                    if _clock() - t0 >= duration:
                        break
                    text = texts[(k + i) % len(texts)]
                    start = _clock()
                    await ws.send(speak(text, f"l{k}-{i}"))
                    i += 1
                    ttfb, ok, frames = None, False, 0
                    while True:
                        m = await asyncio.wait_for(ws.recv(), 60)
                        if isinstance(m, bytes):
                            frames += 1
                            ttfb = ttfb if ttfb is not None else _clock() - start
                            continue
                        msg = json.loads(m)
                        if msg["type"] in ("done", "error"):
                            ok = msg["type"] == "done" and frames == natural_steps(text) == msg["chunks"]
                            break
                    records.append((start - t0, ttfb, ok))
            finally:
                await ws.close()

    def other_cpu_s(srv: ServerProc) -> float:
        """CPU seconds the machine spent outside the server and this client: other jobs disturb TTFB."""
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return float(busy - srv.cpu_s() - time.process_time())

    async def sampler(srv: ServerProc, t0: float) -> None:
        while _clock() - t0 < duration:
            samples.append((_clock() - t0, srv.rss(), srv.probe().get("tasks"), other_cpu_s(srv)))
            await asyncio.sleep(2.0)

    async def go(srv: ServerProc) -> None:
        t0 = _clock()
        await asyncio.gather(sampler(srv, t0), *(lane(srv, k, t0) for k in range(lanes)))

    with server(env) as srv:
        cpu0 = srv.cpu_s()
        asyncio.run(go(srv))
        cpu = srv.cpu_s() - cpu0
    first = [r for r in records if r[0] < window]
    last = [r for r in records if r[0] >= duration - window]

    def win(rs: list[tuple[float, float | None, bool]], lo: float, hi: float) -> dict[str, Any]:
        ttfb = [r[1] for r in rs if r[1] is not None]
        rss = [s[1] for s in samples if lo <= s[0] < hi]
        tasks = [s[2] for s in samples if lo <= s[0] < hi and s[2] is not None]
        inside = [s for s in samples if lo <= s[0] < hi]
        other = (inside[-1][3] - inside[0][3]) / (inside[-1][0] - inside[0][0]) if len(inside) > 1 else None
        return {"requests": len(rs), "ttfb_ms": stats_ms(ttfb), "rss_mb": float(np.mean(rss)) / 2**20 if rss else None,
                "tasks_max": max(tasks) if tasks else None, "other_cpu_cores": other}

    a, b = win(first, 0, window), win(last, duration - window, duration + 1)
    p99_change = (b["ttfb_ms"]["p99"] - a["ttfb_ms"]["p99"]) / a["ttfb_ms"]["p99"]
    rss_change = (b["rss_mb"] - a["rss_mb"]) / a["rss_mb"]
    minutes = [win([r for r in records if k * 60 <= r[0] < (k + 1) * 60], k * 60, (k + 1) * 60)
               for k in range(max(1, int(duration // 60)))]
    return {"duration_s": duration, "window_s": window, "capacity": seqs, "lanes": lanes,
            "per_minute": [{"ttfb_p99_ms": m["ttfb_ms"]["p99"], "rss_mb": m["rss_mb"], "requests": m["requests"],
                            "other_cpu_cores": m["other_cpu_cores"]} for m in minutes],
            "requests": len(records), "failed": sum(1 for r in records if not r[2]), "first": a, "last": b,
            "ttfb_p99_change": p99_change, "rss_change": rss_change, "server_cpu_share": cpu / duration,
            "pass": not any(not r[2] for r in records) and p99_change < 0.25 and rss_change < 0.10}


# -- results and docs ---------------------------------------------------------


def fmt(v: float | None, spec: str = ".0f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, criterion, measured, verdict) per scenario present."""
    out = []
    s = doc["scenarios"]
    ok = lambda r: "PASS" if r.get("pass") else "MISS"  # noqa: E731
    if "fuzz" in s:
        r = s["fuzz"]
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(r["counts"].items()))
        out.append(("Fuzzing (hypothesis: parser and session state machine)",
                    ">= 100,000 generated messages, no exception, every reply valid, socket usable",
                    f"{r['total']:,} messages ({parts}) in {r['wall_s']:.0f} s; {r['summary']}", ok(r)))
    if "badinput" in s:
        r = s["badinput"]
        out.append(("Bad-input corpus over a real socket", "each case its documented code; others served",
                    f"{r['cases']} cases; {r['summary']}", ok(r)))
    if "storm" in s:
        r = s["storm"]
        rr = r["rounds"]
        out.append((f"Disconnect storm ({r['clients']:,} clients drop mid-stream at once, {len(rr)} storms in a row)",
                    "engine sequences back to 0, no task leak, RSS growth < 10%",
                    f"{min(x['mid_stream'] for x in rr):,}/{r['clients']:,} streaming when dropped; idle again "
                    f"{max(x['drop_to_idle_s'] for x in rr):.1f} s after the drop at most (sequences "
                    f"{max(x['engine_running'] for x in rr)}, slots {max(x['slots'] for x in rr)}, sessions "
                    f"{max(x['sessions'] for x in rr)}); asyncio tasks {', '.join(str(x['tasks']) for x in rr)} "
                    f"after each; RSS {r['cold']['rss'] / 2**20:.0f} MB cold, "
                    f"{', '.join(str(round(x['rss'] / 2**20)) for x in rr)} MB after each storm: "
                    f"{max(r['rss_growth_from_second']):+.1%} at most from the second storm on; Python heap "
                    f"(tracemalloc) {', '.join(fmt((x.get('traced') or 0) / 2**20, '.2f') for x in rr)} MB", ok(r)))
    if "overload" in s:
        r = s["overload"]
        out.append((f"Overload (10x capacity: {r['clients']} at once on {r['capacity']} slots + "
                    f"{r['max_queue']} queue)", "excess gets `busy` at once; every admitted context complete",
                    f"{r['busy']} busy (p50 {fmt(r['busy_latency_ms']['p50'], '.1f')} ms, max "
                    f"{fmt(r['busy_latency_ms']['max'], '.1f')} ms after `speak`, first `done` at "
                    f"{r['first_done_ms']:.0f} ms); {r['admitted_complete']}/"
                    f"{r['admitted']} admitted complete, every chunk in order; TTFB p50 "
                    f"{fmt(r['ttfb_first_wave_ms']['p50'])} ms (first wave), "
                    f"{fmt(r['ttfb_queued_ms']['p50'])} ms (queued); server ready after", ok(r)))
    if "slowloris" in s:
        r = s["slowloris"]
        w, u = r["connect_to_audio_ms"]["without"], r["connect_to_audio_ms"]["with"]
        out.append((f"Slowloris ({r['slow_handshakes']} handshakes that never finish)",
                    "a normal client's first audio delayed <= 50 ms",
                    f"connect-to-first-audio p50 {fmt(w['p50'], '.1f')} -> {fmt(u['p50'], '.1f')} ms "
                    f"({r['delay_p50_ms']:+.1f}), p99 {fmt(w['p99'], '.1f')} -> {fmt(u['p99'], '.1f')} ms "
                    f"({r['delay_p99_ms']:+.1f}), {r['probes']} probes each; {r['slow_handshakes_dropped']} slow "
                    f"handshakes dropped by the server after {fmt(r['dropped_after_s']['p50'] / 1000, '.1f')} s",
                    ok(r)))
    if "slow" in s:
        r = s["slow"]
        out.append((f"Slow consumers ({r['clients']} clients stop reading, limit "
                    f"{r['max_unsent_audio_s']} s of audio)", "cut off with `slow_consumer`, 1008; memory bounded",
                    f"all cut off {r['all_cut_off_s']:.1f} s after `speak` (engine slots free), all disconnected "
                    f"after {r['all_disconnected_s']:.1f} s, close codes {r['close_codes']}; peak RSS "
                    f"{r['rss_peak_growth_per_client_mb']:.2f} MB per slow client (bound "
                    f"{r['rss_bound_per_client_mb']:.1f} MB)", ok(r)))
    if "crash" in s:
        r = s["crash"]
        out.append(("Engine crash (`VOXWS_SYNTHETIC_CRASH_AFTER_STEPS` mid-stream)",
                    "every client `engine_error` within 1 s; exit non-zero",
                    f"{r['contexts']} contexts on {r['clients']} sockets: every one got `engine_error` "
                    f"(max {fmt(r['engine_error_after_crash_ms']['max'], '.0f')} ms after the last audio), close "
                    f"{r['close_codes']}; /readyz 503 after {fmt(r['readyz_red_after_ms'], '.0f')} ms; "
                    f"`voxws serve` exit status {r['exit_status']} after {r['exit_after_crash_s']:.2f} s", ok(r)))
    if "soak" in s:
        r = s["soak"]
        a, b = r["first"], r["last"]
        out.append((f"Soak ({r['duration_s'] / 60:g} min at 80% of capacity: {r['lanes']} of {r['capacity']})",
                    "p99 TTFB and RSS flat, first window against last",
                    f"{r['requests']:,} requests, {r['failed']} failed; {r['window_s']:.0f} s windows: TTFB p99 "
                    f"{fmt(a['ttfb_ms']['p99'])} -> {fmt(b['ttfb_ms']['p99'])} ms ({r['ttfb_p99_change']:+.1%}), "
                    f"p50 {fmt(a['ttfb_ms']['p50'])} -> {fmt(b['ttfb_ms']['p50'])} ms; RSS "
                    f"{a['rss_mb']:.1f} -> {b['rss_mb']:.1f} MB ({r['rss_change']:+.1%}); tasks "
                    f"{a['tasks_max']} -> {b['tasks_max']}"
                    + (f"; by minute: RSS {', '.join(fmt(m['rss_mb'], '.1f') for m in r['per_minute'])} MB, TTFB "
                       f"p99 {', '.join(fmt(m['ttfb_p99_ms']) for m in r['per_minute'])} ms, CPU of other jobs "
                       f"{', '.join(fmt(m.get('other_cpu_cores'), '.2f') for m in r['per_minute'])} cores"
                       if len(r.get("per_minute", [])) > 2 else ""), ok(r)))
    return out


def table(doc: dict[str, Any]) -> str:
    lines = ["| figure | criterion | measured | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(doc)]
    lines += ["", "Where and when each was measured:", ""]
    for name in SCENARIOS:
        r = doc["scenarios"].get(name)
        if r:
            m = r["machine"]
            lines.append(f"- {name}: {r['created']}, commit `{m.get('commit') or 'uncommitted'}`, "
                         f"`{m['hostname']}` ({m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GB), "
                         f"machine busy {r['machine_busy']:.0%} of its CPUs during the run")
    return "\n".join(lines)


RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "fuzz": scenario_fuzz, "badinput": scenario_badinput, "storm": scenario_storm, "overload": scenario_overload,
    "slowloris": scenario_slowloris, "slow": scenario_slow, "crash": scenario_crash, "soak": scenario_soak,
}


def main() -> int:
    if "--serve-probe" in sys.argv:
        return serve_probe()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    ap.add_argument("--duration", type=float, default=600.0, help="soak seconds (600 = the issue's 10 minutes)")
    ap.add_argument("--storm-clients", type=int, default=1000)
    ap.add_argument("--storm-rounds", type=int, default=5, help="storms in a row (at least 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "reliability.md")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/reliability.md")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SCENARIOS]
    if bad:
        raise SystemExit(f"--only={args.only}: must name only {', '.join(SCENARIOS)}")
    if not 30 <= args.duration <= 3600:
        raise SystemExit(f"--duration={args.duration}: must be from 30 to 3600 seconds")
    if not 3 <= args.storm_rounds <= 20:
        raise SystemExit(f"--storm-rounds={args.storm_rounds}: must be from 3 to 20")
    if not 10 <= args.storm_clients <= 5000:
        raise SystemExit(f"--storm-clients={args.storm_clients}: must be from 10 to 5000")
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    path = args.out / f"reliability-{day}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"schema": "voxws-reliability/1", "scenarios": {}}
    info = machine()
    failed = []
    for name in only:
        print(f"== {name}", flush=True)
        cpu0 = psutil.cpu_times()
        t0 = _clock()
        res = RUNNERS[name](args)
        cpu1 = psutil.cpu_times()
        busy = sum(getattr(cpu1, k) - getattr(cpu0, k) for k in ("user", "nice", "system", "irq", "softirq"))
        res.pop("stdout", None)
        res.update({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": info,
                    "wall_s": res.get("wall_s", _clock() - t0),
                    "machine_busy": busy / ((_clock() - t0) * (os.cpu_count() or 1))})
        if path.exists():  # another run may have written other scenarios meanwhile: merge, do not clobber
            doc = json.loads(path.read_text())
        doc["scenarios"][name] = res
        for row in rows({"scenarios": {name: res}}):
            print(f"   {row[3]}: {row[0]}: {row[2]}", flush=True)
        if not res.get("pass"):
            failed.append(name)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if not args.no_docs:
        write_marked_block(args.docs, DOC_BEGIN, DOC_END, table(doc), "# Reliability\n\n## Figures\n\n")
    print(f"wrote {path}" + ("" if args.no_docs else f" and {args.docs}"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
