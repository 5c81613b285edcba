"""The audit log ``state/audit.jsonl``: one JSON line per decision, hash-chained.

Each line carries the SHA-256 of the line before it (``prev``), so a line that
is removed, reordered or edited breaks the chain and ``history --verify``
says where.  Unchanged polls are not logged: the log is for decisions.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

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
    }
)


def _digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> bytes | None:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            lines = handle.read().rstrip(b"\n").split(b"\n")
    except FileNotFoundError:
        return None
    return lines[-1] if lines and lines[-1] else None


def append_event(path: Path, event: str, *, at: datetime, **fields: Any) -> dict[str, Any]:
    """Append one event, chained to the last line; fsynced before returning."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    last = _last_line(path)
    record = {"at": at.isoformat(), "event": event, **fields, "prev": _digest(last) if last else GENESIS}
    line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


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


def verify_chain(path: Path) -> str | None:
    """None when the chain holds; else one sentence naming the first broken line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    previous = GENESIS
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            return f"audit line {number} is not valid JSON"
        if not isinstance(record, dict) or record.get("prev") != previous:
            return f"audit line {number} does not follow line {number - 1}: a line was removed, reordered or edited"
        previous = _digest(line)
    return None
