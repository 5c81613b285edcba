"""The remembered revision: every record of what was applied (the watermark, the status file, the
running container's label, the audit log), and the one the history guard holds the target to."""

from __future__ import annotations

from collections.abc import Callable

from controller.engine.port import RuntimeView
from controller.errors import ControllerError
from controller.model.config import Config
from controller.model.containers import ContainerState
from controller.model.desired import LABEL_REVISION
from controller.records import audit
from controller.records.status import Status, applied_revision, read_watermark
from controller.source.git import GitSource

DEPLOYED_EVENTS = frozenset({"applied", "drift_repaired"})  # the events that name what runs


def running_container(engine: Callable[[], RuntimeView]) -> ContainerState | None:
    """The runtime container, or None when there is none or the engine cannot be asked (the guard's view)."""
    try:
        return engine().current()
    except ControllerError:
        return None


def remembered_revisions(
    config: Config, status: Status, running: ContainerState | None, *, deployed: audit.NewestEvent | None = None
) -> tuple[str, ...]:
    """Every record of the applied revision, each once: the watermark, the status file, the running
    container's revision label, the audit log's newest applied event.  Empty only on a host that never deployed."""
    paths = config.paths
    label = running.labels.get(LABEL_REVISION) if running is not None else None
    applied = (deployed or audit.NewestEvent(DEPLOYED_EVENTS)).get(paths.audit)
    logged = str(applied.get("revision") or "") if applied else None
    found = (read_watermark(paths.watermark), applied_revision(status), label, logged)
    return tuple(dict.fromkeys(revision for revision in found if revision))


def newest_revision(records: tuple[str, ...], source: GitSource) -> str | None:
    """The record every other record is an ancestor of: one record that lags (a failed write, a restored
    backup) never makes an older revision the guard.  Without such a record (the records diverge, or one
    is not in the fetched history) the first is returned, and the guard holds the target to all of them."""
    for candidate in records:
        if all(source.is_ancestor(other, candidate) for other in records):
            return candidate
    return records[0] if records else None


def remembered_revision(
    config: Config, status: Status, engine: Callable[[], RuntimeView], source: GitSource
) -> str | None:
    """The newest applied revision the records agree on by ancestry; None only on a host that never deployed."""
    return newest_revision(remembered_revisions(config, status, running_container(engine)), source)
