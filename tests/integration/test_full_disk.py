"""A state folder that fills up: appends are whole or absent, and nothing recorded before is lost.

A real tmpfs of 1 MiB, filled by a competing writer that keeps taking every page
freed, as a log shipper beside the controller would.  Needs root to mount; the
test says so where it cannot.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.records.audit import append_event, read_events, verify_chain
from testbed.disk import PAGE, DiskUnavailable, Hog, small_tmpfs

AT = datetime(2026, 12, 8, tzinfo=UTC)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    try:
        with small_tmpfs(tmp_path / "state", size="1m") as mounted:
            yield mounted
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


def test_appends_on_a_disk_a_competing_writer_fills_are_whole_or_absent(small_disk: Path) -> None:
    log = small_disk / "audit.jsonl"
    for n in range(20):
        append_event(log, "applied", at=AT, revision=f"r{n}", reason="before the disk filled")
    hog = Hog(small_disk / "hog")
    hog.start()
    assert hog.full.wait(10), "the competing writer never filled the disk"
    shuffle = random.Random(38)  # noqa: S311 a repeatable race, not a secret
    written, failures = 20, []
    try:
        for n in range(300):
            hog.release(PAGE * shuffle.randint(0, 2))  # a page or two freed: a race for them
            try:
                append_event(log, "refused", at=AT, revision=f"x{n}", reason="y" * shuffle.randint(500, 3000))
            except OSError as exc:
                failures.append(exc)
            else:
                written += 1
    finally:
        hog.stop()
    short = [exc for exc in failures if "short write" in str(exc.strerror)]
    assert short, f"no append met a short write ({len(failures)} failed outright, {written} written)"
    assert verify_chain(log) is None
    assert len(read_events(log)) == written
    assert [e["revision"] for e in read_events(log)[:20]] == [f"r{n}" for n in range(20)]


def test_a_log_torn_by_an_earlier_release_on_a_full_disk_is_cut_once_there_is_room(small_disk: Path) -> None:
    log = small_disk / "audit.jsonl"
    append_event(log, "applied", at=AT, revision="r0")
    with log.open("ab") as handle:
        handle.write(b'{"at":"2026-12-08T00:00:00+00:00","event":"resumed","by":"op')  # what 45269f2 left
    hog = Hog(small_disk / "hog")
    hog.start()
    assert hog.full.wait(10)
    hog.stop()
    with pytest.raises(OSError):
        append_event(log, "resumed", at=AT, **{f"note{i}": "z" * 400 for i in range(20)})  # past the page
    assert "torn" in (verify_chain(log) or "")
    (small_disk / "hog").unlink()
    append_event(log, "resumed", at=AT, reason="room again")
    assert [e["event"] for e in read_events(log)] == ["applied", "torn_line_cut", "resumed"]
    assert verify_chain(log) is None
