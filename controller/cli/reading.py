"""The commands that read what the host keeps: ``status`` and ``history``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from controller.cli.environment import config_file, service_for
from controller.cli.exits import EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from controller.cli.render import (
    all_json,
    all_lines,
    audit_lines,
    check_code,
    print_json,
    snapshot_lines,
    status_lines,
    wants_colour,
)
from controller.errors import ConfigError
from controller.glance import Glance
from controller.model.config import DEFAULT_INTERVAL, default_root


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: print the status file; before the first pass, say so (0, or 1 with ``--check``).

    A status file that exists but cannot be read is an error (1).  ``--check``: 0 in sync and
    healthy, 3 out of sync, 4 the container is unhealthy, missing or unknown (docs/design.md §7).
    """
    if args.all:
        return _status_all(args)
    service = Glance.from_file(config_file(args), environment=getattr(args, "environment", None))  # no pass loaded
    status = service.status()
    if status is None and not service.paths.status.exists():
        reason = f"no pass has run yet: {service.paths.status} does not exist"
        if args.json:
            print_json({"environment": service.config.environment, "phase": None, "reason": reason})
        else:
            print(f"environment: {service.config.environment}   {reason}")
        return EXIT_ERROR if args.check else EXIT_OK
    if status is None:
        raise ConfigError(f"cannot read the status file {service.paths.status}: it is not a valid status")
    if args.json:
        print(status.model_dump_json(indent=2))
    else:
        print("\n".join(status_lines(status, now=datetime.now(UTC), colour=wants_colour(sys.stdout))))
        if service.interrupted():
            print("swap:        in flight, or interrupted by a crash: the next pass finishes or undoes it")
    return (
        check_code(
            status,
            now=datetime.now(UTC),
            interval=service.config.source.interval,
            pass_may_take=service.config.health.timeout,
        )
        if args.check
        else EXIT_OK
    )


def _status_all(args: argparse.Namespace) -> int:
    """``status --all``: every environment on this host in one table (``--json``: a list).

    With ``--check``, the worst code of the environments read (4 over 3 over 0), 1 when none is.
    """
    if getattr(args, "config", None) or getattr(args, "environment", None):
        raise ConfigError("status --all reads every environment under the root: leave out -e and --config")
    from controller.service import host_statuses

    rows = host_statuses(default_root())
    if args.json:
        print(json.dumps(all_json(rows), indent=2))
    elif rows:
        print("\n".join(all_lines(rows)))
    else:
        print(f"no environment under {default_root()} (set DREICHOR_ROOT, or run 'dreichor-controller init -e ENV')")
    if not args.check:
        return EXIT_OK
    now = datetime.now(UTC)  # each controller's own interval is in its config: the default's three intervals here
    codes = [check_code(row.status, now=now, interval=DEFAULT_INTERVAL) for row in rows if row.status is not None]
    return max(codes) if codes else EXIT_ERROR


def cmd_history(args: argparse.Namespace) -> int:
    """``history``: snapshots, audit events; ``--verify`` checks the chain (3 when broken)."""
    history = service_for(args).history(verify=args.verify)
    broken = history.broken
    if args.json:
        print_json(
            {
                "snapshots": [{"id": s.id, "revision": s.revision, "image": s.image} for s in history.snapshots],
                "events": history.events,
                "chain": ("broken: " + broken) if broken else "ok" if args.verify else None,
            }
        )
        return EXIT_REFUSED if broken else EXIT_OK
    print("\n".join(snapshot_lines(history.snapshots)))
    print("\n".join(audit_lines(history.events)))
    if args.verify:
        print(f"audit chain: {'BROKEN: ' + broken if broken else 'intact'}")
    return EXIT_REFUSED if broken else EXIT_OK
