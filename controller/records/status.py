"""The status file ``state/status.json``: what runs, what was tried, and why (docs/design.md §8).

Always valid JSON for its readers: written atomically (temp file, fsync,
rename).  A status file that exists but cannot be read is never taken as
absent by a pass: ``status_problem`` says why, ``keep_damaged`` moves it
aside (never over another copy), and the pass stops until a person repairs
it.  Text from outside (reasons, logs, errors) is bounded on the way in, so
an old or hand-edited file cannot carry more either.

The watermark ``state/watermark`` is the newest applied revision, kept apart
from the status file so that losing or resetting ``status.json`` never
forgets how far the history has come (docs/design.md §9 step 2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.model import windows
from controller.records.files import atomic_write, fsync_dir
from controller.untrusted import bounded, bounded_lines

Phase = Literal["InSync", "Progressing", "Degraded", "Suspended"]
Result = Literal["applied", "unchanged", "refused", "failed", "rolled_back"]
# docs/design.md §16: whether the head's content runs, and how the container is, kept apart.
SyncState = Literal["InSync", "OutOfSync", "Waiting", "Suspended"]
Health = Literal["Healthy", "Unhealthy", "Missing", "Unknown"]
SYNC_STATES: tuple[SyncState, ...] = ("InSync", "OutOfSync", "Waiting", "Suspended")
HEALTHS: tuple[Health, ...] = ("Healthy", "Unhealthy", "Missing", "Unknown")
Text = Annotated[str, AfterValidator(bounded)]
LogExcerpt = Annotated[str, AfterValidator(bounded_lines)]
DAMAGED_SUFFIX = ".damaged-"
_CONTENT = "content:"
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
    """Where the applied image was built from, as its provenance's signing certificate says (docs/design.md §14)."""

    repository: Text
    ref: Text | None = None
    commit: Text | None = None
    build_signer: Text | None = None  # the certificate's Build Signer URI; absent before this release


class AppliedStatus(_Record):
    """The revision that runs ("" when a break-glass rollback restored a container without one)."""

    revision: str
    image: Text
    signer: Text
    applied_at: datetime
    image_signer: Text | None = None  # the cosign key, or the keyless identity and issuer, that signed the image
    image_source: ImageSource | None = None  # absent in the previous release's status files
    tag: Text | None = None  # the tag the manifest declared beside the digest (docs/design.md §8), if any
    # applied although the deploy window was closed: who and why; left out when not, as earlier releases wrote it
    break_glass: BreakGlass | None = Field(default=None, exclude_if=lambda value: value is None)

    def version(self) -> str:
        """The running version for people: the declared tag, else the digest's first 12 hex digits."""
        if self.tag:
            return self.tag
        digest = self.image.rpartition("@sha256:")[2]
        return f"sha256:{digest[:12]}" if digest else "-"


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


class SyncStatus(_Record):
    """Whether the head's content runs (docs/design.md §16), and in one sentence why not."""

    state: SyncState
    reason: Text = ""
    revision: str | None = None  # the newest verified head whose content runs: the history guard's mark


class ApprovalsStatus(_Record):
    """The declared content a change waits on, and who approved it (docs/design.md §15)."""

    content: str  # SHA-256 of envs/<env>.yaml
    have: list[Text]
    need: int
    missing: list[Text] = []
    expires: dict[str, datetime] = {}  # person → when their approval expires
    not_counted: list[Text] = []  # why files in the folder did not count (the first few)


class BreakGlass(_Record):
    """Who applied a change although the deploy window was closed, and why (``sync --break-glass --reason``)."""

    by: Text
    reason: Text


class WindowStatus(_Record):
    """The deploy window at the last pass (docs/design.md §18), on a host with ``windows``."""

    open: bool
    reason: Text  # "open until Mon 21:00 CET (in 2 h)" or "opens Mon 18:00 CET (in 3 h 12 min)"
    next_change: datetime | None = None  # when ``open`` flips; None: not within the search
    waiting: str | None = None  # the content (SHA-256 of envs/<env>.yaml) that waits for the window to open


class Suspension(_Record):
    """Who suspended the environment, why, and when (``suspend --reason``)."""

    by: Text
    reason: Text
    at: datetime


class AuditAnchor(_Record):
    """The audit log's tail as last written: ``history --verify`` refuses a log that ends elsewhere."""

    events: int
    head: str  # SHA-256 of the newest line


