"""systemd's notification protocol (READY, STATUS, WATCHDOG, STOPPING) through cysystemd.

The only module that imports ``cysystemd``.  Without ``NOTIFY_SOCKET`` (not
started by systemd) every call is a silent no-op.
"""

from __future__ import annotations

import os

from cysystemd import daemon


def enabled() -> bool:
    """Whether systemd is listening."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def ready() -> None:
    """Start-up is complete (recovery done, first pass finished)."""
    if enabled():
        daemon.notify(daemon.Notification.READY)


def status(text: str) -> None:
    """A one-line status for ``systemctl status``."""
    if enabled():
        daemon.notify(daemon.Notification.STATUS, text)


def watchdog() -> None:
    """The service is alive."""
    if enabled():
        daemon.notify(daemon.Notification.WATCHDOG)


def stopping() -> None:
    """Shutdown has begun."""
    if enabled():
        daemon.notify(daemon.Notification.STOPPING)


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asks for, in seconds (None: no watchdog)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
