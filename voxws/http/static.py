"""The demo page and the JS client module, from the package's web/ directory (one level, no subpaths)."""

from __future__ import annotations

import os
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from voxws.http.probes import plain

if TYPE_CHECKING:
    from voxws.server import Server

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".ts": "text/plain; charset=utf-8",
                 ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


async def _file(request: Request) -> Response:
    name = request.path_params.get("name") or "index.html"
    if "/" in name or name.startswith(".") or not name:
        return plain(404, "not found\n")
    res = resources.files("voxws") / "web" / name
    if not res.is_file():
        return plain(404, "not found\n")
    ext = os.path.splitext(name)[1]
    # voxws.js is imported by pages of other origins: a module script needs CORS (no credentials).
    cors = {"Access-Control-Allow-Origin": "*"} if ext in (".js", ".ts") else None
    return plain(200, res.read_bytes(), CONTENT_TYPES.get(ext, "application/octet-stream"), cors)


def routes(server: Server) -> list[BaseRoute]:
    # Last in the route list: "/{name}" matches any one-segment path.
    return [Route("/", _file, methods=["GET", "HEAD"]), Route("/{name}", _file, methods=["GET", "HEAD"])]
