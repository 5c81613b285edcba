"""A small file system that fills up: a tmpfs of a given size, and a competing writer that takes freed pages.

Mounting needs root; ``small_tmpfs`` raises ``DiskUnavailable`` where it may
not mount, so a test can skip with the reason.  The ``Hog`` writes to its own
file in the same file system until it is full, and keeps taking any page that
is freed (as a log shipper or another service on the host would), so every
write of the controller meets a disk that is full or nearly so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PAGE = 4096


class DiskUnavailable(RuntimeError):
    """A tmpfs cannot be mounted here (not root, or no mount namespace)."""


@contextlib.contextmanager
def small_tmpfs(path: Path, *, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``1m``, ``512k``) on ``path`` for the block; unmounted after it."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise DiskUnavailable(mounted.stderr.strip() or "mount failed")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def set_read_only(path: Path, read_only: bool) -> None:
    """Remount the tmpfs at ``path`` read-only or read-write again."""
    flag = "ro" if read_only else "rw"
    deadline = time.monotonic() + 10
    while True:  # a remount read-only waits out a file open for writing at that instant (EBUSY)
        done = subprocess.run(
            ["mount", "-o", f"remount,{flag}", str(path)], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise DiskUnavailable(f"cannot remount {path} {flag}: {done.stderr.strip()}")
        time.sleep(0.05)


class Hog(threading.Thread):
    """Writes to ``path`` until the disk is full, then keeps taking every page that is freed."""

    def __init__(self, path: Path, *, chunk: int = PAGE) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.chunk = b"h" * chunk
        self.stopping = threading.Event()
        self.full = threading.Event()
        self.taken = 0  # bytes written after the disk was first full: pages others freed

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while not self.stopping.is_set():
                try:
                    written = os.write(fd, self.chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    self.full.set()
                    self.stopping.wait(0.0005)
                    continue
                if self.full.is_set():
                    self.taken += written
        finally:
            os.close(fd)

    def release(self, size: int) -> None:
        """Give ``size`` bytes back (truncate its own file): the next writer may take them."""
        current = self.path.stat().st_size
        os.truncate(self.path, max(0, current - size))

    def stop(self) -> None:
        """Stop writing and wait for the thread."""
        self.stopping.set()
        self.join(timeout=5)
