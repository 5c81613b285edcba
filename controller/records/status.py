"""The status file ``state/status.json``: what runs, what was tried, and why (DESIGN §8).

Always valid JSON for its readers: written atomically (temp file, fsync,
rename).  A status file that exists but cannot be read is never taken as
absent by a pass: ``status_problem`` says why, ``keep_damaged`` moves it
aside (never over another copy), and the pass stops until a person repairs
it.  Text from outside (reasons, logs, errors) is bounded on the way in, so
an old or hand-edited file cannot carry more either.

The watermark ``state/watermark`` is the newest applied revision, kept apart
from the status file so that losing or resetting ``status.json`` never
forgets how far the history has come (DESIGN §9 step 2).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from controller.records.files import atomic_write, fsync_dir
from controller.untrusted import bounded, bounded_lines

Phase = Literal["InSync", "Progressing", "Degraded", "Suspended"]
Result = Literal["applied", "unchanged", "refused", "failed", "rolled_back"]
Text = Annotated[str, AfterValidator(bounded)]
LogExcerpt = Annotated[str, AfterValidator(bounded_lines)]
DAMAGED_SUFFIX = ".damaged-"
_REVISION = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SourceStatus(_Record):
    """The manifest repository as last seen."""

    url: str
    branch: str
    head: str | None = None
    fetched_at: datetime | None = None
    last_error: Text | None = None
    stale: bool = False


class ImageSource(_Record):
    """Where the applied image was built from, as its verified provenance attestation says (DESIGN §14)."""

    repository: Text
    ref: Text | None = None
    commit: Text | None = None


class AppliedStatus(_Record):
    """The revision that runs ("" when a break-glass rollback restored a container without one)."""

    revision: str
    image: Text
    signer: Text
    applied_at: datetime
    image_signer: Text | None = None  # the cosign key, or the keyless identity and issuer, that signed the image
    image_source: ImageSource | None = None  # absent in the previous release's status files


class AttemptStatus(_Record):
    """The last decision about a revision."""

    revision: str | None
    result: Result
    reason: Text
    code: str | None = None  # the reason as a constant (errors.Reason), for alerts and tools
    at: datetime
    logs: LogExcerpt | None = None


class ContainerStatus(_Record):
    """The runtime container as Docker shows it."""

    name: str
    id: str | None = None
    image: Text | None = None
    state: Text = "missing"
    health: Text = "none"
    node: Text | None = None  # Swarm mode: the node the runtime's task runs on
    task: Text | None = None  # Swarm mode: the running task's id (``id`` is its container's)


class AuditAnchor(_Record):
    """The audit log's tail as last written: ``history --verify`` refuses a log that ends elsewhere."""

    events: int
    head: str  # SHA-256 of the newest line


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
    quarantined: str | None = None  # "content:<sha256>" or, for a refusal before the content is known, "<head>:<host>"
    audit: AuditAnchor | None = None


def read_status(path: Path) -> Status | None:
    """The status file, or None when it is absent or unreadable."""
    try:
        return Status.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None


def write_status(path: Path, status: Status) -> None:
    """Replace the status file atomically."""
    atomic_write(path, status.model_dump_json(indent=2).encode() + b"\n", mode=0o644)


def applied_revision(status: Status | None) -> str | None:
    """The applied revision the status records (None: first deploy, or a rollback to a container without one)."""
    return status.applied.revision or None if status and status.applied else None


def status_problem(path: Path) -> str | None:
    """Why a status file that exists cannot be used (None: it is fine, or there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    try:
        Status.model_validate(json.loads(data.decode("utf-8")))
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text"
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            return f"{path} does not match the status schema ({exc.error_count()} errors)"
        return f"{path} is not valid JSON ({bounded(str(exc), limit=80)})"
    return None


def keep_damaged(path: Path, *, now: datetime) -> Path:
    """Move an unreadable status file aside under a name of its own; never over an existing copy."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        copy = path.with_name(f"{path.name}{DAMAGED_SUFFIX}{stamp}" + (f".{attempt}" if attempt else ""))
        try:
            os.link(path, copy)  # fails when the name is taken: nothing is overwritten
        except FileExistsError:
            continue
        path.unlink()
        fsync_dir(path.parent)
        return copy
    raise FileExistsError(f"too many damaged copies of {path}")


def damaged_copies(path: Path) -> list[Path]:
    """Damaged status files kept aside and not yet dealt with by a person, oldest first."""
    return sorted(path.parent.glob(f"{path.name}{DAMAGED_SUFFIX}*"))


def read_watermark(path: Path) -> str | None:
    """The newest applied revision, or None when there is no (usable) watermark."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _REVISION.match(text) else None


def write_watermark(path: Path, revision: str) -> None:
    """Remember ``revision`` as the newest applied one (atomically)."""
    atomic_write(path, f"{revision}\n".encode(), mode=0o644)
