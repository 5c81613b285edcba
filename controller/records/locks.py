"""Exclusive locks on files: one daemon per environment, one pass at a time.

``flock`` locks die with their process, so a crashed controller never leaves
a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from controller.errors import ControllerError


class LockHeld(ControllerError):
    """Another process holds the lock."""


@dataclass(frozen=True)
class DaemonLock:
    """The daemon's lock: its fd (None when there is no lock file to take), and why it is read-only if it is."""

    fd: int | None
    read_only: str | None = None  # why the state folder takes no write: the daemon serves, no pass runs

    def release(self) -> None:
        """Let the lock go (the process's end does too)."""
        if self.fd is not None:
            os.close(self.fd)


def hold_lock(path: Path) -> DaemonLock:
    """Take the lock without waiting and keep it for the process's life.

    On a state folder that takes no write (read-only, or the lock file not writable) the lock is
    taken read-only, or not at all when its file cannot be made: a ``DaemonLock`` that says why.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        if exc.errno not in READ_ONLY:
            raise
        return _read_only_lock(path, exc)
    # Held through a read-only descriptor, so a running daemon keeps no file open for writing on the
    # state folder (it can be remounted read-only under it); the pid is written once, then let go.
    try:
        fd = os.open(path, os.O_RDONLY)
        _exclusive(fd, path)
        try:
            os.ftruncate(writer, 0)
            os.pwrite(writer, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds without its pid, and the passes say what the disk does
    finally:
        os.close(writer)
    return DaemonLock(fd)


READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _read_only_lock(path: Path, cause: OSError) -> DaemonLock:
    why = f"cannot write {path}: {cause.strerror} ({errno.errorcode.get(cause.errno or 0, '?')})"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return DaemonLock(None, read_only=why)  # nothing to lock, and nothing can write here either
    _exclusive(fd, path)
    return DaemonLock(fd, read_only=why)


def _exclusive(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(f"another controller holds {path} (pid {holder})") from None


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
