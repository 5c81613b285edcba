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
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Result, median_seconds, report
from bench.sandbox import sandbox
from controller.api.page import PAGE_EVENTS, render_page
from controller.daemon.scheduler import Daemon
from controller.records.audit import append_event, read_events, verify_chain
from testbed import ControllerHost, ManifestRepo, make_ssh_key, page_sample

AUDIT_LINES = 1000
BUSY_PASSES = 4
IDLE_LOADS = 100


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


def _load_ms(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 loopback
        reply.read()
    return (time.perf_counter() - start) * 1e3


def _loads_while(url: str, busy: threading.Thread) -> list[float]:
    """Page loads, one after the other, for as long as ``busy`` runs."""
    samples = []
    while busy.is_alive():
        samples.append(_load_ms(url))
    return samples


def measure_during_pass() -> Result:
    """Median ``GET /`` while passes run vs while the daemon is idle, on a real engine."""
    with sandbox() as bed:
        repo = ManifestRepo(bed.base / "manifests")
        host = ControllerHost(bed.base, bed.engine, bed.registry, repo, make_ssh_key(bed.base / "keys", name="bench"))
        host.publish("a", prod=bed.images["healthy-a"])
        _audit_log(host.root / "prod/deploy-agent/state/audit.jsonl", datetime.now(UTC))
        daemon = Daemon(host.configs["prod"])
        daemon.tick()
        daemon.api = daemon._start_api()
        url = f"http://{daemon.config.listen}/"
        try:
            idle = [_load_ms(url) for _ in range(IDLE_LOADS)]
            busy: list[float] = []
            for n in range(BUSY_PASSES):
                host.publish(f"swap {n}", prod=bed.images["healthy-b" if n % 2 == 0 else "healthy-a"])
                worker = threading.Thread(target=daemon.tick)
                worker.start()
                busy += _loads_while(url, worker)
                worker.join()
        finally:
            daemon.api.shutdown()
            daemon.api.server_close()
            daemon.service.close()
    figure, base = statistics.median(busy), statistics.median(idle)
    worst = sorted(busy)[int(len(busy) * 0.95)]
    print(
        f"GET / while a pass runs: median {figure:.2f} ms, p95 {worst:.2f} ms over {len(busy)} loads"
        f" in {BUSY_PASSES} passes; idle {base:.2f} ms (goal < 50 ms)"
    )
    return Result("GET / while a pass runs (vs the idle page)", figure, base, "ms", 3)


def main() -> int:
    """Measure and print."""
    result = measure()
    print(
        f"page load with a {AUDIT_LINES}-line audit log (read, verify, render): {page_load_ms():.2f} ms (goal < 50 ms)"
    )
    report(result)
    return report(measure_during_pass())


if __name__ == "__main__":
    sys.exit(main())
