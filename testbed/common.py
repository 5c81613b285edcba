"""What every part of the test bed shares: its error, running a command, waiting for a condition, a free port."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class BedError(RuntimeError):
    """A component of the test bed could not be started."""


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=300)
    if proc.returncode != 0:
        raise BedError(f"{' '.join(args[:4])}… failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _wait(predicate: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise BedError(f"{what} did not come up within {timeout:.0f}s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], *, timeout: float = 60, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; an exception in it counts as 'not yet'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, BedError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")
