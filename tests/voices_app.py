"""A tiny Starlette app holding only the /v1/voices routes, on a real uvicorn over loopback: in a thread
(`serving`) or as its own process (`python -m tests.voices_app DIR PORT`, `serving_process`), plus a
multipart builder and a bare HTTP client for the tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from voxws.bench.proc import free_port, stop, wait_ready
from voxws.config import Settings
from voxws.http.voices import routes
from voxws.voices import VoiceStore

ROOT = Path(__file__).resolve().parent.parent


def make_app(voices_dir: Path, **settings: Any) -> Starlette:
    s = Settings(voices_dir=str(voices_dir), **settings)
    server = SimpleNamespace(settings=s, voices=VoiceStore(voices_dir, max_voices=s.max_voices))

    async def readyz(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[*routes(server), Route("/readyz", readyz)])


@dataclass
class Served:
    port: int
    errors: list[logging.LogRecord] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]):
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextlib.contextmanager
def serving(voices_dir: Path, **settings: Any) -> Iterator[Served]:
    """uvicorn in a thread; `errors` collects every ERROR uvicorn logs (an exception escaping the app)."""
    config = uvicorn.Config(make_app(voices_dir, **settings), host="127.0.0.1", port=0, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        if not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    served = Served(port=server.servers[0].sockets[0].getsockname()[1])
    handler = _Collect(served.errors)
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        yield served
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        server.should_exit = True
        t.join(10)


@contextlib.contextmanager
def serving_process(voices_dir: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.voices_app", str(voices_dir), str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_ready(port, proc=proc, timeout=30)
        yield port
    finally:
        stop(proc, timeout=10)


def multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "voxwsBoundary7MA4YWxk") -> tuple[
        bytes, str]:
    """(body, content type) for parts of (name, data, filename or None)."""
    out = bytearray()
    for name, data, filename in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"Content-Disposition: {disp}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def upload(port: int, audio: bytes | None, text: str | None = "what I said in it", name: str | None = None,
           voice_id: str | None = None) -> tuple[int, Any]:
    parts: list[tuple[str, bytes, str | None]] = []
    if audio is not None:
        parts.append(("audio", audio, "me.wav"))
    for k, v in (("text", text), ("name", name), ("id", voice_id)):
        if v is not None:
            parts.append((k, v.encode(), None))
    body, ctype = multipart(parts)
    return request(port, "POST", "/v1/voices", body, {"Content-Type": ctype})


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data and r.getheader("content-type", "").startswith(
            "application/json") else data)
    finally:
        c.close()


if __name__ == "__main__":
    uvicorn.run(make_app(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)


def temp_files() -> int:
    """Open files of this process (server threads included) that are unlinked temp files: spooled uploads."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    return n
