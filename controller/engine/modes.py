"""Switching ``docker.mode``: never two runtimes of one environment, never the other mode's journal lost.

Each mode sees only its own kind of runtime: container mode a container by
name, Swarm mode a service by name.  A switch of ``docker.mode`` while the old
runtime still runs would therefore start the new mode's runtime beside it, on
the same bind mounts: two writers.  So each engine, when it is about to create
(it found no runtime of its own mode), looks for the other mode's and refuses
with the steps that switch safely; the steady no-change pass never pays for
the look.  The crash journal says which mode wrote it (a container-mode
journal predates the field and has none): the other mode leaves it alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from controller.errors import Reason, Refused

log = logging.getLogger("dreichor.modes")
CONTAINER = "container"
SWARM = "swarm"
# Each sentence stays within ``untrusted.MAX_CHARS``: a reason longer than that is cut.
SWITCH = "To switch: 'dreichor-controller suspend', {remove}, set docker.mode: {mode}, 'dreichor-controller resume'"
SERVICE_FOUND = "{name} runs as a Swarm service; a container beside it would share its volumes. " + SWITCH
CONTAINER_FOUND = "{names} runs in container mode; a Swarm service beside it would share its volumes. " + SWITCH
FOREIGN_JOURNAL = (
    "{path} holds an unfinished {other}-mode change: set docker.mode: {other} again to finish it, "
    "or delete the file once the {other}-mode runtime is removed"
)


class JournalFile(Protocol):
    """The crash journal as this module needs it (``rollout.Journal``)."""

    path: Path

    def read(self) -> dict[str, Any] | None:
        """The journal left by an interrupted run, if any."""
        ...


def service_found(name: str) -> Refused:
    """Container mode found the environment's Swarm service (or its task containers)."""
    remove = f"'docker service rm {name}' on a manager"
    return Refused(SERVICE_FOUND.format(name=name, remove=remove, mode=CONTAINER), code=Reason.MODE_CONFLICT)


def container_found(names: list[str]) -> Refused:
    """Swarm mode found the environment's standalone container(s)."""
    listed = " ".join(sorted(names))
    remove = f"'docker stop {listed} && docker rm {listed}'"
    return Refused(CONTAINER_FOUND.format(names=listed, remove=remove, mode=SWARM), code=Reason.MODE_CONFLICT)


def journal_mode(journal: dict[str, Any]) -> str:
    """The mode that wrote a journal: container-mode journals carry no ``mode``."""
    return str(journal.get("mode") or CONTAINER)


def foreign_journal(journal: JournalFile, *, mode: str) -> str | None:
    """Why the journal is not ``mode``'s to act on (None: absent, unreadable or ours)."""
    data = journal.read()
    if not data or journal_mode(data) == mode:
        return None
    return FOREIGN_JOURNAL.format(path=journal.path, other=journal_mode(data))


def leave_foreign_journal(journal: JournalFile, *, mode: str) -> bool:
    """At recovery: True (with a warning) when the journal is the other mode's, so it is left alone."""
    foreign = foreign_journal(journal, mode=mode)
    if foreign is not None:
        log.warning("crash journal left alone", extra={"reason": foreign})
    return foreign is not None


def refuse_foreign_journal(journal: JournalFile, *, mode: str) -> None:
    """Before a change: the other mode's unfinished change is not overwritten by this mode's journal."""
    foreign = foreign_journal(journal, mode=mode)
    if foreign is not None:
        raise Refused(foreign, code=Reason.MODE_CONFLICT)
