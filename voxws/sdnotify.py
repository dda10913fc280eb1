"""sd_notify without libsystemd: one datagram per call to $NOTIFY_SOCKET.

This is the protocol systemd documents as stable (sd_notify(3), "Notes"): newline-separated
KEY=VALUE lines in one AF_UNIX datagram; a socket path starting with '@' is in the abstract
namespace. Outside systemd (no NOTIFY_SOCKET) every call is a cheap no-op returning False.
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=serving") ; True when a datagram was sent."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or not lines:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(lines).encode(), addr)
        return True
    except OSError:  # systemd gone or socket not ours: never take the server down for a status line
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is set for us."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog belongs to another process (e.g. we are a child of the service)
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None

