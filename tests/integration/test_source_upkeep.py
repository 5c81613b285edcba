"""The cache's upkeep: a fetch that brings nothing runs one git; git's maintenance runs after one that brought a head.

Real git: every git process the source starts is read from git's own trace (``GIT_TRACE2_EVENT``).
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.source import GitSource
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
