"""The status file ``state/status.json``: what runs, what was tried, and why (DESIGN §8).

Always valid JSON for its readers: written atomically (temp file, fsync,
rename).  A status file that cannot be read is treated as absent, never as a
reason to act; the controller's own records survive in the audit log and
snapshots.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.config import HostPaths
from controller.files import atomic_write

Phase = Literal["InSync", "Progressing", "Degraded", "Suspended"]
Result = Literal["applied", "unchanged", "refused", "failed", "rolled_back"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SourceStatus(_Record):
    """The manifest repository as last seen."""

    url: str
    branch: str
    head: str | None = None
    fetched_at: datetime | None = None
    last_error: str | None = None
    stale: bool = False


class AppliedStatus(_Record):
    """The revision that runs."""

    revision: str
    image: str
    signer: str
    applied_at: datetime


class AttemptStatus(_Record):
    """The last decision about a revision."""

    revision: str | None
    result: Result
    reason: str
    code: str | None = None  # the reason as a constant (errors.Reason), for alerts and tools
    at: datetime
    logs: str | None = None


class ContainerStatus(_Record):
    """The runtime container as Docker shows it."""

    name: str
    id: str | None = None
    image: str | None = None
    state: str = "missing"
    health: str = "none"
    node: str | None = None  # Swarm mode: the node the runtime's task runs on
    task: str | None = None  # Swarm mode: the running task's id (``id`` is its container's)


class Status(_Record):
    """The whole status file."""

    version: int = 1
    environment: str
    phase: Phase = "Progressing"
    updated_at: datetime
    source: SourceStatus
    applied: AppliedStatus | None = None
    last_attempt: AttemptStatus | None = None
    container: ContainerStatus
    last_snapshot: str | None = None
    suspended: bool = False
    quarantined: str | None = None


def read_status(path: Path) -> Status | None:
    """The status file, or None when it is absent or unreadable."""
    try:
        return Status.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None


def write_status(path: Path, status: Status) -> None:
    """Replace the status file atomically."""
    atomic_write(path, status.model_dump_json(indent=2).encode() + b"\n", mode=0o644)


def applied_revision(paths: HostPaths) -> str | None:
    """The revision the status file says is applied (None: first deploy, or no readable status)."""
    status = read_status(paths.status)
    return status.applied.revision if status and status.applied else None
