"""Monitoring routes, open without the token (docs/security.md): /healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from voxws.server import Server

TEXT = "text/plain; charset=utf-8"


def plain(status: int, body: bytes | str, media_type: str = TEXT, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers={"Cache-Control": "no-store", **(headers or {})}, media_type=media_type)


def routes(server: Server) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        return plain(200, "ok\n")

    async def readyz(request: Request) -> Response:
        why = server.not_ready()
        return plain(503 if why else 200, f"{why or 'ready'}\n")

    async def metrics(request: Request) -> Response:
        return plain(200, server.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    return [Route("/healthz", healthz, methods=["GET", "HEAD"]), Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET", "HEAD"])]
