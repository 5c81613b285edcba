"""Deploy windows (docs/design.md §18): when a change may apply, as the host's operator decides.

A window opens at each time a cron expression names and stays open for its ``duration``: it is
open in ``[fire, fire + duration)``, in real time.  ``allow`` windows say when a change may apply
(none: always); ``deny`` windows (freezes) win over them.  Everything here is pure: the clock is an
argument, so the arithmetic is a table test against a fixed clock.

The five cron fields are checked here, in our words, and their times are found by APScheduler's
``CronTrigger`` in the configured IANA zone (daylight saving included: a window follows the local
clock; a time the clock skips in spring opens the window at the instant that time would have been;
a time the clock repeats in autumn opens it at each occurrence).  APScheduler 3 reads two things of
a crontab differently from cron, and both are mended before it sees one: weekday numbers (cron: 0
and 7 are Sunday; APScheduler 3: 0 is Monday) are handed over as names, and a day of the month and
a day of the week both given match either one, as in cron, not both.  Instants are compared in UTC:
Python compares two datetimes of one zone by their wall clocks, which is wrong across a change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from pydantic_core import PydanticCustomError

from controller.model.durations import parse_duration

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

HORIZON = timedelta(days=400)  # a yearly freeze is always found: the search looks this far ahead
MAX_STEPS = 1024  # window edges looked at per answer; a dense schedule ends the search early
_TICK = timedelta(microseconds=1)
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)  # a cron that fires after this fires at all

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron's numbering: 0 (and 7) is Sunday


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # month or weekday names, numbered from ``low``


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),
)
_ITEM = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


def _refuse(reason: str) -> PydanticCustomError:
    """A refusal pydantic reports under the key's name, in our words (the text is no template)."""
    return PydanticCustomError("deploy_window", "{reason}", {"reason": reason})


def _value(text: str, field: _Field) -> int:
    if text.isdigit():
        number = int(text)
    elif text in field.names:
        number = field.names.index(text) + field.low
    else:
        raise ValueError(f"the {field.name} field has {text!r}, which is no number" + _named(field))
    if not field.low <= number <= field.high:
        raise ValueError(f"the {field.name} field has {number}, outside {field.low}-{field.high}")
    return number


def _named(field: _Field) -> str:
    return f" or name ({field.names[0]}, {field.names[1]}, ...)" if field.names else ""


def _values(text: str, field: _Field) -> frozenset[int]:
    """The numbers one cron field names (``*``, ``a``, ``a-b``, each with an optional ``/step``)."""
    values: set[int] = set()
    for item in text.lower().split(","):
        found = _ITEM.match(item)
        if not found:
            raise ValueError(f"the {field.name} field has {item!r}: write a number, a-b, * or a list, each /step")
        span, step = found.group(1), int(found.group(2) or 1)
        if step == 0:
            raise ValueError(f"the {field.name} field has a step of 0")
        if found.group(2) and span != "*" and "-" not in span:
            raise ValueError(f"the {field.name} field has {item!r}: a step needs * or a range before it")
        low, _, high = span.partition("-")
        first = field.low if low == "*" else _value(low, field)
        last = field.high if low == "*" else _value(high, field) if high else first
        if field.names == _WEEKDAYS and last == 0 < first:
            last = 7  # fri-sun: Sunday closes a range as 7
        if last < first:
            raise ValueError(f"the {field.name} field has {item!r}, a range that runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(v % 7 for v in values) if field.names == _WEEKDAYS else frozenset(values)


def cron_triggers(expression: str, zone: ZoneInfo) -> tuple[CronTrigger, ...]:
    """APScheduler triggers that fire when cron would fire ``expression``; ``ValueError`` names what is wrong.

    Every field is handed over as the list of numbers it names (weekdays as names), so APScheduler
    reads exactly what cron reads; with both day fields restricted, two triggers (cron's "either").
    """
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415 - only a host with windows pays for it

    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"{expression!r} has {len(fields)} fields; cron has five: minute hour day month weekday")
    values = [_values(text, field) for text, field in zip(fields, _FIELDS, strict=True)]
    given = [
        ",".join(str(v) for v in sorted(vs)) if text != "*" else "*" for text, vs in zip(fields, values, strict=True)
    ]
    weekdays = ",".join(_WEEKDAYS[v] for v in sorted(values[4])) if fields[4] != "*" else "*"
    minute, hour, day, month = given[:4]
    if fields[2].startswith("*") or fields[4].startswith("*"):  # cron: a day field starting with * is no choice
        shapes = [(day, weekdays)]
    else:
        shapes = [(day, "*"), ("*", weekdays)]
    return tuple(
        CronTrigger(minute=minute, hour=hour, day=d, month=month, day_of_week=w, timezone=zone) for d, w in shapes
    )


