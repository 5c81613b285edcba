"""The hash-chained audit log: appends chain, and removal, edits and reordering are found."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.audit import GENESIS, append_event, read_events, verify_chain

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
