"""The operator's commands: ``rollback`` (break-glass), ``suspend`` and ``resume``."""

from __future__ import annotations

import argparse

from controller.cli.environment import notifying, operator, service_for
from controller.cli.exits import EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback [SNAPSHOT]``: restore it, then suspend so the next poll does not undo it."""
    service = service_for(args)
    try:
        with notifying(service):
            snapshot = service.rollback(args.snapshot, reason=args.reason, by=operator())
    finally:
        service.close()
    print(f"restored snapshot {snapshot.id} ({snapshot.image}); suspended until 'dreichor-controller resume'")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """``suspend [--reason TEXT]``: stop acting on new revisions; who and why go to audit, status and page."""
    service = service_for(args)
    by = operator()
    with notifying(service):
        changed = service.suspend(args.reason, by=by)
    if changed:
        print(f"suspended by {by}: {args.reason}")
        return EXIT_OK
    status = service.status()
    held = status.suspension if status else None
    since = f" by {held.by}: {held.reason}" if held else ""
    print(f"already suspended{since}; nothing recorded")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume``: act on new revisions again (from the next pass); say what is true now."""
    service = service_for(args)
    with notifying(service):
        changed = service.resume(by=operator())
    status = service.status()
    sync = f"; sync {status.sync.state}, health {status.health}" if status and status.sync else ""
    print(f"resumed{sync}; the next pass acts on the head" if changed else f"not suspended{sync}; nothing recorded")
    return EXIT_OK
