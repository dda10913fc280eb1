"""voxws/sdnotify.py against a real AF_UNIX datagram socket, and the server's side of the unit contract."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VOXWS, free_port
from voxws import sdnotify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(10)
        yield s, path


def test_notify_sends_one_datagram_of_lines(notify_socket, monkeypatch) -> None:
    s, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1", "STATUS=serving on 127.0.0.1:8081")
    assert s.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:8081"
    for line in ("WATCHDOG=1", "EXTEND_TIMEOUT_USEC=60000000", "STOPPING=1"):
        assert sdnotify.notify(line)
        assert s.recv(4096) == line.encode()


def test_notify_abstract_namespace(monkeypatch) -> None:
    name = f"voxws-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1")
        assert s.recv(4096) == b"READY=1"


def test_notify_without_systemd_is_a_no_op(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify("READY=1") is False  # never raises: a status line must not take the server down


def test_watchdog_interval(monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 15.0  # ping at half the timeout
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "", "abc"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None


def _recv_until(s: socket.socket, want: str, seen: list[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            seen += s.recv(4096).decode().splitlines()
        except TimeoutError:
            continue
        if any(line.startswith(want) for line in seen):
            return
    raise AssertionError(f"no {want} among {seen}")


def test_server_contract_ready_watchdog_stopping(notify_socket) -> None:
    """`voxws serve` under a fake systemd: READY=1 only when the port answers, WATCHDOG=1 pings, and
    STOPPING=1 on SIGTERM -- what Type=notify + WatchdogSec= in the unit rely on."""
    s, path = notify_socket
    port = free_port()
    env = {**os.environ, "VOXWS_ENGINE": "synthetic", "VOXWS_PORT": str(port), "NOTIFY_SOCKET": path,
           "WATCHDOG_USEC": "2000000", "VOXWS_LOG_FORMAT": "json"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([VOXWS, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: list[str] = []
        _recv_until(s, "READY=1", seen)
        # The moment READY=1 arrives, the port must already serve (systemd starts dependents now).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            assert r.status == 200
        assert any(line.startswith("STATUS=") for line in seen)
        _recv_until(s, "WATCHDOG=1", seen, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _recv_until(s, "STOPPING=1", seen, timeout=30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
