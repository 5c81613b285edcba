"""The cache's upkeep: a fetch that brings nothing runs one git; git's maintenance runs after one that brought a head.

Real git: every git process the source starts is read from git's own trace (``GIT_TRACE2_EVENT``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from controller.source.git import STOP_GRACE, GitSource, SourceError
from testbed import ManifestRepo


def _started(trace: Path) -> list[str]:
    """The git commands the source itself started, in order (not the ones git started under them)."""
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e["name"] for e in events if e.get("event") == "cmd_name" and "/" not in e["sid"]]


def test_a_fetch_that_brings_nothing_starts_one_git_and_writes_no_fetch_head(tmp_path: Path) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.commit("first")
    repo.push()
    trace = tmp_path / "trace.jsonl"
    source = GitSource(tmp_path / "state" / "repo", url=repo.url, branch="main", env={"GIT_TRACE2_EVENT": str(trace)})
    first = source.fetch()
    assert _started(trace) == ["fetch", "maintenance"]  # the first fetch of a process
    trace.unlink()
    for _ in range(3):
        assert source.fetch() == first
    assert _started(trace) == ["fetch"] * 3
    trace.unlink()
    repo.commit("second")
    repo.push()
    assert source.fetch() != first
    assert _started(trace) == ["fetch", "maintenance"]
    assert not (source.path / "FETCH_HEAD").exists()


def test_the_cache_is_packed_by_git_once_its_thresholds_are_passed(tmp_path: Path) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.commit("first")
    repo.push()
    source = GitSource(tmp_path / "state" / "repo", url=repo.url, branch="main")
    source.fetch()
    source.repo().git.config("fetch.unpackLimit", "1")  # every fetch keeps its own pack
    source.repo().git.config("gc.autoPackLimit", "3")  # git packs them together past three
    for n in range(8):
        repo.commit(f"change {n}")
        repo.push()
        source.fetch()
    packs = list((source.path / "objects" / "pack").glob("*.pack"))
    assert 1 <= len(packs) <= 4, packs


def _wrapped_git(folder: Path, maintenance: str = "", fetch: str = "") -> dict[str, str]:
    """An environment whose ``git`` runs ``maintenance`` or ``fetch`` shell code first, then the real git."""
    folder.mkdir()
    real = shutil.which("git")
    (folder / "git").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = maintenance ]; then {maintenance or ":"}; fi\n'
        f'if [ "$1" = fetch ]; then {fetch or ":"}; fi\n'
        f'exec {real} "$@"\n'
    )
    (folder / "git").chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def test_a_failed_upkeep_is_tried_again_at_the_next_fetch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.commit("first")
    repo.push()
    count = tmp_path / "count"
    counted = f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}"
    once = f'{counted}; [ "$n" = 0 ] && {{ echo "error: disk full" >&2; exit 1; }}'
    env = _wrapped_git(tmp_path / "bin", maintenance=once)
    source = GitSource(tmp_path / "state" / "repo", url=repo.url, branch="main", env=env)
    head = source.fetch()  # the upkeep fails: logged, and the fetch still answers
    assert [getattr(r, "error", None) for r in caplog.records] == ["error: disk full"]
    assert source.fetch() == head and count.read_text().strip() == "2"  # tried again, and it ran
    assert source.fetch() == head and count.read_text().strip() == "2"  # done: not again until a new head


def test_a_git_past_its_timeout_is_asked_to_stop_before_it_is_killed(tmp_path: Path) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.commit("first")
    repo.push()
    stopped = tmp_path / "stopped"
    slow = f'trap "touch {stopped}; exit 143" TERM; sleep 30 & wait'  # git removes its locks on SIGTERM
    env = _wrapped_git(tmp_path / "bin", maintenance=slow)
    source = GitSource(tmp_path / "state" / "repo", url=repo.url, branch="main", env=env, timeout=1)
    started = time.monotonic()
    source.fetch()  # the upkeep times out; the fetch has its head
    assert stopped.exists() and time.monotonic() - started < STOP_GRACE + 5


def test_a_git_too_old_for_the_fetch_is_named_by_its_own_error(tmp_path: Path) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.commit("first")
    repo.push()
    usage = "; ".join(['echo "    --option-$i    what it does" >&2' for i in range(120)])
    unknown = 'echo "error: unknown option \\`no-write-fetch-head\'" >&2'
    old = f'{unknown}; echo "usage: git fetch [<options>]" >&2; {usage}; exit 129'
    env = _wrapped_git(tmp_path / "bin", fetch=old)
    source = GitSource(tmp_path / "state" / "repo", url=repo.url, branch="main", env=env)
    with pytest.raises(SourceError, match="unknown option `no-write-fetch-head'"):
        source.fetch()
