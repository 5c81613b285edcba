"""Appends that are whole or absent: the one way the controller adds lines to a file.

A file system that fills partway through a line makes ``write`` return a short
count, not an error; a line left torn like that breaks every reader after it
(the audit chain would fail ``history --verify`` for good).  So an append
checks the count, and a short write truncates the file back to where it was
and fails the append as an ``OSError`` (the caller's state-I/O error): what
was written before is kept, nothing half is left.

A tail without a newline (torn by a crash or by an earlier release on a full
disk) is cut off only together with the line that records the cut, in one
write at the end of the last whole line: when there is no room for both, the
torn tail stays as it was and the append fails, so the cut is recorded as soon
as space allows, never lost.  Putting a torn tail back writes only over pages
the file already held, so it needs no free space.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 65536
_pwrite = os.pwrite  # the one write call (a test forces a short count through it)


@dataclass(frozen=True)
class Tail:
    """How a file ends: its last whole line, what follows it without a newline, and where whole lines end."""

    last: bytes | None  # the last whole line, without its newline (None: no whole line)
    torn: bytes  # the bytes after the last newline (empty when the file ends whole)
    end: int  # the offset just past the last newline: where the append writes


def append_whole(path: Path, compose: Callable[[Tail], bytes], *, mode: int = 0o600) -> Tail:
    """Write ``compose(tail)`` at the end of the last whole line, fsynced; the tail it was composed for.

    Raises ``OSError`` (the file as it was, torn tail included) when the data cannot be written whole.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        tail = read_tail(fd)
        data = compose(tail)
        try:
            _write_whole(fd, data, at=tail.end, path=path)
            if tail.torn and len(data) < len(tail.torn):
                os.ftruncate(fd, tail.end + len(data))
            os.fsync(fd)
        except OSError:
            _put_back(fd, tail)
            raise
        return tail
    finally:
        os.close(fd)


def _write_whole(fd: int, data: bytes, *, at: int, path: Path) -> None:
    written = _pwrite(fd, data, at)
    if written != len(data):
        why = f"{os.strerror(errno.ENOSPC)} (a short write: {written} of {len(data)} bytes taken)"
        raise OSError(errno.ENOSPC, why, str(path))


def _put_back(fd: int, tail: Tail) -> None:
    """The file as it was: cut to its old length, then its torn tail over pages it already held."""
    try:
        os.ftruncate(fd, tail.end + len(tail.torn))
        if tail.torn:
            _pwrite(fd, tail.torn, tail.end)
        os.fsync(fd)
    except OSError:
        pass  # the append fails with its own error; a file that cannot even be cut stays as the kernel left it


def read_tail(fd: int) -> Tail:
    """The last whole line and the torn bytes after it, read backwards a chunk at a time."""
    size = os.fstat(fd).st_size
    found: list[int] = []  # offsets of the last two newlines, newest first
    buffer, start = b"", size
    while start > 0 and len(found) < 2:
        step = min(CHUNK, start)
        start -= step
        chunk = os.pread(fd, step, start)
        buffer = chunk + buffer
        found = [start + i for i in _newlines_backwards(buffer)][:2]
    if not found:
        return Tail(last=None, torn=os.pread(fd, size, 0) if size else b"", end=0)
    newest = found[0]
    previous = found[1] + 1 if len(found) > 1 else 0
    torn = os.pread(fd, size - newest - 1, newest + 1) if size > newest + 1 else b""
    return Tail(last=os.pread(fd, newest - previous, previous), torn=torn, end=newest + 1)


def _newlines_backwards(data: bytes) -> list[int]:
    places: list[int] = []
    index = len(data)
    while len(places) < 2:
        index = data.rfind(b"\n", 0, index)
        if index < 0:
            break
        places.append(index)
    return places
