"""The process: engine, WebSocket endpoint, HTTP routes, readiness, drain, systemd hand-shake.

Path of a request: handshake (`_process_request`: routes, auth, origin, limits) ->
`_handle` (one Session per socket) -> Session -> Context/Producer -> engine -> frames.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import http
import os
import signal
import time
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from voxws import __version__, protocol, sdnotify
from voxws.admission import Admission
from voxws.config import Settings
from voxws.engines.base import Engine, EngineStartError
from voxws.metrics import Metrics
from voxws.session import Session, Shared

log = structlog.get_logger("voxws.server")
WS_PATH = "/v1/tts"
CLOSE_TIMEOUT_S = 5  # for the peer's close frame, and for a stalled peer to take ours
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".ts": "text/plain; charset=utf-8",
                  ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def make_engine(settings: Settings) -> Engine:
    if settings.engine == "synthetic":
        from voxws.engines.synthetic import SyntheticEngine

        return SyntheticEngine(settings)
    from voxws.engines.nanovllm import NanoVllmEngine

    return NanoVllmEngine(settings)


class _Connection(ServerConnection):
    """Says *why* in a protocol error message before the library closes 1009/1007."""

    def __init__(self, proto, *args, **kwargs):  # type: ignore[no-untyped-def]
        fail = proto.fail
        self.refused_code: str | None = None  # counted and logged by the handler when the socket ends

        def fail_with_message(code: int, reason: str = "") -> None:
            if proto.state is State.OPEN and code in (CloseCode.MESSAGE_TOO_BIG, CloseCode.INVALID_DATA):
                err = ("message_too_big", f"frame over the limit ({reason})") \
                    if code == CloseCode.MESSAGE_TOO_BIG else ("bad_message", f"text frame is not UTF-8 ({reason})")
                self.refused_code = err[0]
                proto.send_text(protocol.error(*err).encode())
            fail(code, reason)

        proto.fail = fail_with_message
        super().__init__(proto, *args, **kwargs)


class _Transport:
    __slots__ = ("ws",)

    def __init__(self, ws: ServerConnection):
        self.ws = ws

    async def send(self, data: str | bytes) -> None:
        try:
            await self.ws.send(data)
        except ConnectionClosed as e:  # the session knows no websockets types: the peer is gone
            raise ConnectionResetError(str(e)) from e

    async def close(self, code: int, reason: str) -> None:
        # websockets waits, without a deadline, until the close frame fits in the socket buffer: a peer
        # that stopped reading would hold its socket until keepalive gives up. Drop the TCP connection.
        try:
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.ws.transport.abort()


def _response(status: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8",
              extra: dict[str, str] | None = None) -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(data)),
                       "Cache-Control": "no-store", **(extra or {})})
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


class Server:
    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.metrics = Metrics()
        self.admission = Admission(0, settings.max_queue)
        self.shared = Shared(settings, self.engine, self.admission, self.metrics, __version__)
        self.token = settings.auth_token()
        self.ready = False
        self.exit_code = 0
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        m = self.metrics
        m.contexts_queued.set_function(lambda: self.admission.queued)
        m.engine_running.set_function(lambda: self.admission.in_use)
        m.connections.set_function(lambda: len(self.shared.sessions))
        m.ready.set_function(lambda: 1 if self.ready and not self.shared.draining else 0)

    # -- HTTP side of the handshake --------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if path == WS_PATH:
            return self._admit(request, url.query)
        if path == "/healthz":
            return _response(200, "ok\n")
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics":
            return _response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        return self._static(path)

    def _not_ready(self) -> str | None:
        """Why no new work is taken (one rule for /readyz and the handshake), or None."""
        if self.engine.dead_reason:
            return f"engine dead: {self.engine.dead_reason}"
        if self.shared.draining:
            return "draining"
        if not self.ready:
            return "engine loading"
        return None

    def _readyz(self) -> Response:
        why = self._not_ready()
        return _response(503 if why else 200, f"{why or 'ready'}\n")

    def _static(self, path: str) -> Response:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        if "/" in name or name.startswith(".") or not name:
            return _response(404, "not found\n")
        res = resources.files("voxws") / "web" / name
        if not res.is_file():
            return _response(404, "not found\n")
        ext = os.path.splitext(name)[1]
        # voxws.js is imported by pages of other origins: a module script needs CORS (no credentials).
        cors = {"Access-Control-Allow-Origin": "*"} if ext in (".js", ".ts") else None
        return _response(200, res.read_bytes(), _CONTENT_TYPES.get(ext, "application/octet-stream"), extra=cors)

    def _admit(self, request: Request, query: str) -> Response | None:
        refuse = self._refusal(request, query)
        if refuse is None:
            return None
        status, why = refuse
        self.metrics.handshake_refused.labels(status=str(status)).inc()
        log.info("handshake_refused", status=status, reason=why)  # never the token, never the query
        return _response(status, why + "\n", extra={"Retry-After": "5"} if status == 503 else None)

    def _refusal(self, request: Request, query: str) -> tuple[int, str] | None:
        if self.token is not None and not self._authorized(request, query):
            return 401, "unauthorized: a valid bearer token is required"
        origin = request.headers.get("Origin")
        allowed = self.settings.allowed_origins
        if allowed and origin is not None and origin.rstrip("/") not in allowed:
            return 403, "forbidden: origin not allowed"
        why = self._not_ready()
        if why:
            return 503, f"not ready: {why}"
        if len(self.shared.sessions) >= self.settings.max_connections:
            return 503, f"too many connections (limit {self.settings.max_connections})"
        return None

    def _authorized(self, request: Request, query: str) -> bool:
        assert self.token is not None
        want = self.token.encode()
        offered: list[str] = []
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        offered += parse_qs(query).get("token", [])
        for proto in request.headers.get_all("Sec-WebSocket-Protocol"):
            offered += [p.strip()[7:] for p in proto.split(",") if p.strip().startswith("bearer.")]
        # Compare every candidate in constant time; no early exit on the first match.
        ok = False
        for candidate in offered:
            ok |= hmac.compare_digest(candidate.encode(), want)
        return ok

    @staticmethod
    def _select_subprotocol(conn: ServerConnection, offered: list[str]) -> str | None:
        return protocol.PROTOCOL if protocol.PROTOCOL in offered else None

    # -- WebSocket side --------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        peer = ws.remote_address[0] if ws.remote_address else ""
        session = Session(self.shared, _Transport(ws), peer=str(peer))
        self.metrics.connections_total.inc()
        session.start()
        session.log.info("connected")
        failed = False
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    session.handle_text(frame)
                else:
                    session.handle_binary(frame)
                if session.close_code is not None:
                    break
            if session.writer is not None and session.close_code is not None:
                await asyncio.wait_for(asyncio.shield(session.writer), self.settings.stall_timeout_s)
        except Exception as e:  # one connection's failure never touches another
            if not isinstance(e, (asyncio.TimeoutError, ConnectionError, ConnectionClosed)):
                failed = True
                session.log.error("connection_failed", error=repr(e))
        finally:
            refused = getattr(ws, "refused_code", None)
            if refused:  # refused by the library's frame checks (1009, 1007): one line and a count, as any refusal
                self.metrics.errors.labels(code=refused).inc()
                session.log.info("refused", code=refused, close=ws.close_code)
            await session.finish()
            if failed:  # say so: returning from the handler would close 1000, as if all went well
                await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
            session.log.info("disconnected", code=ws.close_code)

    # -- process lifecycle ----------------------------------------------

    async def start(self) -> None:
        s = self.settings
        sdnotify.notify(f"STATUS=loading {self.engine.name} engine")
        extend = asyncio.create_task(self._extend_start_timeout())
        try:
            await self.engine.start()
        finally:
            extend.cancel()
        # An engine (torch, transformers) leaves ~230k long-lived objects here; a full collection walks
        # them all with the event loop stopped (100+ ms: TTFB spikes under load). Take them out of its sight.
        gc.collect()
        gc.freeze()
        self.admission.capacity = self.engine.num_workers * self.engine.max_num_seqs
        # The library's own limit is a backstop (it closes 1009 mid-read); ours answers first.
        self._ws = await serve(
            self._handle, s.host, s.port, process_request=self._process_request,
            select_subprotocol=self._select_subprotocol, create_connection=_Connection,
            compression=None,  # deflate on PCM costs a lot of CPU and saves little
            max_size=s.max_message_bytes, max_queue=16, open_timeout=10, ping_interval=20, ping_timeout=20,
            close_timeout=CLOSE_TIMEOUT_S, server_header=f"voxws/{__version__}",
        )
        sock = next(iter(self._ws.sockets))
        self.port = sock.getsockname()[1]
        self.ready = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch_engine()), loop.create_task(self._tick()),
                       loop.create_task(self._watchdog())]
        sdnotify.notify("READY=1", f"STATUS=serving on {s.host}:{self.port} ({self.engine.name})")
        log.info("listening", url=f"http://{s.host}:{self.port}/", ws=f"ws://{s.host}:{self.port}{WS_PATH}",
                 engine=self.engine.name, group=s.group, capacity=self.admission.capacity)

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
        if getattr(self, "_ws", None) is not None:
            self._ws.close()  # closes remaining sockets with 1001
            try:
                await asyncio.wait_for(self._ws.wait_closed(), 10)
            except asyncio.TimeoutError:
                log.warning("close_timeout")
        await self.engine.stop()
        log.info("stopped", exit_code=self.exit_code)


def run(settings: Settings) -> int:
    try:
        return asyncio.run(Server(settings).serve_forever())
    except EngineStartError as e:
        log.error("engine_start_failed", error=str(e))
        sdnotify.notify(f"STATUS=engine failed to start: {e}")
        return 1