@dataclass(frozen=True)
class QuarantineKey:
    """What a refusal or rollback holds back: built, matched, read back and described here, nowhere else.

    The status file stores it as text (``quarantined``): ``content:<sha256>`` for the desired
    container that would have run (``reconcile.quarantine.content_key``), or, for a refusal before
    the content was known, ``<head>:<host digest>``.  Earlier releases wrote the same two forms.
    """

    content: str | None = None
    head: str | None = None
    host: str = ""

    @classmethod
    def of_content(cls, content: str) -> QuarantineKey:
        """The key of a desired container's content."""
        return cls(content=content)

    @classmethod
    def of_head(cls, head: str, host: str) -> QuarantineKey:
        """The key of a head refused before its content was known, under the host's files and settings."""
        return cls(head=head, host=host)

    @classmethod
    def parse(cls, text: str | None) -> QuarantineKey | None:
        """The key the status file stores (None: nothing is quarantined)."""
        if not text:
            return None
        if text.startswith(_CONTENT):
            return cls.of_content(text.removeprefix(_CONTENT))
        head, _, host = text.partition(":")
        return cls.of_head(head, host)

    def __str__(self) -> str:
        return f"{_CONTENT}{self.content}" if self.content is not None else f"{self.head}:{self.host}"

    def holds(self, stored: str | None) -> bool:
        """Whether the status file's ``quarantined`` is this key."""
        return stored == str(self)

    def describe(self, *, head: str | None) -> str:
        """For people: what is held (the content of ``head``, or a commit) and what lets it through."""
        until = "not retried until a different change, a change of the host's trust files or .env, or 'sync --force'"
        if self.content is not None:  # the quarantine holds the head's content (a drift repair may be the last attempt)
            revision = f" of {head[:12]}" if head else ""
            return f"the content{revision} (desired container sha256:{self.content[:16]}…): {until}"
        return f"commit {(self.head or '')[:12]} (refused before its content was read): {until}"


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
    quarantined: str | None = None  # a QuarantineKey as text
    audit: AuditAnchor | None = None
    approvals: ApprovalsStatus | None = None  # while a change waits for approvals
    # the deploy window, on a host with windows (docs/design.md §18); without them the file is as it was
    window: WindowStatus | None = Field(default=None, exclude_if=lambda value: value is None)
    sync: SyncStatus | None = None  # filled on load for a file an earlier release wrote
    health: Health | None = None
    suspension: Suspension | None = None

    def quarantine_text(self) -> str | None:
        """The quarantine for people: what is held, named readably, and what lets it through (None: nothing)."""
        key = QuarantineKey.parse(self.quarantined)
        return key.describe(head=self.source.head) if key else None

    def synced(self) -> SyncStatus:
        """``sync``: set on every load (``_derive_glance``), derived here for a status built without it."""
        return self.sync if self.sync is not None else sync_of(self)

    @model_validator(mode="after")
    def _derive_glance(self) -> Status:
        """A status file from before docs/design.md §16 loads with ``sync`` and ``health`` derived from what it has."""
        if self.sync is None:
            self.sync = sync_of(self)
        if self.health is None:
            self.health = health_of(self.container)
        return self


def waiting_reason(approvals: ApprovalsStatus) -> str:
    """``waiting for approvals (1 of 2: alice)``: the held change, in the status, page and logs."""
    names = f": {', '.join(approvals.have)}" if approvals.have else ""
    return f"waiting for approvals ({len(approvals.have)} of {approvals.need}{names})"


def health_of(container: ContainerStatus) -> Health:
    """The container's health in one word: Unknown when the engine could not say, Missing when absent."""
    if container.state == "unknown":
        return "Unknown"
    if container.state == "missing":
        return "Missing"
    if container.state != "running" or container.health == "unhealthy":
        return "Unhealthy"
    return "Unknown" if container.health == "starting" else "Healthy"


def sync_of(status: Status) -> SyncStatus:
    """Whether the head's content runs, from what the status records (docs/design.md §16).

    ``revision`` (the newest verified head whose content runs) is kept from the status: only a pass moves it.
    """
    mark = status.sync.revision if status.sync else None
    if status.suspended:
        who = status.suspension
        why = f"suspended by {who.by}: {who.reason}" if who else "suspended until 'dreichor-controller resume'"
        return SyncStatus(state="Suspended", reason=why, revision=mark)
    if status.approvals is not None:  # held, not refused: the last attempt stays the previous decision
        return SyncStatus(state="Waiting", reason=waiting_reason(status.approvals), revision=mark)
    if status.window is not None and status.window.waiting is not None:
        return SyncStatus(state="Waiting", reason=windows.waiting_reason(status.window.reason), revision=mark)
    attempt = status.last_attempt
    if attempt is not None and attempt.result in ("refused", "failed", "rolled_back"):
        held = ""
        if status.quarantined:  # 'sync --force' is offered only where trying the same change again can help
            held = "; held until a different change" + (" or 'sync --force'" if attempt.result == "rolled_back" else "")
        why = f"{attempt.result.replace('_', ' ')}: {attempt.reason}{held}"
        return SyncStatus(state="OutOfSync", reason=why, revision=mark)
    if status.applied is None:
        return SyncStatus(state="OutOfSync", reason="nothing applied yet", revision=mark)
    if status.quarantined:
        return SyncStatus(state="OutOfSync", reason=f"held: {status.quarantine_text()}", revision=mark)
    return SyncStatus(state="InSync", reason="the head's content runs", revision=mark or status.applied.revision)


def read_status(path: Path) -> Status | None:
    """The status file, or None when it is absent or unreadable.

    A caller without the permission to read it gets ``PermissionError``: its own limit is not the host's damage.
    """
    try:
        return Status.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except PermissionError:
        raise
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
    return checked_status(path)[1]


def checked_status(path: Path) -> tuple[Status | None, str | None]:
    """The status file read once: what it holds (None when absent or unusable), and why it is unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except PermissionError:  # the caller's limit (not root, not the controller's user), not a damaged file
        raise
    except OSError as exc:
        return None, f"{path} cannot be read: {exc.strerror or exc}"
    try:
        return Status.model_validate(json.loads(data.decode("utf-8"))), None
    except UnicodeDecodeError:
        return None, f"{path} is not UTF-8 text"
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            return None, f"{path} does not match the status schema ({exc.error_count()} errors)"
        return None, f"{path} is not valid JSON ({bounded(str(exc), limit=80)})"


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
