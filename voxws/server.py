"""The process: listening socket, engine, the HTTP edge (uvicorn), readiness, drain, systemd hand-shake.

Order at start: bind the port (a port in use is one line and exit 2, before the engine loads), serve the
edge on it (/healthz answers, /readyz and every /v1/ route say 503 "engine loading"), load the engine,
then ready. Path of a request: voxws.http.app (guard, routes) -> voxws.http.ws (one Session per socket)
-> Session -> Context/Producer -> engine -> frames.

uvicorn (with the `websockets` library's sans-I/O protocol for WebSockets) replaced the `websockets`
server because the HTTP API needs POST bodies, which that server does not parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator

import structlog
import uvicorn

from voxws import __version__, normalize, sdnotify, voices
from voxws.admission import Admission
from voxws.config import Settings
from voxws.engines.base import Engine, EngineStartError
from voxws.http import app as http_app
from voxws.http import protocols
from voxws.http.ws import WS_PATH
from voxws.metrics import Metrics
from voxws.session import Shared
from voxws.voices import VoiceStore

log = structlog.get_logger("voxws.server")
CLOSE_WAIT_S = 10  # at close: how long open sockets get to take their 1001


class BindError(Exception):
    """The listen address cannot be bound; the message names the setting."""


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address of host (as asyncio's create_server would), bound now."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BindError(f"VOXWS_HOST={host}: cannot be resolved ({e.strerror})") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # one free port for every address
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            try:
                sock.bind(addr)
            except OSError as e:
                what = "address already in use" if e.errno == errno.EADDRINUSE else "cannot listen"
                raise BindError(f"VOXWS_PORT={port}: {what} (VOXWS_HOST={host}: {e.strerror})") from None
            sock.listen(2048)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM and SIGINT are voxws's: they drain (Server.drain), uvicorn must not take them


def make_engine(settings: Settings) -> Engine:
    if settings.engine == "synthetic":
        from voxws.engines.synthetic import SyntheticEngine

        return SyntheticEngine(settings)
    from voxws.engines.nanovllm import NanoVllmEngine

    return NanoVllmEngine(settings)


class Server:
    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.metrics = Metrics()
        self.admission = Admission(0, settings.max_queue)
        key = voices.model_key(settings.engine, settings.model_path)  # a model change re-derives cached latents
        self.voices = VoiceStore.from_settings(settings, model_key=key)
        self.shared = Shared(settings, self.engine, self.admission, self.metrics, __version__, voices=self.voices)
        self.token = settings.auth_token()
        self.ready = False
        self.exit_code = 0
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.handshakes = 0  # WebSocket handshakes let in by the guard whose session is not registered yet
        self._uvicorn: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None
        m = self.metrics
        m.contexts_queued.set_function(lambda: self.admission.queued)
        m.engine_running.set_function(lambda: self.admission.in_use)
        m.connections.set_function(lambda: len(self.shared.sessions))
        m.ready.set_function(lambda: 1 if self.ready and not self.shared.draining else 0)

    def not_ready(self) -> str | None:
        """Why no new work is taken (one rule for /readyz and the guard of every /v1/ route), or None."""
        if self.engine.dead_reason:
            return f"engine dead: {self.engine.dead_reason}"
        if self.shared.draining:
            return "draining"
        if not self.ready:
            return "engine loading"
        return None

    # -- process lifecycle ----------------------------------------------

    async def start(self) -> None:
        s = self.settings
        socks = bind(s.host, s.port)  # first: a port in use stops the start before the engine loads
        self.port = socks[0].getsockname()[1]
        await self._serve(socks)
        sdnotify.notify(f"STATUS=loading {self.engine.name} engine")
        extend = asyncio.create_task(self._extend_start_timeout())
        try:
            # The normalizer's worker process loads its FSTs while the engine loads.
            await asyncio.gather(self.engine.start(), normalize.warm_up_async())
        except BaseException:
            await self._stop_serving()
            raise
        finally:
            extend.cancel()
        # An engine (torch, transformers) leaves ~230k long-lived objects here; a full collection walks
        # them all with the event loop stopped (100+ ms: TTFB spikes under load). Take them out of its sight.
        gc.collect()
        gc.freeze()
        self.admission.capacity = self.engine.num_workers * self.engine.max_num_seqs
        self.ready = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_engine()), loop.create_task(self._tick()),
                       loop.create_task(self._watchdog())]
        sdnotify.notify("READY=1", f"STATUS=serving on {s.host}:{self.port} ({self.engine.name})")
        log.info("listening", url=f"http://{s.host}:{self.port}/", ws=f"ws://{s.host}:{self.port}{WS_PATH}",
                 engine=self.engine.name, group=s.group, capacity=self.admission.capacity)

    async def _serve(self, socks: list[socket.socket]) -> None:
        """uvicorn on the bound sockets; returns once it accepts connections."""
        s = self.settings
        config = uvicorn.Config(
            http_app.build(self), http=protocols.Http, ws=protocols.WebSocket, lifespan="off", interface="asgi3",
            ws_max_size=s.max_message_bytes,  # the library's frame check (1009), judged from the frame header
            ws_per_message_deflate=False,  # deflate on PCM costs a lot of CPU and saves little
            ws_ping_interval=20, ws_ping_timeout=20,
            headers=[("server", f"voxws/{__version__}")], server_header=False, proxy_headers=False,
            access_log=False, log_config=None, log_level=logging.WARNING,  # never a URL (?token=) in the log
            timeout_graceful_shutdown=CLOSE_WAIT_S,
        )
        self._uvicorn = server = _Uvicorn(config)
        self._serving = asyncio.create_task(server.serve(sockets=socks), name="uvicorn")
        while not server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped during start")
            await asyncio.sleep(0.005)

    async def _stop_serving(self) -> None:
        if self._uvicorn is not None and self._serving is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(Exception):
                await self._serving

    async def _extend_start_timeout(self, limit_s: float = 20 * 60) -> None:
        # Keeps a short TimeoutStartSec from killing a slow load, but never beyond limit_s in all,
        # so a load that hangs off the event loop still times out.
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            sdnotify.notify(f"EXTEND_TIMEOUT_USEC={int(min(60, end - time.monotonic()) * 1e6)}")
            await asyncio.sleep(20)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if not interval:
            return
        while True:  # proves the event loop turns; a hung loop gets SIGABRT from systemd
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)  # already half of WATCHDOG_USEC

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for session in list(self.shared.sessions):
                session.tick(now)

    async def _watch_engine(self) -> None:
        while self.engine.dead_reason is None:
            await asyncio.sleep(0.1)
        reason = self.engine.dead_reason
        log.error("engine_dead", reason=reason)
        sdnotify.notify(f"STATUS=engine dead: {reason}")
        self.ready = False
        for session in list(self.shared.sessions):
            session.engine_died(reason)
        self.exit_code = 3
        await asyncio.sleep(0.5)  # let the writers flush the errors
        self._stop.set()

    def drain(self) -> None:
        """SIGTERM: stop taking contexts, finish those in flight within the budget, then exit."""
        if self.shared.draining:
            self._stop.set()  # a second signal: stop now
            return
        self.shared.draining = True
        self.metrics.drains.inc()
        deadline = self.settings.drain_timeout_s
        sdnotify.notify("STOPPING=1", f"STATUS=draining (up to {deadline:g} s)")
        log.info("draining", contexts=sum(s.open_contexts for s in self.shared.sessions), deadline_s=deadline)
        for session in list(self.shared.sessions):
            session.going_away(int(deadline * 1000))
        asyncio.get_running_loop().create_task(self._drain_wait(deadline))

    async def _drain_wait(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end and any(s.open_contexts for s in self.shared.sessions):
            await asyncio.sleep(0.05)
        self._stop.set()

    async def serve_forever(self) -> int:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.drain)
        if os.environ.get("VOXWS_TEST_HANG_ON_SIGNAL") == "1":
            # Test hook for the systemd watchdog: SIGUSR1 blocks the event loop for good.
            loop.add_signal_handler(signal.SIGUSR1, lambda: time.sleep(10**6))
        await self._stop.wait()
        await self.close()
        return self.exit_code

    async def close(self) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
        # Open sockets end with 1001 through their own session (the one owner of each socket), after the
        # control messages already queued; uvicorn then stops listening and drops what is left.
        for session in list(self.shared.sessions):
            session.close(1001, "server shutting down")
        end = time.monotonic() + CLOSE_WAIT_S
        while self.shared.sessions and time.monotonic() < end:
            await asyncio.sleep(0.02)
        if self.shared.sessions:
            log.warning("close_timeout", sessions=len(self.shared.sessions))
        await self._stop_serving()
        await self.engine.stop()
        log.info("stopped", exit_code=self.exit_code)


def run(settings: Settings) -> int:
    try:
        return asyncio.run(Server(settings).serve_forever())
    except BindError as e:
        print(e, file=sys.stderr)  # one line, as for any bad setting
        return 2
    except EngineStartError as e:
        log.error("engine_start_failed", error=str(e))
        sdnotify.notify(f"STATUS=engine failed to start: {e}")
        return 1

