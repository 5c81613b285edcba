"""Deploy windows (docs/design.md §18): the arithmetic as a table against a fixed clock, the config's
refusals, and a property: the answer agrees with a minute-by-minute scan that reads cron by itself."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.errors import ConfigError
from controller.model.config import parse_config
from controller.model.safe_yaml import load_mapping
from controller.model.windows import DeployWindows, WindowsConfig, span, waiting_reason
from controller.records.host_init import init_layout

BERLIN = ZoneInfo("Europe/Berlin")
EVENINGS = {"cron": "0 18 * * 1-5", "duration": "3h"}  # weekdays 18:00-21:00
YEAR_END = {"cron": "0 0 20 12 *", "duration": "14d"}  # 20 December to 3 January
TRADING = {"cron": "0 8 * * 1-5", "duration": "14h"}  # weekdays 08:00-22:00: no deploys


def windows(allow: list[dict[str, str]] = (), deny: list[dict[str, str]] = (), zone: str = "Europe/Berlin"):  # type: ignore[assignment]
    return DeployWindows(WindowsConfig.model_validate({"timezone": zone, "allow": list(allow), "deny": list(deny)}))


def berlin(text: str, *, fold: int = 0) -> datetime:
    """A Berlin wall-clock time; ``fold=1`` is the second 02:xx of the autumn night."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN, fold=fold)


def wall(instant: datetime | None) -> str | None:
    """An instant as Berlin's wall clock with its zone name, e.g. ``2026-12-07 18:00 CET``."""
    return None if instant is None else f"{instant.astimezone(BERLIN):%Y-%m-%d %H:%M %Z}"


