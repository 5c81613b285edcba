"""The controller's logs: JSON lines on stdout for the daemon (journald), plain lines on stderr for a command."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald."""

    _SKIP = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """The record and its ``extra`` fields as JSON."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str | None = None) -> None:
    """The daemon's logs: JSON lines on stdout (journald), from ``level`` on (default info)."""
    _log_to(sys.stdout, JsonFormatter(), level or "info")


def setup_cli_logging(level: str | None = None) -> None:
    """A one-shot command's logs: plain lines on stderr, from ``level`` on (default warning)."""
    _log_to(sys.stderr, logging.Formatter("%(levelname)s %(name)s: %(message)s"), level or "warning")


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The controller's own log handler: set up again replaces it, and leaves others' handlers alone."""


def _log_to(stream: Any, formatter: logging.Formatter, level: str) -> None:
    handler = _OwnHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _OwnHandler)] + [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
