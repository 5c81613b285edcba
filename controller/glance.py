"""The status at a glance: one environment's status file read from its config alone, without the service.

``status`` and ``status --check`` run in monitoring every few seconds; what they
show is a file the pass wrote.  Reading it needs the config (where the host
keeps the file, the poll interval) and the status model, not the engine, git,
the trust code or the daemon that ``EnvironmentService`` is built with, so this
module imports none of them (``tests/unit/test_cli_imports.py``).  It reads
through the same functions the service does (``records.status.read_status``,
``HostPaths.journal``), so the two cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

from controller.errors import ConfigError
from controller.model.config import Config, HostPaths, load_config
from controller.records.status import Status, read_status

__all__ = ["Glance", "Status"]


class Glance:
    """What ``status`` reads of one environment: its config, its host paths, the status file, the journal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.paths: HostPaths = config.paths

    @classmethod
    def from_file(cls, config_file: Path, *, environment: str | None = None) -> Glance:
        """The glance at the environment a ``controller.yaml`` describes (``environment``, if given, must agree)."""
        config = load_config(config_file)
        if environment and config.environment != environment:
            raise ConfigError(f"the config is for '{config.environment}', not '{environment}' (-e)")
        return cls(config)

    def status(self) -> Status | None:
        """The status file, or None when there is none (yet) or it cannot be read."""
        return read_status(self.paths.status)

    def interrupted(self) -> bool:
        """A swap's journal is on the host: a swap is in flight, or a crash interrupted one (the next pass ends it)."""
        return self.paths.journal.exists()