CASES = [
    # (what it shows, allow, deny, now, open?, the next change as Berlin's wall clock)
    ("no windows: always open", [], [], berlin("2026-12-07 10:00"), True, None),
    ("before an evening window", [EVENINGS], [], berlin("2026-12-07 14:48"), False, "2026-12-07 18:00 CET"),
    ("inside it", [EVENINGS], [], berlin("2026-12-07 19:00"), True, "2026-12-07 21:00 CET"),
    ("its end is outside (half-open)", [EVENINGS], [], berlin("2026-12-07 21:00"), False, "2026-12-08 18:00 CET"),
    ("cron's 1-5 is Monday to Friday", [EVENINGS], [], berlin("2026-12-11 22:00"), False, "2026-12-14 18:00 CET"),
    ("Saturday evening is no weekday", [EVENINGS], [], berlin("2026-12-12 18:30"), False, "2026-12-14 18:00 CET"),
    # daylight saving, spring: the last Sunday of March 2026 skips 02:00-03:00
    (
        "a window follows the clock into summer time",
        [EVENINGS],
        [],
        berlin("2026-03-27 17:30"),
        False,
        "2026-03-27 18:00 CET",
    ),
    (
        "the evening after the change opens at 18:00 CEST",
        [{"cron": "0 18 * * *", "duration": "3h"}],
        [],
        berlin("2026-03-29 17:30"),
        False,
        "2026-03-29 18:00 CEST",
    ),
    (
        "a duration is real time: 3 h from 01:00 CET end at 05:00 CEST",
        [{"cron": "0 1 * * *", "duration": "3h"}],
        [],
        berlin("2026-03-29 01:30"),
        True,
        "2026-03-29 05:00 CEST",
    ),
    (
        "a skipped 02:30 opens when 02:30 CET would have been",
        [{"cron": "30 2 * * *", "duration": "1h"}],
        [],
        berlin("2026-03-29 01:00"),
        False,
        "2026-03-29 03:30 CEST",
    ),
    # daylight saving, autumn: the last Sunday of October 2026 repeats 02:00-03:00
    (
        "a freeze at 02:00 covers the first 02:xx",
        [],
        [{"cron": "0 2 * * *", "duration": "1h"}],
        berlin("2026-10-25 02:30"),
        False,
        "2026-10-25 03:00 CET",
    ),
    (
        "and the repeated one",
        [],
        [{"cron": "0 2 * * *", "duration": "1h"}],
        berlin("2026-10-25 02:30", fold=1),
        False,
        "2026-10-25 03:00 CET",
    ),
    (
        "before the night, the freeze starts at 02:00 CEST",
        [],
        [{"cron": "0 2 * * *", "duration": "1h"}],
        berlin("2026-10-25 01:59"),
        True,
        "2026-10-25 02:00 CEST",
    ),
    (
        "the evening after the change opens at 18:00 CET",
        [{"cron": "0 18 * * *", "duration": "3h"}],
        [],
        berlin("2026-10-25 17:59"),
        False,
        "2026-10-25 18:00 CET",
    ),
    # across midnight, a month end and a year end
    (
        "a window spans midnight into the next month",
        [{"cron": "0 22 * * *", "duration": "4h"}],
        [],
        berlin("2026-11-30 23:30"),
        True,
        "2026-12-01 02:00 CET",
    ),
    (
        "and the next year",
        [{"cron": "0 22 * * *", "duration": "4h"}],
        [],
        berlin("2026-12-31 23:59"),
        True,
        "2027-01-01 02:00 CET",
    ),
    (
        "a month-end window on the 28th-31st at 20:00",
        [{"cron": "0 20 28-31 * *", "duration": "6h"}],
        [],
        berlin("2027-02-28 19:00"),
        False,
        "2027-02-28 20:00 CET",
    ),
    (
        "February has no 29th in 2027: March's 28th is next",
        [{"cron": "0 20 29 * *", "duration": "6h"}],
        [],
        berlin("2027-02-01 12:00"),
        False,
        "2027-03-29 20:00 CEST",
    ),
    # allow and deny overlapping
    (
        "a freeze cuts an allow window short",
        [EVENINGS],
        [{"cron": "0 20 * * *", "duration": "2h"}],
        berlin("2026-12-07 18:30"),
        True,
        "2026-12-07 20:00 CET",
    ),
    (
        "inside both, the freeze wins; the allow window ends first",
        [EVENINGS],
        [{"cron": "0 20 * * *", "duration": "2h"}],
        berlin("2026-12-07 20:30"),
        False,
        "2026-12-08 18:00 CET",
    ),
    (
        "a freeze ending inside an allow window opens it",
        [EVENINGS],
        [{"cron": "0 17 * * *", "duration": "2h"}],
        berlin("2026-12-07 18:10"),
        False,
        "2026-12-07 19:00 CET",
    ),
    (
        "two allow windows overlapping are one",
        [EVENINGS, {"cron": "0 20 * * *", "duration": "3h"}],
        [],
        berlin("2026-12-07 18:30"),
        True,
        "2026-12-07 23:00 CET",
    ),
    (
        "the year-end freeze holds across the weekday windows",
        [EVENINGS],
        [YEAR_END],
        berlin("2026-12-21 18:30"),
        False,
        "2027-01-04 18:00 CET",
    ),
    (
        "trading hours: no deploys on a weekday at 10:00",
        [],
        [TRADING],
        berlin("2026-12-07 10:00"),
        False,
        "2026-12-07 22:00 CET",
    ),
    (
        "trading hours: the weekend is open until Monday 08:00",
        [],
        [TRADING],
        berlin("2026-12-12 10:00"),
        True,
        "2026-12-14 08:00 CET",
    ),
    # a window that opens while a pass is running: the pass asked at 17:59:30, the window opens at 18:00
    ("the pass asked before the opening", [EVENINGS], [], berlin("2026-12-07 17:59:30"), False, "2026-12-07 18:00 CET"),
    (
        "a pass at the opening instant is inside",
        [EVENINGS],
        [],
        berlin("2026-12-07 18:00"),
        True,
        "2026-12-07 21:00 CET",
    ),
    # cron's reading of the day fields
    (
        "day of month and weekday both given: either (the 1st)",
        [{"cron": "0 12 1 * 1", "duration": "1h"}],
        [],
        berlin("2026-12-01 12:30"),
        True,
        "2026-12-01 13:00 CET",
    ),
    (
        "either: a Monday",
        [{"cron": "0 12 1 * 1", "duration": "1h"}],
        [],
        berlin("2026-12-02 12:30"),
        False,
        "2026-12-07 12:00 CET",
    ),
    (
        "Sunday is 0 and 7",
        [{"cron": "0 10 * * 0", "duration": "1h"}, {"cron": "0 12 * * 7", "duration": "1h"}],
        [],
        berlin("2026-12-13 10:30"),
        True,
        "2026-12-13 11:00 CET",
    ),
    (
        "fri-sun is a range through Sunday",
        [{"cron": "0 10 * * fri-sun", "duration": "1h"}],
        [],
        berlin("2026-12-13 09:00"),
        False,
        "2026-12-13 10:00 CET",
    ),
    (
        "a weekday step counts from Sunday as cron does",
        [{"cron": "0 10 * * */3", "duration": "1h"}],
        [],
        berlin("2026-12-07 12:00"),
        False,
        "2026-12-09 10:00 CET",
    ),
]


