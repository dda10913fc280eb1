"""Shared fixtures: a real voxws server on loopback, in-process or as a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from voxws.bench.proc import free_port, stop, wait_ready
from voxws.config import Settings
from voxws.server import Server

ROOT = Path(__file__).resolve().parent.parent
VOXWS = str(Path(sys.executable).with_name("voxws"))


@contextlib.asynccontextmanager
async def running(**settings: object) -> AsyncIterator[Server]:
    """An in-process server on a free loopback port (synthetic engine unless told otherwise)."""
    s = Settings(**{"engine": "synthetic", "port": 0, "log_format": "json", **settings})  # type: ignore[arg-type]
    server = Server(s)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def url(server: Server, path: str = "/v1/tts") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


@contextlib.contextmanager
def serve_process(env: dict[str, str] | None = None, port: int | None = None,
                  args: tuple[str, ...] = ()) -> Iterator[tuple[subprocess.Popen, int]]:
    """`voxws serve` as a subprocess on a free port; stopped (SIGTERM, then SIGKILL) afterwards."""
    port = port or free_port()
    full = {**os.environ, "VOXWS_ENGINE": "synthetic", "VOXWS_PORT": str(port), "VOXWS_LOG_FORMAT": "json",
            **(env or {})}
    proc = subprocess.Popen([VOXWS, "serve", *args], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        wait_ready(port, proc=proc)
        yield proc, port
    finally:
        stop(proc, timeout=15)


@pytest.fixture
def voxws_server() -> Iterator[tuple[subprocess.Popen, int]]:
    with serve_process() as p:
        yield p
