"""What every command that acts on an environment needs: its config file, its service (built by
``compose``), the notifications it sends while it runs, and who runs it."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from controller.cli.render import fail
from controller.errors import ConfigError
from controller.model.config import config_path

if TYPE_CHECKING:  # the service and compose load the pass: imported by the commands that build one, when they run
    from controller.service import EnvironmentService


def config_file(args: argparse.Namespace) -> Path:
    """``--config``, else ``-e ENV`` under the root, else ``$DREICHOR_CONFIG`` (docs/design.md §7)."""
    return config_path(getattr(args, "config", None), environment=getattr(args, "environment", None))


def service_for(args: argparse.Namespace) -> EnvironmentService:
    """The service for the environment ``--config`` or ``-e`` names (``-e`` must agree with the config)."""
    from controller import compose

    service = compose.service_from_file(config_file(args))
    environment = getattr(args, "environment", None)
    if environment and service.config.environment != environment:
        raise ConfigError(f"the config is for '{service.config.environment}', not '{environment}' (-e)")
    return service


@contextlib.contextmanager
def notifying(service: EnvironmentService) -> Iterator[None]:
    """Tell the command's decisions, then wait (``DRAIN_SECONDS`` at most) for them to go out.

    An unusable notification config does not block a one-shot command (a
    break-glass rollback must work): it is said on stderr and nothing is told.
    """
    from controller import compose
    from controller.daemon.scheduler import DRAIN_SECONDS

    try:
        notifier = compose.notifier(service)
    except ConfigError as exc:
        fail(f"warning: notifications are off: {exc}")
        notifier = None
    try:
        yield
    finally:
        if notifier is not None:
            sent = notifier.close(DRAIN_SECONDS)
            if not sent or notifier.failed:
                fail(
                    f"warning: {notifier.failed} notification(s) could not be sent"
                    if sent
                    else f"warning: notifications still queued after {DRAIN_SECONDS:.0f}s were dropped"
                )


def operator() -> str:
    """Who runs the command: the person behind ``sudo`` when there is one, else the Unix user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()
