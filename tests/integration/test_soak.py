"""Soak: one daemon doing 2,000 no-change passes keeps its memory, file descriptors and threads flat."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from controller.daemon.scheduler import Daemon
from testbed import ControllerHost

PASSES = int(os.environ.get("DREICHOR_SOAK_PASSES", "2000"))


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_two_thousand_no_change_passes_stay_flat(controller_host: ControllerHost) -> None:
    host = controller_host
    daemon = Daemon(host.configs["prod"])
    assert daemon.tick().result == "applied"
    for _ in range(100):  # warm-up: caches, connection pools, lazy imports
        assert daemon.tick().result == "unchanged"
    rss, fds, threads = _rss_mb(), _fds(), threading.active_count()
    for _ in range(PASSES - 100):
        assert daemon.tick().result == "unchanged"
    daemon.service.close()
    assert _rss_mb() - rss < 5, f"RSS grew from {rss:.1f} MB to {_rss_mb():.1f} MB"
    assert _fds() <= fds + 2
    assert threading.active_count() <= threads
