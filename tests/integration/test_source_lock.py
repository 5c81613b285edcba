"""Fetches into one cache from several processes at once (the daemon's pass beside ``plan`` and ``verify``).

Real git, real processes: each one fetches in a loop while the remote moves; every fetch must succeed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from testbed import ManifestRepo

FETCHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from controller.source.git import GitSource
    failures = 0
    for _ in range(int(sys.argv[3])):
        try:
            GitSource(Path(sys.argv[1]), url=sys.argv[2], branch="main").fetch()
        except Exception as exc:
            failures += 1
            print(type(exc).__name__, exc, file=sys.stderr)
    print(failures)
    """
)


def test_fetches_from_several_processes_into_one_cache_never_fail(tmp_path: Path) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.commit("first")
    repo.push()
    cache = tmp_path / "state" / "repo"
    moving, stop = threading.Event(), threading.Event()

    def move() -> None:  # the branch keeps moving, so every fetch has refs to update
        while not stop.is_set():
            repo.commit("more")
            repo.push(force=True)
            moving.set()

    mover = threading.Thread(target=move, daemon=True)
    mover.start()
    moving.wait(10)
    try:
        fetchers = [
            subprocess.Popen(
                [sys.executable, "-c", FETCHER, str(cache), repo.url, "15"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [fetcher.communicate(timeout=120) for fetcher in fetchers]
    finally:
        stop.set()
        mover.join(timeout=30)
    assert [out.strip() for out, _ in results] == ["0"] * 4, [err[-500:] for _, err in results]
    assert (tmp_path / "state" / "fetch.lock").exists()
