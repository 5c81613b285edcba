"""The history as a picture: the last 30 days of decisions, and four figures from the audit log.

The page draws each decision as a mark on a server-rendered SVG (no script, so
the page's strict Content-Security-Policy stays as it is) and ``GET /history``
carries the same figures as JSON.  Everything here is a pure function of the
audit events and the clock, so the figures are tested as a table.

The figures, over the window:

- **deployments**: changes that reached the engine — applied and kept, or
  rolled back by the health gate or by hand;
- **change failure rate**: rolled back ÷ deployments;
- **lead time**: the median from the manifest commit (its committer date, as the
  ``applied`` event records it) to the container running;
- **time to restore**: the median from a rollback to the next applied change,
  the moment the environment runs its branch's content again.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.model.durations import spoken_duration

DAYS = 30

# Audit event → the kind of mark it is drawn as; the rest (drift repairs, recoveries…) are not decisions.
KINDS = {
    "applied": "applied",
    "rolled_back": "rolled_back",
    "rollback": "rolled_back",
    "refused": "refused",
    "waiting_approval": "waiting",
    "waiting_window": "waiting",
    "suspended": "suspended",
}
# The rows of the picture, top to bottom, with the words its legend and tooltips use.
ROWS = {
    "applied": "applied",
    "rolled_back": "rolled back",
    "refused": "refused",
    "waiting": "waiting",
    "suspended": "suspended",
}

# The drawing's geometry, in SVG user units (it scales with the page).
WIDTH, LABELS, ROW, TOP = 760, 96, 22, 8
PLOT = WIDTH - LABELS - 12


@dataclass(frozen=True)
class Mark:
    """One decision on the timeline: where it is drawn and what its tooltip says."""

    kind: str
    at: str
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Figures:
    """The four figures over ``days`` days (``None``: nothing to measure yet)."""

    days: int
    deployments: int
    rolled_back: int
    change_failure_rate: float | None
    lead_time_seconds: float | None
    time_to_restore_seconds: float | None


@dataclass(frozen=True)
class Timeline:
    """The picture's marks, its day ticks and the figures beside it."""

    marks: list[Mark]
    ticks: list[tuple[float, str]]
    figures: Figures
    height: int
    rows: list[tuple[float, str]]


def timeline(events: Sequence[object], *, now: datetime, days: int = DAYS) -> Timeline:
    """The last ``days`` days of ``events`` (audit lines, oldest first) as marks and figures."""
    start = now - timedelta(days=days)
    dated = [(at, e) for e in events if isinstance(e, Mapping) and (at := _at(e)) is not None and start <= at <= now]
    lanes = {kind: TOP + ROW * (index + 0.5) for index, kind in enumerate(ROWS)}
    marks = [
        Mark(kind, at.isoformat(), _x(at, start=start, days=days), lanes[kind], _title(kind, at, event))
        for at, event in dated
        if (kind := KINDS.get(str(event.get("event")))) is not None
    ]
    ticks = [
        (_x(start + timedelta(days=d), start=start, days=days), _day(start + timedelta(days=d)))
        for d in range(0, days + 1, 7)
    ]
    return Timeline(
        marks=marks,
        ticks=ticks,
        figures=figures(dated, days=days),
        height=TOP + ROW * len(ROWS) + 22,
        rows=[(lanes[kind], words) for kind, words in ROWS.items()],
    )


def figures(dated: Sequence[tuple[datetime, Mapping[str, Any]]], *, days: int = DAYS) -> Figures:
    """Deployments, change failure rate, lead time and time to restore, from dated audit events."""
    applied = [(at, e) for at, e in dated if e.get("event") == "applied"]
    failures = [at for at, e in dated if KINDS.get(str(e.get("event"))) == "rolled_back"]
    deployments = len(applied) + len(failures)
    leads = [(at - committed).total_seconds() for at, e in applied if (committed := _time(e.get("committed_at")))]
    restores = [
        (next_applied - failed).total_seconds()
        for failed in failures
        if (next_applied := next((at for at, _ in applied if at > failed), None)) is not None
    ]
    return Figures(
        days=days,
        deployments=deployments,
        rolled_back=len(failures),
        change_failure_rate=len(failures) / deployments if deployments else None,
        lead_time_seconds=statistics.median(leads) if leads else None,
        time_to_restore_seconds=statistics.median(restores) if restores else None,
    )


def figures_json(events: Sequence[object], *, now: datetime, days: int = DAYS) -> dict[str, Any]:
    """``/history``'s ``figures``: the same numbers the page shows beside the picture."""
    return asdict(timeline(events, now=now, days=days).figures)


def duration(seconds: float | None) -> str:
    """A duration as people write it (``spoken_duration``); ``-`` for none."""
    return "-" if seconds is None else spoken_duration(seconds)


def percent(rate: float | None) -> str:
    """A rate as a whole percentage, ``-`` when nothing was deployed."""
    return "-" if rate is None else f"{round(rate * 100)} %"


def _x(at: datetime, *, start: datetime, days: int) -> float:
    return round(LABELS + PLOT * (at - start).total_seconds() / (days * 86400), 1)


def _day(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%b %d}"


def _at(event: Mapping[str, Any]) -> datetime | None:
    return _time(event.get("at"))


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _title(kind: str, at: datetime, event: Mapping[str, Any]) -> str:
    """The tooltip: what, which version, when, and who for a suspension."""
    revision = str(event.get("revision") or "")[:12]
    image = str(event.get("image") or "")
    version = str(event.get("tag") or "") or (image.partition("@sha256:")[2][:12] if "@sha256:" in image else "")
    named = " ".join(part for part in (version, f"({revision})" if revision else "") if part)
    who = f" by {event['by']}" if kind == "suspended" and event.get("by") else ""
    return f"{ROWS[kind]} {named}{who} · {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC".replace("  ", " ")
