"""Rendering the status page, against ``json.dumps`` of the same data (what ``/status`` and ``/history`` cost).

The page is rendered from what the daemon holds, so its cost is the template
alone; the baseline serialises the very same status, snapshots, last 50 audit
events and plan as JSON.  Also printed: the absolute time of a whole page
load as a route would do it (read a 1,000-line audit log, verify its chain,
render), against the issue's 50 ms.  Run: ``.venv/bin/python -m bench.page``.
Goal: at most 15x the JSON baseline.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Result, median_seconds, report
from controller.audit import append_event, read_events, verify_chain
from controller.page import PAGE_EVENTS, render_page
from testbed import page_sample

AUDIT_LINES = 1000


def _audit_log(path: Path, now: datetime) -> None:
    """A chained audit log of ``AUDIT_LINES`` decisions."""
    for i in range(AUDIT_LINES):
        at = now - timedelta(minutes=AUDIT_LINES - i)
        append_event(path, "applied", at=at, revision=f"{i:040x}", reason=f"deploy {i}")


def page_load_ms(runs: int = 20) -> float:
    """Median ms of read + verify + render over a 1,000-line audit log."""
    now = datetime.now(UTC)
    sample = page_sample(now=now)
    with tempfile.TemporaryDirectory() as tmp:
        audit = Path(tmp) / "audit.jsonl"
        _audit_log(audit, now)

        def load() -> None:
            render_page(**{**sample, "events": read_events(audit), "chain": verify_chain(audit)})

        return median_seconds(load, runs=runs) * 1e3


def measure(runs: int = 200) -> Result:
    """Median render time of the sample page vs JSON of the same data."""
    sample = page_sample(now=datetime.now(UTC))
    shown = {**sample, "events": sample["events"][-PAGE_EVENTS:], "now": sample["now"].isoformat()}

    def page() -> None:
        render_page(**sample)

    def baseline() -> None:
        json.dumps(shown)

    figure = median_seconds(page, runs=runs)
    base = median_seconds(baseline, runs=runs)
    return Result("status page render (vs json.dumps of the same data)", figure * 1e3, base * 1e3, "ms", 15)


def main() -> int:
    """Measure and print."""
    result = measure()
    print(
        f"page load with a {AUDIT_LINES}-line audit log (read, verify, render): {page_load_ms():.2f} ms (goal < 50 ms)"
    )
    return report(result)


if __name__ == "__main__":
    sys.exit(main())
