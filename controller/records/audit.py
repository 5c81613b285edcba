"""The audit log ``state/audit.jsonl``: one JSON line per decision, hash-chained.

Each line carries the SHA-256 of the line before it (``prev``), so a line that
is removed, reordered or edited breaks the chain and ``history --verify``
says where.  The chain alone cannot see a cut tail, so every append also
returns an ``Anchor`` (how many lines, the newest one's digest) that the
status file keeps; ``verify_chain`` given that anchor refuses a log that is
shorter or ends elsewhere.  Field values are bounded (``untrusted.bounded``)
before they are written.  Unchanged polls are not logged: the log is for
decisions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.records.appends import Tail, append_whole
from controller.records.files import FileKey, file_key
from controller.untrusted import bounded

GENESIS = "0" * 64
EVENTS = frozenset(
    {
        "applied",
        "refused",
        "rolled_back",
        "failed",
        "drift_repaired",
        "suspended",
        "resumed",
        "rollback",
        "rewrite_allowed",
        "recovered",
        "waiting_approval",
        "waiting_window",
        "torn_line_cut",
    }
)


CHUNK = 65536


@dataclass(frozen=True)
class Anchor:
    """Where the log ended when last written: its number of lines and the newest line's digest."""

    events: int
    head: str


def _digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The last line, read whole however long it is (backwards, a chunk at a time)."""
    return next(_lines_backwards(path), None)


def anchor(path: Path) -> Anchor | None:
    """The log's anchor as it is now (None: no log, or an empty one)."""
    last = _last_line(path)
    if last is None:
        return None
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(CHUNK), b""))
    return Anchor(events=lines, head=_digest(last))


def _bounded(value: Any) -> Any:
    return bounded(value) if isinstance(value, str) else value


def append_event(path: Path, event: str, *, at: datetime, **fields: Any) -> dict[str, Any]:
    """Append one event, chained to the last line; fsynced before returning, whole or not at all.

    A torn last line (no newline) is cut off, and the cut recorded in a ``torn_line_cut`` event
    written with this one; ``OSError`` when the log has no room for them (the log as it was).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    safe = {key: _bounded(value) for key, value in fields.items()}
    written: dict[str, Any] = {}

    def compose(tail: Tail) -> bytes:
        prev, lines = _digest(tail.last) if tail.last is not None else GENESIS, b""
        if tail.torn:
            cut = {"at": at.isoformat(), "event": "torn_line_cut", "prev": prev, **_cut_fields(tail.torn)}
            line = _line(cut)
            prev, lines = _digest(line), lines + line
        written.clear()
        written.update({"at": at.isoformat(), "event": event, **safe, "prev": prev})
        return lines + _line(written)

    append_whole(path, compose)
    return written


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _cut_fields(torn: bytes) -> dict[str, Any]:
    """What a ``torn_line_cut`` event says of the bytes it cut."""
    return {
        "bytes": len(torn),
        "sha256": hashlib.sha256(torn).hexdigest(),
        "reason": "a line without its end (a crash or a full disk while it was written) was cut off before this append",
    }


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every parseable line, oldest first."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for line in raw.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def newest_event(path: Path, kinds: frozenset[str]) -> dict[str, Any] | None:
    """The newest parseable event of one of ``kinds``, read from the end: what lies before it is not read."""
    wanted = tuple(json.dumps(kind).encode() for kind in kinds)  # "applied", quotes and all
    for line in _lines_backwards(path):
        if not any(marker in line for marker in wanted):
            continue  # a quote inside a JSON string is escaped: a line without the marker is no such event
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str) and event["event"] in kinds:
            return event
    return None


class NewestEvent:
    """``newest_event``, kept while the log is as it was (inode, size, times): a pass that decided
    nothing reads none of it, and any change, an append or a restore in place, is read again."""

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self._kept: tuple[FileKey, dict[str, Any] | None] | None = None

    def get(self, path: Path) -> dict[str, Any] | None:
        """The newest event of ``kinds`` in the log at ``path`` (None: none, or no log)."""
        key = file_key(path)  # stat'ed before it is read
        if key is None or key[1] is None:
            self._kept = None
            return None  # no log (yet)
        if self._kept is None or self._kept[0] != key:
            self._kept = (key, newest_event(path, self.kinds))
        return self._kept[1]


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The log's lines, newest first, a chunk at a time."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        end = handle.seek(0, os.SEEK_END)
        rest = b""  # the start of a line whose beginning is in an earlier chunk
        while end > 0:
            start = max(0, end - CHUNK)
            handle.seek(start)
            lines = (handle.read(end - start) + rest).split(b"\n")
            end = start
            rest = lines.pop(0) if end > 0 else b""
            yield from (line for line in reversed(lines) if line)


def verify_chain(path: Path, anchor: Anchor | None = None) -> str | None:
    """None when the chain holds and reaches ``anchor``; else one sentence naming what is wrong or missing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    previous = GENESIS
    lines = raw.splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines) and not raw.endswith(b"\n"):
                return (
                    f"audit line {number} is torn ({len(line)} bytes without an end, left by a crash or a full "
                    "disk): the next append cuts it off and records the cut"
                )
            return f"audit line {number} is not valid JSON"
        if not isinstance(record, dict) or record.get("prev") != previous:
            return f"audit line {number} does not follow line {number - 1}: a line was removed, reordered or edited"
        previous = _digest(line)
    return _short_of(lines, anchor) if anchor is not None else None


def _short_of(lines: list[bytes], anchor: Anchor) -> str | None:
    """Whether the log still holds the line the status file recorded as its newest."""
    if len(lines) < anchor.events:
        missing = anchor.events - len(lines)
        plural = "s" if missing != 1 else ""
        return (
            f"the audit log has {len(lines)} events but the status file recorded {anchor.events}: "
            f"{missing} event{plural} missing from its end (lines {len(lines) + 1}-{anchor.events})"
        )
    if anchor.events and _digest(lines[anchor.events - 1]) != anchor.head:
        return (
            f"audit line {anchor.events} is not the line the status file recorded as the newest: "
            "the log was cut and rewritten after it"
        )
    return None
