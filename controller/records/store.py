"""The environment's status file and audit log as the service writes them: one writer, anchored.

Every audit append moves the status file's anchor (``audit: {events, head}``)
with it, so ``history --verify`` can tell a cut or edited log; a damaged
status file is kept aside instead of overwritten; the watermark follows each
newly applied revision.  An audit event a full or read-only disk does not take
fails the caller (``StateWriteFailed``, the state-I/O error) and is kept, with its
time, for the next append that can write; a status file that cannot be written
is logged, and ages until the disk takes writes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.model.config import Config
from controller.model.desired import container_name
from controller.records import audit
from controller.records.files import create_new, file_key, write_failure
from controller.records.snapshots import Snapshot, list_snapshots
from controller.records.status import (
    AuditAnchor,
    ContainerStatus,
    SourceStatus,
    Status,
    applied_revision,
    checked_status,
    damaged_copies,
    keep_damaged,
    read_status,
    read_watermark,
    status_problem,
    write_status,
    write_watermark,
)
from controller.untrusted import bounded

log = logging.getLogger("dreichor.records")
HELD_EVENTS = 1000  # audit events held in memory while the state folder takes no write


@dataclass(frozen=True)
class History:
    """``history``'s answer: snapshots (newest first), audit events (oldest first), the chain's state."""

    snapshots: list[Snapshot]
    events: list[dict[str, Any]]
    broken: str | None = None


class StateWriteFailed(OSError):
    """The state folder took no write (full, read-only, gone): one sentence naming the file and the errno."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(exc.errno, write_failure(exc, path))


class Store:
    """Writes one environment's status file, audit log and watermark."""

    def __init__(self, config: Config, *, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.paths = config.paths
        self.clock = clock
        self._anchor: audit.Anchor | None = None  # the audit log's tail after this operation's appends
        self._checked: tuple[object, Status] | None = None  # what ``damage`` parsed, for the ``load`` after it
        self._unwritten: list[tuple[str, dict[str, Any], datetime]] = []  # events a full disk held back

    def append(self, event: str, fields: dict[str, Any], *, at: datetime) -> list[dict[str, Any]]:
        """Append an audit event, after any an earlier full disk held back, and remember the new tail.

        The events written, oldest first.  Raises ``StateWriteFailed`` when the log takes none:
        the event is kept (in this process) with its time, for the next append that can write.
        """
        self._unwritten.append((event, fields, at))
        del self._unwritten[:-HELD_EVENTS]  # a folder that stays read-only for days: the newest are kept
        written: list[dict[str, Any]] = []
        while self._unwritten:
            kind, held, when = self._unwritten[0]
            try:
                written.append(audit.append_event(self.paths.audit, kind, at=when, **held))
            except OSError as exc:
                log.error("cannot append to the audit log", extra={"error": str(exc), "held": len(self._unwritten)})
                raise StateWriteFailed(self.paths.audit, exc) from None
            self._unwritten.pop(0)
            self._anchor = audit.anchor(self.paths.audit)
        return written

    def write(self, status: Status) -> None:
        """Write the status with the audit anchor: after this operation's appends, else as recorded."""
        try:
            anchor = self._anchor or (None if status.audit else audit.anchor(self.paths.audit))
            if anchor is not None:
                status.audit = AuditAnchor(events=anchor.events, head=anchor.head)
            write_status(self.paths.status, status)
        except OSError as exc:
            log.error("cannot write the status file", extra={"error": str(exc)})
        finally:
            self._anchor = None

    def read(self) -> Status | None:
        """The status file, or None when there is none (yet) or it cannot be read.

        Right after ``damage`` read it, and while it is unchanged on disk, that reading is used.
        """
        checked, self._checked = self._checked, None
        if checked is not None and checked[0] == file_key(self.paths.status):
            return checked[1]
        return read_status(self.paths.status)

    def load(self) -> Status:
        """The status file with the configured source, or a fresh one for this environment."""
        config = self.config
        status = self.read()
        if status is not None and status.environment == config.environment:
            status.source.url, status.source.branch = config.source.url, config.source.branch
            return status
        return Status(
            environment=config.environment,
            updated_at=self.clock(),
            source=SourceStatus(url=config.source.url, branch=config.source.branch),
            container=ContainerStatus(name=container_name(config.environment)),
        )

    def remember(self, previous: Status, status: Status, *, guard: str | None) -> None:
        """Move the watermark to a newly applied revision, or a newer head whose content already runs
        (``sync.revision``: the guard advances past content-neutral commits); set it on a host without one.

        Raises ``OSError`` when it cannot be written: a guard that lags is the one record that
        would let an older signed commit back, so the pass that applied must not call itself done.
        """
        applied = _mark(status)
        missing = read_watermark(self.paths.watermark) is None
        revision = applied if applied and (applied != _mark(previous) or missing) else None
        revision = revision or (guard if missing else None)
        if revision is None:
            return
        write_watermark(self.paths.watermark, revision)  # an OSError fails the pass (the service records why)

    def damage(self, *, keep_aside: bool = False) -> str | None:
        """Why passes are stopped by a damaged status file (None: they are not); ``keep_aside`` moves it."""
        path = self.paths.status
        key = file_key(path)
        status, problem = checked_status(path)
        self._checked = (key, status) if status is not None else None
        if problem is not None and keep_aside:
            keep_damaged(path, now=self.clock())
            problem = None
        copies = damaged_copies(path)
        if copies:
            why = status_problem(copies[-1]) or f"{copies[-1].name} was kept aside"
            return (
                f"{why}; nothing is deployed until a person moves it back repaired or deletes it (docs/operations.md)"
            )
        if problem is not None:
            return f"{problem}; the next sync keeps it aside and deploys nothing until a person repairs it"
        return None

    def history(self, *, verify: bool = False) -> History:
        """Snapshots and audit events (text bounded); with ``verify``, whether the chain reaches its anchor."""
        status = self.read()
        recorded = audit.Anchor(status.audit.events, status.audit.head) if status and status.audit else None
        broken = audit.verify_chain(self.paths.audit, recorded) if verify else None
        events = [
            {k: bounded(v) if isinstance(v, str) else v for k, v in e.items()}
            for e in audit.read_events(self.paths.audit)
        ]
        return History(list_snapshots(self.paths.snapshots), events, broken)

    def place_marker(self, reason: str) -> bool:
        """Put the suspension marker down with its reason; False when it already was."""
        return create_new(self.paths.suspended_marker, f"{reason}\n".encode(), mode=0o600)

    def lift_marker(self) -> bool:
        """Take the suspension marker away; False when there was none."""
        try:
            self.paths.suspended_marker.unlink()
        except FileNotFoundError:
            return False
        return True


def _mark(status: Status) -> str | None:
    """Where the history guard stands: the newest verified head whose content runs, else the applied revision."""
    return (status.sync.revision if status.sync else None) or applied_revision(status)
