"""`voxws serve` as a child process, for benchmarks and tests: a free port, readiness, a drained stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readyz(port: int, timeout: float = 5.0) -> int:
    """HTTP status of /readyz, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def wait_ready(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0,
               log: Path | None = None) -> None:
    """Until /readyz says 200. Raises RuntimeError if the process exits first (with its log's tail),
    TimeoutError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"voxws serve exited with {proc.returncode}" + (f": {tail}" if tail else ""))
        if readyz(port, timeout=1) == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"voxws serve on port {port} not ready within {timeout:g} s")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (the server drains), then SIGKILL if it is still there after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