@pytest.mark.parametrize(
    ("allow", "deny", "now", "is_open", "change"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_window_at_a_fixed_clock(
    allow: list[dict[str, str]], deny: list[dict[str, str]], now: datetime, is_open: bool, change: str | None
) -> None:
    state = windows(allow, deny).state(now)
    assert (state.open, wall(state.change)) == (is_open, change)


def test_a_waiting_change_is_told_when_the_window_opens() -> None:
    deploy = windows([EVENINGS])
    state = deploy.state(berlin("2026-12-07 14:48"))
    assert (
        waiting_reason(deploy.describe(state)) == "waiting for the deploy window: opens Mon 18:00 CET (in 3 h 12 min)"
    )
    assert deploy.describe(deploy.state(berlin("2026-12-07 19:00"))) == "open until Mon 21:00 CET (in 2 h)"


def test_an_opening_a_week_or_more_away_names_its_date() -> None:
    deploy = windows([EVENINGS], [YEAR_END])
    state = deploy.state(berlin("2026-12-21 18:30"))
    assert deploy.describe(state) == "opens Mon 4 Jan 2027 18:00 CET (in 13 d 23 h)"


def test_a_freeze_without_end_says_how_far_it_looked() -> None:
    deploy = windows(deny=[{"cron": "0 0 * * *", "duration": "2d"}])
    state = deploy.state(datetime(2026, 12, 7, tzinfo=UTC))
    assert (state.open, state.change) == (False, None)
    assert deploy.describe(state) == "none opens before Tue 11 Jan 2028 01:00 CET"


def test_a_dense_schedule_ends_the_search_without_a_wrong_answer() -> None:
    deploy = windows([{"cron": "* * * * *", "duration": "2m"}])
    state = deploy.state(berlin("2026-12-07 10:00"))
    assert (state.open, state.change) == (True, None)
    assert state.searched > state.at + timedelta(hours=12)  # it looked half a day ahead at least
    assert deploy.describe(state).startswith("open, and no window closes it before ")


def test_the_answer_is_kept_until_it_changes() -> None:
    deploy = windows([EVENINGS])
    first = deploy.state(berlin("2026-12-07 14:00"))
    later = deploy.state(berlin("2026-12-07 17:00"))
    assert (later.open, later.change, later.at) == (first.open, first.change, berlin("2026-12-07 17:00"))
    assert deploy.state(berlin("2026-12-07 18:00")).open  # past the kept change: searched again


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (11_520, "3 h 12 min"),
        (7200, "2 h"),
        (187_200, "2 d 4 h"),
        (86_400, "1 d"),
    ],
)
def test_spans_in_words(seconds: int, text: str) -> None:
    assert span(timedelta(seconds=seconds)) == text


# -- refused at load, with the key's name ------------------------------------------------------------

BASE = {"environment": "prod", "source": {"url": "file:///srv/m.git"}, "trust": {"allowed_signers": "a"}}


