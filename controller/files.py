"""Atomic file writes: the one place that writes state to disk.

Every file the controller writes (status, snapshots, journal, config from
``init``) must survive a crash or a full disk without leaving a half-written
file behind: write a temporary file in the same folder, fsync it, rename it
over the target, then fsync the folder so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_new(path: Path, data: bytes, *, mode: int = 0o644) -> bool:
    """Write ``path`` atomically unless it exists; return whether it was written."""
    if path.exists() or path.is_symlink():
        return False
    atomic_write(path, data, mode=mode)
    return True