def time_zone(name: str) -> ZoneInfo:
    """An IANA time zone by name (``Europe/Berlin``); ``ValueError`` for a name the host does not know."""
    if name == "localtime":
        raise ValueError("'localtime' is the host's setting, not a zone: name one, e.g. Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is no IANA time zone this host knows, e.g. Europe/Berlin or UTC") from None


class WindowRule(BaseModel):
    """One window: it opens at each time ``cron`` names and stays open for ``duration``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: StrictStr = Field(description="Five cron fields: minute hour day-of-month month day-of-week.")
    duration: StrictStr = Field(description="How long each opening lasts: 90m, 3h, 14d.")

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        try:
            triggers = cron_triggers(value, ZoneInfo("UTC"))
        except ValueError as exc:
            raise _refuse(f"{value!r} is no cron expression: {exc}") from None
        if all(t.get_next_fire_time(None, _REFERENCE) is None for t in triggers):
            raise _refuse(f"{value!r} names no time that exists (as 30 February): the window would never open")
        return value

    @field_validator("duration")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        if re.fullmatch(r"\s*(-\s*[0-9]+|0+)\s*[a-z]*\s*", value):
            raise _refuse(f"{value!r}: a window must stay open longer than zero, e.g. 3h")
        try:
            parse_duration(value)
        except ValueError as exc:
            raise _refuse(str(exc)) from None
        return value

    @property
    def length(self) -> timedelta:
        """``duration`` as a timedelta."""
        return parse_duration(self.duration)


class WindowsConfig(BaseModel):
    """``windows``: when a change may apply (docs/design.md §18); freezes (``deny``) win over ``allow``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: StrictStr = Field(description="IANA time zone the cron times are read in, e.g. Europe/Berlin.")
    allow: list[WindowRule] = Field(
        default_factory=list, max_length=32, description="Windows a change may apply in; none: always."
    )
    deny: list[WindowRule] = Field(
        default_factory=list, max_length=32, description="Freezes: no change applies in them, allow or not."
    )

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            time_zone(value)
        except ValueError as exc:
            raise _refuse(str(exc)) from None
        return value


@dataclass(frozen=True)
class WindowState:
    """The answer at one instant: open or not, and until when (all instants in UTC)."""

    open: bool
    at: datetime  # the instant asked about
    change: datetime | None  # the next instant ``open`` flips; None: not before ``searched``
    searched: datetime  # how far the search looked: without a change, the answer holds at least until here


@dataclass(frozen=True)
class _Window:
    """One configured window with its triggers."""

    triggers: tuple[CronTrigger, ...]
    length: timedelta
    zone: ZoneInfo

    def first_fire(self, at: datetime) -> datetime | None:
        """The first opening at or after ``at``, in UTC."""
        local = at.astimezone(self.zone)  # from UTC, so a repeated autumn hour carries its fold
        fires = (t.get_next_fire_time(None, local) for t in self.triggers)
        return min((f.astimezone(UTC) for f in fires if f is not None), default=None)

    def end_if_open(self, at: datetime) -> datetime | None:
        """When the earliest opening that covers ``at`` ends; None when none covers it."""
        fire = self.first_fire(at - self.length + _TICK)
        return fire + self.length if fire is not None and fire <= at else None

    def next_edge(self, at: datetime) -> datetime | None:
        """The first instant after ``at`` where this window opens or an opening covering ``at`` ends."""
        edges = (self.first_fire(at + _TICK), self.end_if_open(at))
        return min((e for e in edges if e is not None), default=None)


