"""Runs every benchmark in one go: one table (figure, baseline, ratio, goal, met) and ``bench/results.json``."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import api_load, image_verify, keyless_verify, page, poll, swap, trigger, verify
from bench.common import Result
from controller.records.files import atomic_write

RESULTS = Path(__file__).with_name("results.json")


def main() -> int:
    """Run, print, write."""
    results: list[Result] = [verify.measure(), verify.measure_webflow()]
    poll_result, rss = poll.measure()
    results += [poll_result, swap.measure(), swap.measure_swarm()]
    trigger_result, hook = trigger.measure()
    results.append(trigger_result)
    results += [page.measure(), page.measure_during_pass(), api_load.measure(), image_verify.measure()]
    results += keyless_verify.measure()
    page_load = page.page_load_ms()
    rows = [
        (
            r.name,
            f"{r.figure:.4g} {r.unit}",
            f"{r.baseline:.4g} {r.unit}",
            f"{r.ratio:.3f}",
            f"<= {r.goal}",
            "met" if r.met else "NOT met",
        )
        for r in results
    ]
    rows.append(
        (
            "RSS after 1,000 no-change passes",
            f"{rss[-1]:.1f} MB",
            f"{rss[0]:.1f} MB (first)",
            f"{rss[-1] / rss[0]:.3f}",
            "<= 80 MB, flat",
            "met" if rss[-1] <= 80 and rss[-1] - rss[0] < 5 else "NOT met",
        )
    )
    rows.append(("webhook to running", f"{hook:.3f} s", "-", "-", "<= 3 s + pull", "met" if hook <= 3 else "NOT met"))
    rows.append(
        (
            "status page load, 1,000 audit lines",
            f"{page_load:.2f} ms",
            "-",
            "-",
            "< 50 ms",
            "met" if page_load < 50 else "NOT met",
        )
    )
    header = ("benchmark", "figure", "baseline", "ratio", "goal", "result")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    machine = f"{platform.node()}: {platform.platform()}, {platform.processor() or platform.machine()}"
    report = {
        "at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "results": [json.loads(r.as_json()) for r in results],
        "rss_mb": {"first": rss[0], "last": rss[-1]},
        "webhook_to_running_s": hook,
        "page_load_ms": page_load,
    }
    atomic_write(RESULTS, json.dumps(report, indent=2).encode() + b"\n")
    print(f"\nmachine: {machine}\nwritten: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
