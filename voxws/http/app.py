"""The ASGI app: routes, plus one guard in front of all of them.

The guard decides, per request, before any route runs (so route modules never repeat it):
- which paths need it: everything under `/v1/` (the WebSocket, the voices, the OpenAI-compatible
  routes); the monitoring routes and the demo page stay open (docs/security.md);
- the token (`Authorization: Bearer`, `?token=`, and for the WebSocket the subprotocol `bearer.<token>`),
  compared in constant time; then the allowed origins; then readiness (engine loading or dead, draining:
  503 with Retry-After); for the WebSocket, the connection limit (exact under a burst of handshakes);
- how it refuses: at a WebSocket handshake, an HTTP status with a one-line text body (nothing is
  synthesised); for the HTTP API, JSON in the route family's shape (voxws.http.errors).
CORS (for the allowed origins only) sits outside the guard, so that a browser's preflight, which carries
no token, is answered, and a refusal carries the headers that let the page read it.

Route families: each module in ROUTE_MODULES exports `routes(server) -> list[BaseRoute]`.
"""

from __future__ import annotations

import hmac
from importlib import import_module
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from voxws import __version__
from voxws.http import errors, probes, static, ws

if TYPE_CHECKING:
    from voxws.server import Server

log = structlog.get_logger("voxws.server")
GUARDED_PREFIX = "/v1/"
RETRY_AFTER_S = "5"
# Route families added later go here, one line each (e.g. "voxws.http.voices", "voxws.http.openai").
ROUTE_MODULES: tuple[str, ...] = ("voxws.http.voices", "voxws.http.openai")


def routes(server: Server) -> list[BaseRoute]:
    families = [r for name in ROUTE_MODULES for r in import_module(name).routes(server)]
    return [*ws.routes(server), *probes.routes(server), *families, *static.routes(server)]


def build(server: Server) -> ASGIApp:
    middleware = []
    if server.settings.allowed_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(server.settings.allowed_origins),
                                     allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type"], max_age=600))
    middleware.append(Middleware(Guard, server=server))
    return Starlette(routes=routes(server), middleware=middleware)


class Guard:
    def __init__(self, app: ASGIApp, server: Server):
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        is_ws = kind == "websocket"
        refusal = self.refusal(scope, is_ws and scope["path"] == ws.WS_PATH)
        if refusal is None:
            if is_ws and scope["path"] == ws.WS_PATH:
                self.server.handshakes += 1  # released by the endpoint once its session is registered
            await self.app(scope, receive, send)
            return
        status, code, why = refusal
        extra = {"Retry-After": RETRY_AFTER_S} if status == 503 else {}
        if is_ws:
            self.server.metrics.handshake_refused.labels(status=str(status)).inc()
            log.info("handshake_refused", status=status, reason=why)  # never the token, never the query
            await deny_handshake(send, status, why, extra)
        else:
            log.info("request_refused", status=status, reason=why, method=scope["method"])
            await errors.error_for(scope["path"], status, code, why, extra)(scope, receive, send)

    def refusal(self, scope: Scope, tts: bool) -> tuple[int, str, str] | None:
        srv = self.server
        if srv.token is not None and not self.authorized(scope):
            return 401, "unauthorized", "unauthorized: a valid bearer token is required"
        allowed = srv.settings.allowed_origins
        origin = _header(scope, b"origin")
        if allowed and origin is not None and origin.rstrip("/") not in allowed:
            return 403, "forbidden", "forbidden: origin not allowed"
        why = srv.not_ready()
        if why:
            return 503, "not_ready", f"not ready: {why}"
        limit = srv.settings.max_connections
        if tts and len(srv.shared.sessions) + srv.handshakes >= limit:
            return 503, "busy", f"too many connections (limit {limit})"
        return None

    def authorized(self, scope: Scope) -> bool:
        token = self.server.token
        assert token is not None
        want = token.encode()
        offered: list[str] = []
        auth = _header(scope, b"authorization") or ""
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        offered += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        offered += [p[7:] for p in scope.get("subprotocols", ()) if p.startswith("bearer.")]
        # Compare every candidate in constant time; no early exit on the first match.
        ok = False
        for candidate in offered:
            ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), want)
        return ok


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def deny_handshake(send: Send, status: int, why: str, extra: dict[str, str]) -> None:
    """Answer a WebSocket handshake with a plain HTTP response (ASGI's websocket.http.response)."""
    body = (why + "\n").encode()
    headers = {"content-type": "text/plain; charset=utf-8", "cache-control": "no-store",
               "server": f"voxws/{__version__}", **{k.lower(): v for k, v in extra.items()}}
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
    await send({"type": "websocket.http.response.body", "body": body})
