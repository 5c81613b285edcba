"""Exclusive locks on files: one daemon per environment, one pass at a time.

``flock`` locks die with their process, so a crashed controller never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from controller.errors import ControllerError


class LockHeld(ControllerError):
    """Another process holds the lock."""


def hold_lock(path: Path) -> int:
    """Take the lock without waiting and keep it for the process's life; return the fd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(f"another controller holds {path} (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextmanager
def pass_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, the lock around one pass or one manual action."""
    try:
        fd = os.open(path, os.O_RDONLY)  # read-only is enough for flock, and works on a read-only state folder
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
