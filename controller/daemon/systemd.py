"""systemd's notification protocol (READY, STATUS, WATCHDOG, STOPPING): one datagram to ``NOTIFY_SOCKET``.

Without ``NOTIFY_SOCKET`` (not started by systemd) every call is a silent no-op.
A notification never waits: sent without blocking, it is dropped when the
receiver's queue is full (a busy PID 1 reads it late).  cysystemd's
``sd_notify`` blocked on a full queue while holding the GIL, which froze the
whole daemon — passes, the API and SIGTERM — until the queue drained.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("dreichor.daemon")


def enabled() -> bool:
    """Whether systemd is listening."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def _notify(line: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path  # '@': the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(line.encode(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, address)
    except OSError as exc:  # a full queue (BlockingIOError) or no listener: this one is dropped
        log.debug("systemd notification dropped", extra={"notification": line.split("=", 1)[0], "reason": str(exc)})


def ready() -> None:
    """Start-up is complete (recovery done, first pass finished)."""
    _notify("READY=1")


def status(text: str) -> None:
    """A one-line status for ``systemctl status``."""
    _notify("STATUS=" + text.replace("\n", " "))


def watchdog() -> None:
    """The service is alive."""
    _notify("WATCHDOG=1")


def stopping() -> None:
    """Shutdown has begun."""
    _notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asks for, in seconds (None: no watchdog)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
