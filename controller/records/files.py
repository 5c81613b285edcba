"""Atomic file writes: the one place that writes state to disk.

Every file the controller writes (status, snapshots, journal, config from
``init``) must survive a crash or a full disk without leaving a half-written
file behind: write a temporary file in the same folder, fsync it, rename it
over the target, then fsync the folder so the rename itself is durable.
``file_key`` tells one version of a file from another without reading it, for
what is kept in memory while its files stay unchanged (trust policy, host
digest, status file, the audit log's newest applied event).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

FileKey = tuple[str, int, int, int, int] | tuple[str, None]


def file_key(path: Path | None) -> FileKey | None:
    """What tells one version of a file from another without reading it: inode, size, mtime, ctime.

    Taken before the file is read, so a change during the read leaves a key that no longer matches.
    ``(path, None)`` when it is missing or cannot be stat'ed; None for no path.
    """
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def write_failure(exc: OSError, where: Path) -> str:
    """A write the state folder did not take, as one sentence: where, the cause and its errno name."""
    name = errno.errorcode.get(exc.errno or 0, "")
    cause = exc.strerror or str(exc)
    what = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(where) else ""
    return f"cannot write {where}{what}: {cause}" + (f" ({name})" if name else "")


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


class InsecureFile(PermissionError):
    """A secrets file that others could read or replace; the message says how to fix it.

    A ``PermissionError``, so every caller that already handles an unreadable
    file (``cannot read …``) handles this one the same way.
    """


def read_private_file(path: Path) -> bytes:
    """The bytes of a secrets file, refused unless it is private (as OpenSSH does for keys).

    Private means a regular file, owned by root or by the user the controller runs
    as, with no permission bits for group or others (mode 0600 or stricter).  The
    checks look at the opened file, so it cannot be swapped between check and read,
    and a FIFO in its place cannot block the reader.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as handle:
        problem = _privacy_problem(os.fstat(fd), path)
        if problem:
            raise InsecureFile(problem)
        return handle.read()


def _privacy_problem(info: os.stat_result, path: Path) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file: replace it with a file of KEY=value lines, mode 0600"
    if info.st_uid not in (0, os.geteuid()):
        owner = "root" if os.geteuid() == 0 else str(os.geteuid())
        return (
            f"{path} is owned by uid {info.st_uid}, not by root or the controller's user, "
            f"so its owner could change the secrets: run 'chown {owner} {path}'"
        )
    if info.st_mode & 0o077:
        return (
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, which lets others read or change "
            f"its secrets: run 'chmod 600 {path}'"
        )
    return None
