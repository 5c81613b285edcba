"""Durations as people write them in ``controller.yaml``: a whole number and one unit.

One grammar for every key that takes a duration (``approvals.max_age``, a deploy window's
``duration``), so ``14d`` means the same wherever it is written.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^([1-9][0-9]{0,4})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(text: str) -> timedelta:
    """``14d``, ``12h``, ``2w``: a whole number and one unit (s, m, h, d, w)."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 7d, 12h or 2w")
    return timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])


def spoken_duration(length: timedelta | float) -> str:
    """A duration as people write it: ``45 s``, ``12 min``, ``3 h 20 min``, ``14 d``, ``2 d 4 h``."""
    whole = max(int(length.total_seconds() if isinstance(length, timedelta) else length), 0)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours == 0:
        return f"{minutes} min"
    if days == 0:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"
