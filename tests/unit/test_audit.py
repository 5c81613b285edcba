"""The hash-chained audit log: appends chain, and removal, edits and reordering are found."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.records import audit
from controller.records.audit import (
    GENESIS,
    NewestEvent,
    anchor,
    append_event,
    newest_event,
    read_events,
    verify_chain,
)

AT = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    for n, event in enumerate(["applied", "refused", "rolled_back", "suspended"]):
        append_event(path, event, at=AT, revision=f"r{n}", reason=f"reason {n}")
    return path


def test_each_line_carries_the_hash_of_the_one_before(log: Path) -> None:
    events = read_events(log)
    assert [e["event"] for e in events] == ["applied", "refused", "rolled_back", "suspended"]
    assert events[0]["prev"] == GENESIS
    assert verify_chain(log) is None


@pytest.mark.parametrize(
    ("tamper", "line"),
    [
        (lambda lines: lines[:1] + lines[2:], 2),
        (lambda lines: [lines[0], lines[1].replace("refused", "applied"), *lines[2:]], 3),
        (lambda lines: [lines[1], lines[0], *lines[2:]], 1),
        (lambda lines: [*lines[:3], "not json"], 4),
    ],
    ids=["removed", "edited", "reordered", "garbage"],
)
def test_a_tampered_log_names_the_first_broken_line(log: Path, tamper, line: int) -> None:  # type: ignore[no-untyped-def]
    lines = log.read_text().splitlines()
    log.write_text("\n".join(tamper(lines)) + "\n")
    broken = verify_chain(log)
    assert broken is not None and broken.startswith(f"audit line {line} ")


def test_an_unknown_event_is_a_bug_not_a_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        append_event(tmp_path / "a.jsonl", "deployed", at=AT)


def test_a_missing_log_is_an_empty_intact_chain(tmp_path: Path) -> None:
    assert read_events(tmp_path / "none.jsonl") == []
    assert verify_chain(tmp_path / "none.jsonl") is None


def test_lines_are_compact_sorted_json(log: Path) -> None:
    first = log.read_text().splitlines()[0]
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":"))


def test_the_anchor_counts_lines_and_digests_the_newest(log: Path) -> None:
    found = anchor(log)
    assert found is not None and found.events == 4
    assert verify_chain(log, found) is None


@pytest.mark.parametrize(("keep", "missing"), [(3, "1 event missing"), (0, "4 events missing")])
def test_a_cut_tail_is_refused_against_the_anchor(log: Path, keep: int, missing: str) -> None:
    recorded = anchor(log)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:keep]))
    assert verify_chain(log) is None  # the chain alone cannot see it
    broken = verify_chain(log, recorded)
    assert broken is not None and missing in broken


def test_a_tail_cut_then_rewritten_to_the_same_length_is_refused(log: Path) -> None:
    recorded = anchor(log)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:3]))
    append_event(log, "resumed", at=AT, reason="quietly")
    broken = verify_chain(log, recorded)
    assert broken is not None and "audit line 4 is not the line" in broken


def test_events_appended_after_the_anchor_are_fine(log: Path) -> None:
    recorded = anchor(log)
    append_event(log, "resumed", at=AT)
    assert verify_chain(log, recorded) is None


def test_a_last_line_longer_than_any_window_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    record = {"at": AT.isoformat(), "event": "refused", "prev": GENESIS, "reason": "x" * 300_000}
    path.write_bytes(json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    append_event(path, "resumed", at=AT)
    assert verify_chain(path) is None


def test_field_values_are_bounded_before_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    append_event(path, "refused", at=AT, reason="\x1b[2J" + "r" * 100_000)
    line = path.read_bytes()
    assert len(line) < 1000 and b"\\u001b" not in line


@pytest.mark.parametrize("chunk", [7, 64, 65536])
def test_the_newest_event_of_a_kind_read_from_the_end_is_the_forward_scans_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    path = tmp_path / "audit.jsonl"
    kinds = ["applied", "refused", "rolled_back", "drift_repaired", "suspended"]
    for n in range(300):
        append_event(path, kinds[n * 7 % 5] if n < 290 else "refused", at=AT, revision=f"r{n}", reason="x" * (n % 97))
    with path.open("ab") as handle:
        handle.write(b"not json\n\n")  # a damaged tail line is skipped, as read_events skips it
    monkeypatch.setattr(audit, "CHUNK", chunk)
    for wanted in ({"applied"}, {"applied", "drift_repaired"}, {"suspended"}, {"recovered"}):
        forward = [e for e in read_events(path) if e["event"] in wanted]
        assert newest_event(path, frozenset(wanted)) == (forward[-1] if forward else None)
    assert newest_event(tmp_path / "none.jsonl", frozenset({"applied"})) is None


def test_the_kept_newest_event_follows_appends_restores_and_damage(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    newest = NewestEvent(frozenset({"applied"}))
    assert newest.get(path) is None  # no log yet
    append_event(path, "applied", at=AT, revision="r1")
    assert newest.get(path)["revision"] == "r1"  # type: ignore[index]
    append_event(path, "refused", at=AT, revision="r2", reason='"event":"applied" and "applied", quoted')
    assert newest.get(path)["revision"] == "r1"  # type: ignore[index]  # a value that quotes the event is no event
    append_event(path, "applied", at=AT, revision="r3")
    assert newest.get(path)["revision"] == "r3"  # type: ignore[index]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))  # cut back
    assert newest.get(path)["revision"] == "r1"  # type: ignore[index]
    backup = tmp_path / "backup.jsonl"
    append_event(backup, "refused", at=AT, revision="r8", reason="x" * 300)
    append_event(backup, "applied", at=AT, revision="r9")
    with path.open("r+b") as handle:  # a longer log restored in place: the same inode
        handle.write(backup.read_bytes())
    assert newest.get(path)["revision"] == "r9"  # type: ignore[index]
    with path.open("ab") as handle:  # a torn append: cut off before the next, which stays whole
        handle.write(b'{"at":"x","event":"refu')
    append_event(path, "applied", at=AT, revision="r10")
    assert newest.get(path) == NewestEvent(frozenset({"applied"})).get(path)  # what a restarted daemon reads
    assert newest.get(path)["revision"] == "r10"  # type: ignore[index]
    with path.open("ab") as handle:  # an edited line whose event is no string
        handle.write(b'{"event":["applied"],"revision":"r11"}\n')
    assert newest.get(path)["revision"] == "r10"  # type: ignore[index]