def load(windows_section: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "windows": windows_section}, base=Path("/etc/dreichor"))
    return str(caught.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"timezone": "Europe/Atlantis"}, "windows.timezone: 'Europe/Atlantis' is no IANA time zone this host knows"),
        ({"timezone": "../etc/passwd"}, "windows.timezone: '../etc/passwd' is no IANA time zone"),
        ({"timezone": "localtime"}, "windows.timezone: 'localtime' is the host's setting, not a zone"),
        ({"allow": []}, "windows.timezone is not set"),
        (
            {"timezone": "UTC", "allow": [{"cron": "0 18 * *", "duration": "3h"}]},
            "windows.allow.0.cron: '0 18 * *' is no cron expression: '0 18 * *' has 4 fields; cron has five",
        ),
        (
            {"timezone": "UTC", "deny": [{"cron": "61 * * * *", "duration": "3h"}]},
            "windows.deny.0.cron: '61 * * * *' is no cron expression: the minute field has 61, outside 0-59",
        ),
        (
            {"timezone": "UTC", "deny": [{"cron": "0 0 * * 8", "duration": "3h"}]},
            "the day of week field has 8, outside 0-7",
        ),
        ({"timezone": "UTC", "deny": [{"cron": "0 0 * * mon-fry", "duration": "1h"}]}, "has 'fry', which is no number"),
        ({"timezone": "UTC", "deny": [{"cron": "0 0 L * *", "duration": "1h"}]}, "the day of month field has 'l'"),
        ({"timezone": "UTC", "deny": [{"cron": "*/0 * * * *", "duration": "1h"}]}, "the minute field has a step of 0"),
        ({"timezone": "UTC", "deny": [{"cron": "5/10 * * * *", "duration": "1h"}]}, "a step needs * or a range"),
        ({"timezone": "UTC", "deny": [{"cron": "0 22-6 * * *", "duration": "1h"}]}, "a range that runs backwards"),
        ({"timezone": "UTC", "deny": [{"cron": "0 0 31 2 *", "duration": "1h"}]}, "the window would never open"),
        (
            {"timezone": "UTC", "allow": [{"cron": "0 18 * * *", "duration": "0h"}]},
            "windows.allow.0.duration: '0h': a window must stay open longer than zero",
        ),
        (
            {"timezone": "UTC", "allow": [{"cron": "0 18 * * *", "duration": "-3h"}]},
            "windows.allow.0.duration: '-3h': a window must stay open longer than zero",
        ),
        ({"timezone": "UTC", "allow": [{"cron": "0 18 * * *", "duration": "3 hours"}]}, "is not a duration such as"),
        ({"timezone": "UTC", "allow": [{"cron": "0 18 * * *"}]}, "windows.allow.0.duration is not set"),
        (
            {"timezone": "UTC", "allow": [{"cron": "0 18 * * *", "duration": "3h", "tz": "x"}]},
            "allow.0.tz: unknown key",
        ),
        ({"timezone": "UTC", "freeze": []}, "windows.freeze: unknown key"),
    ],
)
def test_a_bad_window_is_refused_at_load_naming_its_key(section: object, message: str) -> None:
    assert message in load(section)


def test_a_host_without_windows_has_none() -> None:
    assert parse_config(dict(BASE), base=Path("/etc/dreichor")).windows is None


def test_the_design_example_loads() -> None:
    section = {"timezone": "Europe/Berlin", "allow": [EVENINGS], "deny": [YEAR_END]}
    config = parse_config({**BASE, "windows": section}, base=Path("/etc/dreichor"))
    assert config.windows is not None and config.windows.deny[0].length == timedelta(days=14)


# -- the property: a scan minute by minute, reading cron by itself -----------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]  # Lord Howe moves by 30 minutes
ANCHORS = [  # the days around daylight saving changes, a month end and a year end
    datetime(2026, 3, 28, tzinfo=UTC),
    datetime(2026, 10, 24, tzinfo=UTC),
    datetime(2026, 3, 7, tzinfo=UTC),
    datetime(2026, 10, 31, tzinfo=UTC),
    datetime(2026, 4, 4, tzinfo=UTC),
    datetime(2026, 12, 30, tzinfo=UTC),
]
SCAN = timedelta(days=3)


@st.composite
def rules(draw: st.DrawFn) -> tuple[dict[str, str], tuple[set[int], set[int], set[int]]]:
    """A window and the minutes, hours and weekdays its cron names (for the oracle)."""
    minutes = draw(st.sets(st.sampled_from([0, 15, 30, 45, 59]), min_size=1, max_size=2))
    hours = draw(st.sets(st.integers(0, 23), min_size=1, max_size=3))
    days = draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))
    length = draw(st.integers(1, 36 * 60))
    fields = (",".join(map(str, sorted(values))) for values in (minutes, hours, days))
    cron = "{} {} * * {}".format(*fields)
    return {"cron": cron, "duration": f"{length}m"}, (minutes, hours, days)


