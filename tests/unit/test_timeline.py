"""The history as a picture: marks and the four figures from audit events, as a table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api.page import history_body, render_page
from controller.api.timeline import LABELS, PLOT, duration, percent, timeline
from testbed import history_events, page_sample

NOW = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)


def event(kind: str, hours_ago: float, **fields: Any) -> dict[str, Any]:
    return {"at": (NOW - timedelta(hours=hours_ago)).isoformat(), "event": kind, "revision": "ab" * 20, **fields}


def committed(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


@pytest.mark.parametrize(
    ("events", "deployments", "rate", "lead", "restore"),
    [
        ([], 0, None, None, None),
        ([event("applied", 10, committed_at=committed(11))], 1, 0.0, 3600, None),
        ([event("applied", 10), event("rolled_back", 8)], 2, 0.5, None, None),  # not restored yet
        ([event("rolled_back", 8), event("applied", 5)], 2, 0.5, None, 3 * 3600),
        ([event("rollback", 8, by="bob"), event("applied", 7.5)], 2, 0.5, None, 1800),  # break-glass counts
        ([event("applied", 24 * 31), event("applied", 1)], 1, 0.0, None, None),  # older than 30 days: out
        ([event("refused", 3), event("waiting_approval", 2), event("suspended", 1)], 0, None, None, None),
        (
            [
                event("applied", 30, committed_at=committed(31)),
                event("applied", 20, committed_at=committed(20.5)),
                event("applied", 10, committed_at=committed(12)),
            ],
            3,
            0.0,
            3600,  # the median of 1 h, 30 min and 2 h
            None,
        ),
        (
            [event("drift_repaired", 3), event("recovered", 2), "not a mapping", {"event": "applied"}],
            0,
            None,
            None,
            None,
        ),
    ],
)
def test_the_figures_come_from_the_audit_log(
    events: list[object], deployments: int, rate: float | None, lead: float | None, restore: float | None
) -> None:
    figures = timeline(events, now=NOW).figures
    assert (figures.deployments, figures.change_failure_rate) == (deployments, rate)
    assert (figures.lead_time_seconds, figures.time_to_restore_seconds) == (lead, restore)


def test_each_decision_is_a_mark_in_its_row_at_its_time() -> None:
    picture = timeline(
        [event("applied", 24 * 15), event("suspended", 0, by="alice"), event("drift_repaired", 1)], now=NOW
    )
    applied, suspended = picture.marks
    assert (applied.kind, suspended.kind) == ("applied", "suspended")
    assert applied.x == pytest.approx(LABELS + PLOT / 2, abs=0.1)  # half way through the 30 days
    assert suspended.x == LABELS + PLOT  # now is the right edge
    assert applied.y < suspended.y  # applied is the top row, suspended the bottom one
    assert suspended.title == "suspended (abababababab) by alice · 2026-12-05 13:00 UTC"


def test_a_mark_names_the_version_by_its_tag_else_the_short_digest() -> None:
    image = "r.example/runtime@sha256:" + "7afa" * 16
    tagged, untagged = timeline(
        [event("rolled_back", 2, image=image, tag="2.0.0"), event("refused", 1, image=image)], now=NOW
    ).marks
    assert tagged.title.startswith("rolled back 2.0.0 (abababababab) · ")
    assert untagged.title.startswith("refused 7afa7afa7afa (abababababab) · ")


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, "-"),
        (45, "45 s"),
        (60, "1 min"),
        (2400, "40 min"),
        (3600, "1 h"),
        (12000, "3 h 20 min"),
        (86400 * 2 + 3600 * 4, "2 d 4 h"),
    ],
)
def test_durations_are_written_as_people_write_them(seconds: float | None, words: str) -> None:
    assert duration(seconds) == words


def test_the_page_draws_the_picture_and_history_carries_the_same_figures() -> None:
    sample = page_sample(now=NOW)
    sample["events"] = history_events(now=NOW - timedelta(days=1)) + sample["events"]
    html = render_page(**sample)[0].decode()
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count("<circle") == 13 + 58 + 1  # each applied change a circle (the sample's 58 + 1 recent ones too)
    assert svg.count('<g class="mark mark-rolled_back">') == 2
    assert "<script" not in svg and " on" not in svg.replace(" one ", "")
    assert "<dt>Change failure rate</dt><dd>3 %</dd>" in html  # 2 of 13 + 59 + 2 deployments
    assert "<dt>Commit to running (median)</dt><dd>40 min</dd>" in html
    assert "<dt>Time to restore (median)</dt><dd>4 h</dd>" in html
    body = json.loads(history_body(snapshots=[], events=sample["events"], chain=None, limit=10, now=NOW))
    assert body["figures"] == {
        "days": 30,
        "deployments": 74,
        "rolled_back": 2,
        "change_failure_rate": 2 / 74,
        "lead_time_seconds": 2400.0,
        "time_to_restore_seconds": 14400.0,
    }
    assert percent(body["figures"]["change_failure_rate"]) == "3 %"


def test_the_audit_table_says_who() -> None:
    sample = page_sample(now=NOW)
    sample["events"] = [*sample["events"], event("suspended", 0, by="alice", reason="maintenance")]
    html = render_page(**sample)[0].decode()
    assert '<th scope="col">Who</th>' in html
    assert "<td>alice</td>" in html
