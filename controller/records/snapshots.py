"""Prior-state snapshots: what ran before the controller acted, one JSON file each.

Written atomically before any container is stopped, so a person (or
``rollback``) can always see and restore what ran before a change.  The
newest ``KEEP`` are kept.  ``rollback`` names a snapshot by its id only (never a
path), takes only this environment's, and re-judges what it restores by today's
contract, with ``DATABASE_URL`` from today's ``.env``: a snapshot file is host
state, not a trusted input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.errors import Reason, Refused
from controller.model.desired import (
    LABEL_ENVIRONMENT,
    LABEL_MANAGED_BY,
    LABEL_MANIFEST,
    LABEL_REVISION,
    MANAGED_BY,
    database_reasons,
    keep_reference,
    parse_image,
)
from controller.model.manifest import manifest_reasons, printable
from controller.records.files import atomic_write

KEEP = 20
SNAPSHOT_ID = re.compile(r"\d{8}T\d{12}Z-(?:[0-9a-f]{12}|none)")  # what ``snapshot_id`` writes
_REVISION_PREFIX = re.compile(r"[0-9a-f]{12}")
_HEX = re.compile(r"[0-9a-f]*")


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
    prefix = (revision or "")[:12]
    return f"{now:%Y%m%dT%H%M%S%fZ}-{prefix if _REVISION_PREFIX.fullmatch(prefix) else 'none'}"


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


def find_snapshot(folder: Path, snapshot_id: str | None, *, environment: str) -> Snapshot:
    """The snapshot ``snapshot_id`` (an id, never a path), or the newest that recorded a container;
    only ``environment``'s."""
    if snapshot_id:
        if not SNAPSHOT_ID.fullmatch(snapshot_id):
            raise Refused(
                f"'{printable(snapshot_id)}' is not a snapshot id (like 20261127T101500000000Z-0123456789ab; "
                "'history' lists them)",
                code=Reason.BAD_SNAPSHOT,
            )
        path = folder / f"{snapshot_id}.json"
        if not path.is_file():
            raise Refused(f"no snapshot named {snapshot_id}", code=Reason.BAD_SNAPSHOT)
        snapshot = read_snapshot(path)
        if snapshot.environment != environment:
            raise Refused(
                f"snapshot {snapshot_id} is of environment '{printable(snapshot.environment)}', not '{environment}'",
                code=Reason.BAD_SNAPSHOT,
            )
        return snapshot
    for snapshot in list_snapshots(folder):
        if snapshot.container is not None and snapshot.environment == environment:
            return snapshot
    raise Refused("there is no snapshot of a prior container to restore", code=Reason.BAD_SNAPSHOT)


def restorable(snapshot: Snapshot, *, repository: str, dotenv: Mapping[str, str]) -> Snapshot:
    """``snapshot`` with what it would restore re-judged by the contract, as a manifest would be:
    the image from the configured repository, pinned; valid env; this environment's labels;
    ``DATABASE_URL`` from the current ``.env``, never from the snapshot."""
    prior = snapshot.prior
    if not prior or not prior.get("image"):
        return snapshot  # the rollout refuses it, naming the snapshot
    environment = snapshot.environment
    image = _pinned(str(prior["image"]), environment=environment, repository=repository)
    env = prior.get("env") or {}
    env = {k: v for k, v in env.items() if k != "DATABASE_URL"} if isinstance(env, dict) else env
    reasons = manifest_reasons({"environment": environment, "image": image, "env": env}, environment=environment)
    try:
        parse_image(image, repository=repository, environment=environment)
    except Refused as exc:
        reasons += exc.reasons
    labels = prior.get("labels") or {}
    reasons += _label_reasons(labels if isinstance(labels, dict) else {}, environment=environment)
    reasons += database_reasons(dotenv.get("DATABASE_URL"), environment=environment)
    if reasons:
        raise Refused([f"snapshot {snapshot.id}: {reason}" for reason in reasons], code=Reason.BAD_SNAPSHOT)
    restored = {
        "image": image,
        "env": {**env, "DATABASE_URL": dotenv["DATABASE_URL"]},
        "labels": {**labels, LABEL_ENVIRONMENT: environment, LABEL_MANAGED_BY: MANAGED_BY},
    }
    return snapshot.model_copy(update={"prior": restored})


def _pinned(image: str, *, environment: str, repository: str) -> str:
    """The pinned reference of a kept local copy (``dreichor/keep-<env>:<hex>``); anything else as it is."""
    kept = keep_reference("x:", environment)
    if image.startswith(kept) and len(image) == len(kept) + 64:
        return f"{repository}@sha256:{image[len(kept) :]}"
    return image


def _label_reasons(labels: dict[str, object], *, environment: str) -> list[str]:
    reasons = []
    for name, expected in ((LABEL_ENVIRONMENT, environment), (LABEL_MANAGED_BY, MANAGED_BY)):
        value = labels.get(name, expected)
        if value != expected:
            reasons.append(f"label {name} is '{printable(str(value))}', not '{expected}'")
    for name in (LABEL_REVISION, LABEL_MANIFEST):
        value = labels.get(name, "")
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            reasons.append(f"label {name} is '{printable(str(value))}', not a hexadecimal id")
    reasons += [f"label {printable(str(k))} is not a string" for k, v in labels.items() if not isinstance(v, str)]
    return reasons