class DeployWindows:
    """The configured windows of one host: open or not at an instant, and the next change.

    Keeps its last answer: the answer holds from its instant until its change, so a pass in the same
    stretch costs no search.
    """

    def __init__(self, config: WindowsConfig) -> None:
        self.zone = time_zone(config.timezone)
        self.allow = tuple(self._window(rule) for rule in config.allow)
        self.deny = tuple(self._window(rule) for rule in config.deny)
        self._kept: WindowState | None = None

    def _window(self, rule: WindowRule) -> _Window:
        return _Window(cron_triggers(rule.cron, self.zone), rule.length, self.zone)

    def is_open(self, at: datetime) -> bool:
        """Whether a change may apply at ``at``: in no freeze, and in an allow window (or none is set)."""
        if any(w.end_if_open(at) for w in self.deny):
            return False
        return not self.allow or any(w.end_if_open(at) for w in self.allow)

    def state(self, now: datetime) -> WindowState:
        """Open or not at ``now``, and the next instant that changes, searched up to ``HORIZON`` ahead."""
        now = now.astimezone(UTC)
        kept = self._kept
        if kept is not None and kept.at <= now < (kept.change or kept.searched):
            return replace(kept, at=now)
        self._kept = self._search(now)
        return self._kept

    def _search(self, now: datetime) -> WindowState:
        is_open, at, limit = self.is_open(now), now, now + HORIZON
        for _ in range(MAX_STEPS):
            edge = _earliest(w.next_edge(at) for w in (*self.allow, *self.deny))
            if edge is None or edge >= limit:
                return WindowState(is_open, now, None, limit)
            if self.is_open(edge) != is_open:
                return WindowState(is_open, now, edge, edge)
            at = edge
        return WindowState(is_open, now, None, at)

    # -- in words ----------------------------------------------------------------------------

    def when(self, instant: datetime, now: datetime) -> str:
        """``Mon 18:00 CET`` within the week ahead, else ``Mon 4 Jan 2027 18:00 CET``: local time with its zone."""
        local = instant.astimezone(self.zone)
        if instant - now < timedelta(days=6):
            return f"{local:%a %H:%M %Z}"
        return f"{local:%a} {local.day} {local:%b %Y %H:%M %Z}"

    def describe(self, state: WindowState) -> str:
        """The window in words: ``open until Mon 21:00 CET (in 2 h)``, or when it opens: ``opens Mon 18:00 CET (in 3 h
        12 min)``; without a change in the search, how far it looked."""
        if state.change is None:
            until = self.when(state.searched, state.at)
            return f"open, and no window closes it before {until}" if state.open else f"none opens before {until}"
        when, left = self.when(state.change, state.at), span(state.change - state.at)
        return f"open until {when} (in {left})" if state.open else f"opens {when} (in {left})"


def waiting_reason(window: str) -> str:
    """Why a change waits, from the closed window's words: ``waiting for the deploy window: opens Mon 18:00 CET (in 3 h
    12 min)``; the one wording for the pass, the status, the page and the notifications."""
    return f"waiting for the deploy window: {window}"


def span(length: timedelta) -> str:
    """``3 h 12 min``, ``2 d 4 h``, ``45 s``: the two largest units, rounded down."""
    seconds = max(int(length.total_seconds()), 0)
    days, hours, minutes = seconds // 86_400, seconds // 3600 % 24, seconds // 60 % 60
    for big, unit, small, small_unit in ((days, "d", hours, "h"), (hours, "h", minutes, "min")):
        if big:
            return f"{big} {unit} {small} {small_unit}" if small else f"{big} {unit}"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _earliest(instants: Iterable[datetime | None]) -> datetime | None:
    return min((i for i in instants if i is not None), default=None)
