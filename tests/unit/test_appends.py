"""Appends whole or absent: a short write leaves the file as it was, a torn tail is cut only with its record."""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.records import appends
from controller.records.appends import Tail, append_whole
from controller.records.audit import append_event, read_events, verify_chain

AT = datetime(2026, 12, 8, tzinfo=UTC)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    for n in range(3):
        append_event(path, "applied", at=AT, revision=f"r{n}")
    return path


def short_writes(monkeypatch: pytest.MonkeyPatch, *, keep: int) -> None:
    """Every write takes only ``keep`` bytes of what it is given, as the kernel does on a filling disk."""
    real = os.pwrite

    def short(fd: int, data: bytes, offset: int) -> int:
        return real(fd, data[:keep], offset)

    monkeypatch.setattr(appends, "_pwrite", short)


def test_a_short_write_fails_the_append_and_leaves_the_log_as_it_was(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = log.read_bytes()
    short_writes(monkeypatch, keep=20)
    with pytest.raises(OSError, match="20 of") as failed:
        append_event(log, "refused", at=AT, reason="no room")
    assert failed.value.errno == errno.ENOSPC
    assert log.read_bytes() == before
    assert verify_chain(log) is None


def test_a_torn_tail_is_cut_and_the_cut_recorded_before_the_event(log: Path) -> None:
    torn = b'{"at":"2026-12-08T00:00:00+00:00","event":"appl'
    with log.open("ab") as handle:
        handle.write(torn)
    assert "audit line 4 is torn" in (verify_chain(log) or "")
    append_event(log, "refused", at=AT, reason="after the tear")
    events = read_events(log)
    assert [e["event"] for e in events] == ["applied"] * 3 + ["torn_line_cut", "refused"]
    assert events[3]["bytes"] == len(torn)
    assert events[3]["sha256"] == hashlib.sha256(torn).hexdigest()
    assert verify_chain(log) is None


def test_a_torn_tail_stays_until_there_is_room_for_its_cut(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with log.open("ab") as handle:
        handle.write(b'{"at":"2026-12-08T00:00:00+00:00","event":"applied","revision":"r3","prev":"ab')
    before = log.read_bytes()
    with monkeypatch.context() as patched:
        short_writes(patched, keep=10)  # fewer bytes than the torn tail: it is overwritten, then put back
        with pytest.raises(OSError):
            append_event(log, "refused", at=AT, reason="no room")
    assert log.read_bytes() == before
    append_event(log, "refused", at=AT, reason="room again")
    assert [e["event"] for e in read_events(log)][-2:] == ["torn_line_cut", "refused"]
    assert verify_chain(log) is None


def test_a_file_of_only_torn_bytes_is_cut_to_nothing_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"half a li")
    append_event(path, "applied", at=AT, revision="r0")
    events = read_events(path)
    assert [e["event"] for e in events] == ["torn_line_cut", "applied"]
    assert verify_chain(path) is None


@pytest.mark.parametrize(
    ("content", "tail"),
    [
        (b"", Tail(last=None, torn=b"", end=0)),
        (b"one\n", Tail(last=b"one", torn=b"", end=4)),
        (b"one\ntwo\n", Tail(last=b"two", torn=b"", end=8)),
        (b"one\ntwo\nthr", Tail(last=b"two", torn=b"thr", end=8)),
        (b"thr", Tail(last=None, torn=b"thr", end=0)),
        (b"x" * 70000 + b"\n" + b"y" * 70000, Tail(last=b"x" * 70000, torn=b"y" * 70000, end=70001)),
    ],
    ids=["empty", "one", "two", "torn", "only-torn", "longer-than-a-chunk"],
)
def test_the_tail_is_the_last_whole_line_and_what_follows_it(tmp_path: Path, content: bytes, tail: Tail) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    seen: list[Tail] = []
    append_whole(path, lambda t: seen.append(t) or b"new\n")
    assert seen == [tail]
    assert path.read_bytes() == content[: tail.end] + b"new\n"