def fires(rule: tuple[set[int], set[int], set[int]], zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The openings in [start, end), read from the wall clock minute by minute, without APScheduler.

    A wall time the clock skips (spring) opens at the instant it names in the offset before the skip.
    """
    minutes, hours, days = rule
    found, at = [], start
    while at < end:
        local = at.astimezone(zone)
        before = (at - timedelta(hours=3)).astimezone(zone).utcoffset()
        readings = [local.replace(tzinfo=None)]
        if before is not None and before < (local.utcoffset() or before):  # just after a skip
            skipped = (at + before).replace(tzinfo=None)
            if skipped.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) != skipped:
                readings.append(skipped)
        for wall_time in readings:
            weekday = (wall_time.weekday() + 1) % 7
            if wall_time.minute in minutes and wall_time.hour in hours and weekday in days:
                found.append(at)
                break
        at += timedelta(minutes=1)
    return found


def covered(openings: list[datetime], length: timedelta, at: datetime) -> bool:
    index = bisect.bisect_right(openings, at)
    return index > 0 and at < openings[index - 1] + length


@settings(max_examples=60, deadline=None)
@given(
    allow=st.lists(rules(), max_size=2),
    deny=st.lists(rules(), max_size=2),
    zone=st.sampled_from(ZONES),
    anchor=st.sampled_from(ANCHORS),
    offset=st.integers(0, 24 * 60 - 1),
    probes=st.lists(st.integers(0, 24 * 60 * 60 - 1), min_size=1, max_size=8),
)
def test_the_answer_agrees_with_a_minute_by_minute_scan(
    allow: list[tuple[dict[str, str], tuple[set[int], set[int], set[int]]]],
    deny: list[tuple[dict[str, str], tuple[set[int], set[int], set[int]]]],
    zone: str,
    anchor: datetime,
    offset: int,
    probes: list[int],
) -> None:
    tz = ZoneInfo(zone)
    start = anchor + timedelta(minutes=offset)
    lead = timedelta(hours=37)  # the longest window reaches this far back
    opened = [
        [
            (fires(shape, tz, start - lead, start + SCAN), timedelta(minutes=int(rule["duration"][:-1])))
            for rule, shape in group
        ]
        for group in (allow, deny)
    ]

    def scanned(at: datetime) -> bool:
        if any(covered(o, length, at) for o, length in opened[1]):
            return False
        return not opened[0] or any(covered(o, length, at) for o, length in opened[0])

    deploy = windows([r for r, _ in allow], [r for r, _ in deny], zone)
    for probe in sorted(probes):  # increasing, so the kept answer is exercised too
        at = start + timedelta(seconds=probe)
        state = deploy.state(at)
        assert state.open == scanned(at)
        minute = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        flip = next((m for m in _minutes(minute, start + SCAN) if scanned(m) != state.open), None)
        if flip is not None:
            assert state.change == flip
        else:  # no change within the scan: the answer's change, if any, lies beyond it
            assert state.change is None or state.change >= start + SCAN


def _minutes(first: datetime, end: datetime) -> list[datetime]:
    return [first + timedelta(minutes=i) for i in range(int((end - first).total_seconds() // 60))]


def test_the_starter_configs_windows_load_once_uncommented(tmp_path: Path) -> None:
    init_layout(tmp_path, "prod")
    lines = (tmp_path / "prod/deploy-agent/controller.yaml").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("# windows:")))
    block = []
    for line in lines[start:]:
        if block and not line.startswith("#   "):
            break
        block.append(line[2:])
    section = load_mapping("\n".join(block).encode(), max_bytes=4096, what="the starter's windows")
    config = parse_config({**BASE, **section}, base=tmp_path)
    assert config.windows is not None
    assert [r.cron for r in config.windows.allow + config.windows.deny] == ["0 18 * * 1-5", "0 0 20 12 *"]
