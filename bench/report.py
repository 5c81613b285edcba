"""Runs every benchmark in one go: one table (figure, baseline, ratio, goal, met) and ``bench/results.json``.

Every row is printed as it is measured; a benchmark that fails prints why and
the run goes on, so the table always comes out, with that row marked FAILED.
The last row counts the mounts left under the sandboxes' folders (goal: none).
"""

from __future__ import annotations

import json
import platform
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

from bench import api_load, command_line, image_verify, keyless_verify, page, poll, sandbox, swap, trigger, verify
from bench.common import Result
from controller.records.files import atomic_write

RESULTS = Path(__file__).with_name("results.json")
GOALS = """\
goals (issue 36; each row's baseline is measured in this run):
  status, status --check, --version, a completion script  <= 3x a bare python3 reading status.json with json
                                                           (median of 20, each a fresh process)
  swap window, old die -> new start                       <= 1.1x the engine's docker start of a created container
                                                           (median of 9)
  Swarm update window                                     <= 1.0x docker service update --image (median of 9)
  no-change pass CPU                                      <= 1.0x a plain git fetch, in each of three runs
  RSS after 1,000 no-change passes                        <= 80 MB, flat
"""


T = TypeVar("T")
Row = tuple[str, str, str, str, str, str]


class Rows:
    """The table's rows as they come; a benchmark that fails is a row that says why, and the run goes on."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.results: list[Result] = []
        self.failed: dict[str, str] = {}

    def attempt(self, name: str, measure: Callable[[], T]) -> T | None:
        """Run one benchmark; on failure print why (and the traceback on stderr) and return None."""
        try:
            return measure()
        except (Exception, SystemExit) as exc:  # any failure is one row's, not the run's
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            traceback.print_exc()
            print(f"{name}: FAILED: {why}", flush=True)
            self.failed[name] = why
            self.rows.append((name, "-", "-", "-", "-", f"FAILED: {why}"))
            return None

    def add(self, result: Result | None) -> None:
        """A measured row, printed at once."""
        if result is None:
            return
        print(result.line(), flush=True)
        self.results.append(result)
        ratio = f"{result.ratio:.3f}"
        goal = f"<= {result.goal}"
        verdict = "met" if result.met else "NOT met"
        self.rows.append((result.name, result.shown(), result.shown(baseline=True), ratio, goal, verdict))

    def row(self, *cells: str) -> None:
        """A row that is not a ratio against a baseline."""
        print(" | ".join(cells), flush=True)
        self.rows.append(cast(Row, cells))


def main() -> int:
    """Run every benchmark, print each row as it comes and then the table, write the JSON."""
    print(GOALS, flush=True)
    table = Rows()
    for result in table.attempt("command line", command_line.measure) or []:
        table.add(result)
    table.add(table.attempt("signature verify", verify.measure))
    table.add(table.attempt("signature verify, web-flow", verify.measure_webflow))
    polled = table.attempt("no-change pass CPU", poll.measure)
    table.add(polled[0] if polled else None)
    table.add(table.attempt("swap window", swap.measure))
    table.add(table.attempt("swarm update window", swap.measure_swarm))
    triggered = table.attempt("trigger to running", trigger.measure)
    table.add(triggered[0] if triggered else None)
    for name, measure in (
        ("status page render", page.measure),
        ("GET / while a pass runs", page.measure_during_pass),
        ("/healthz under slow clients", api_load.measure),
        ("image signature verify", image_verify.measure),
    ):
        table.add(table.attempt(name, measure))
    for result in table.attempt("keyless image verify", keyless_verify.measure) or []:
        table.add(result)
    page_load = table.attempt("status page load", page.page_load_ms)
    rss = polled[1] if polled else None
    if rss:
        flat = "met" if rss[-1] <= 80 and rss[-1] - rss[0] < 5 else "NOT met"
        first = f"{rss[0]:.1f} MB (first)"
        table.row(
            "RSS after 1,000 no-change passes",
            f"{rss[-1]:.1f} MB",
            first,
            f"{rss[-1] / rss[0]:.3f}",
            "<= 80 MB, flat",
            flat,
        )
    if triggered:
        hook = triggered[1]
        table.row("webhook to running", f"{hook:.3f} s", "-", "-", "<= 3 s + pull", "met" if hook <= 3 else "NOT met")
    if page_load is not None:
        verdict = "met" if page_load < 50 else "NOT met"
        table.row("status page load, 1,000 audit lines", f"{page_load:.2f} ms", "-", "-", "< 50 ms", verdict)
    left = sandbox.leftover_mounts()
    table.row("mounts left under the sandboxes", str(len(left)), "-", "-", "0", "met" if not left else "NOT met")
    rows = table.rows
    results = table.results
    hook = triggered[1] if triggered else None
    header = ("benchmark", "figure", "baseline", "ratio", "goal", "result")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    machine = f"{platform.node()}: {platform.platform()}, {platform.processor() or platform.machine()}"
    report = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "results": [json.loads(r.as_json()) for r in results],
        "rss_mb": {"first": rss[0], "last": rss[-1]} if rss else None,
        "webhook_to_running_s": hook,
        "page_load_ms": page_load,
        "failed": table.failed,
        "mounts_left": left,
    }
    atomic_write(RESULTS, json.dumps(report, indent=2).encode() + b"\n")
    print(f"\n{GOALS}\nmachine: {machine}\nwritten: {RESULTS}")
    if polled:
        print(f"\nprofile of a no-change pass (CPU of the controller's own process):\n{polled[2]}")
    return 1 if table.failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
