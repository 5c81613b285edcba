"""Prior-state snapshots: what ran before the controller acted, one JSON file each.

Written atomically before any container is stopped, so a person (or
``rollback``) can always see and restore what ran before a change.  The
newest ``KEEP`` are kept.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.errors import Reason, Refused
from controller.files import atomic_write

KEEP = 20


class Snapshot(BaseModel):
    """The state of an environment's runtime container just before a change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    id: str
    environment: str
    created_at: datetime
    reason: str
    revision: str | None  # the revision the container ran, from its label
    image: str | None  # the pinned reference it was created from
    image_id: str | None
    container: dict[str, Any] | None  # full inspect; None when nothing ran
    prior: dict[str, Any] | None = None  # image, env and labels of what ran, for restoring it
    desired: dict[str, Any]  # what was about to be applied


def snapshot_id(now: datetime, revision: str | None) -> str:
    """Sortable, unique enough: UTC time to the microsecond plus the revision's prefix."""
    return f"{now:%Y%m%dT%H%M%S%fZ}-{(revision or 'none')[:12]}"


def write_snapshot(folder: Path, snapshot: Snapshot, *, keep: int = KEEP) -> Path:
    """Write atomically, then prune to the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{snapshot.id}.json"
    atomic_write(path, snapshot.model_dump_json(indent=2).encode(), mode=0o600)
    for old in list_snapshot_files(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def list_snapshot_files(folder: Path) -> list[Path]:
    """Snapshot files, newest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("*.json") if not p.name.startswith(".")), reverse=True)


def list_snapshots(folder: Path) -> list[Snapshot]:
    """Readable snapshots, newest first (an unreadable file is skipped, not fatal)."""
    snapshots = []
    for path in list_snapshot_files(folder):
        try:
            snapshots.append(read_snapshot(path))
        except Refused:
            continue
    return snapshots


def read_snapshot(path: Path) -> Snapshot:
    """One snapshot file."""
    try:
        return Snapshot.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise Refused(f"snapshot {path.name} is unreadable: {type(exc).__name__}", code=Reason.BAD_SNAPSHOT) from None


def find_snapshot(folder: Path, snapshot_id: str | None) -> Snapshot:
    """The snapshot ``snapshot_id``, or the newest one that recorded a container."""
    if snapshot_id:
        path = folder / f"{snapshot_id}.json"
        if not path.is_file():
            raise Refused(f"no snapshot named {snapshot_id}", code=Reason.BAD_SNAPSHOT)
        return read_snapshot(path)
    for snapshot in list_snapshots(folder):
        if snapshot.container is not None:
            return snapshot
    raise Refused("there is no snapshot of a prior container to restore", code=Reason.BAD_SNAPSHOT)
