"""The status file ``state/status.json``: what runs, what was tried, and why.

Only reading is here for now: the applied revision is where the next
verification range starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from controller.config import HostPaths


def applied_revision(paths: HostPaths) -> str | None:
    """The revision the status file says is applied, or None (first deploy, or no readable status)."""
    try:
        data = json.loads(Path(paths.status).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    applied = data.get("applied") if isinstance(data, dict) else None
    revision = applied.get("revision") if isinstance(applied, dict) else None
    return revision if isinstance(revision, str) and revision else None
