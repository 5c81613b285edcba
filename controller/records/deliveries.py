"""The webhook deliveries already acted on, kept in ``state/`` so a replay stays a replay after a restart.

A GitHub delivery is signed once and valid forever: whoever captured one can send it again.  The
API refuses a delivery whose id, or whose signed body, it has seen before; this record is that
memory.  It is read at start and written after every new delivery (atomically), each entry kept for
``KEEP`` (two days: GitHub redelivers for up to three days by hand, a replay after that finds a
revision already applied), at most ``LIMIT`` entries.  Only deliveries whose signature verified are
remembered, so nobody without the webhook secret can fill it.  A missing file is an empty memory
(the previous release kept none); an unreadable one is logged and started afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from controller.records.files import atomic_write

log = logging.getLogger(__name__)

KEEP = 48 * 3600  # seconds each delivery is remembered: at least the 24 h a replay must stay refused
LIMIT = 10_000  # entries (two per delivery); past it the oldest go first
VERSION = 1


class DeliveryMemory:
    """Delivery ids and body digests with the time each was first seen, oldest first."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        keep: float = KEEP,
        limit: int = LIMIT,
    ) -> None:
        self.path = path
        self._clock = clock
        self._keep = keep
        self._limit = limit
        self._lock = threading.Lock()
        self._seen: dict[str, float] = _load(path)

    def first(self, *, delivery: str | None, body: bytes) -> bool:
        """Whether neither this delivery id nor this body was seen: a replay under a new id is caught by its body."""
        keys = [f"body:{_digest(body)}"] + ([f"id:{_digest(delivery.encode())}"] if delivery else [])
        now = self._clock()
        with self._lock:
            self._forget_before(now - self._keep)
            if any(key in self._seen for key in keys):
                return False
            for key in keys:
                self._seen[key] = now
            while len(self._seen) > self._limit:
                del self._seen[next(iter(self._seen))]
            self._save()
        return True

    def _forget_before(self, cutoff: float) -> None:
        for key in [key for key, seen in self._seen.items() if seen < cutoff]:
            del self._seen[key]

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"version": VERSION, "seen": self._seen}, separators=(",", ":")).encode()
        try:
            atomic_write(self.path, data + b"\n", mode=0o600)
        except OSError as exc:  # the memory still holds it; a restart before the next write may forget it
            log.warning("cannot save the webhook replay memory %s: %s", self.path, exc.strerror)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load(path: Path | None) -> dict[str, float]:
    """The remembered deliveries, oldest first; empty when there is no file yet (or it cannot be read)."""
    if path is None or not path.exists():
        return {}
    try:
        document = json.loads(path.read_bytes())
        seen = document["seen"]
        entries = {str(key): float(at) for key, at in seen.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the webhook replay memory %s (%s): starting afresh", path, type(exc).__name__)
        return {}
    return dict(sorted(entries.items(), key=lambda item: item[1]))
