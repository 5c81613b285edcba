"""How fast the command line answers: ``status``, ``status --check``, ``--version`` and a completion script,
each a fresh process, against a bare Python that reads the same status file with ``json``.

Monitoring runs ``status --check`` every few seconds and people run ``status``
and ``--version`` by hand; each pays the interpreter's start and what the
command imports.  The baseline is the least any Python command could do for
the same answer: the same interpreter (the venv's, with its site) started
fresh, reading the same ``status.json`` with ``json``.  Every sample is a new
process; baseline and commands alternate, so load on the machine falls on
both.  ``tests/unit/test_cli_imports.py`` holds WHAT these commands import;
this row holds the time.  Run: ``.venv/bin/python -m bench.command_line``.
Goal: each <= 3x the baseline (median of 20).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Result, median_with_spread, report
from controller.records.host_init import init_layout
from controller.records.status import AppliedStatus, AttemptStatus, ContainerStatus, SourceStatus, Status, write_status

RUNS = 20
WARMUP = 2
GOAL = 3.0
URL = "file:///srv/manifests.git"
IMAGE = "ghcr.io/ceerkle/dreichor-trading/runtime@sha256:" + "c" * 64
COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status", "-e", "dev"),
    "status --check": ("status", "-e", "dev", "--check"),
    "--version": ("--version",),
    "completion bash": ("completion", "bash"),
}


def _host(root: Path) -> Path:
    """A host as a running controller leaves it: a config and a status file; returns the status file."""
    init_layout(root, "dev")
    agent = root / "dev" / "deploy-agent"
    config = agent / "controller.yaml"
    config.write_text(config.read_text().replace("  # url: ssh://git@github.com/<owner>/<repo>.git", f"  url: {URL}"))
    now = datetime.now(UTC)
    status = Status(
        environment="dev",
        updated_at=now,
        source=SourceStatus(url=URL, branch="main", head="a" * 40, fetched_at=now),
        container=ContainerStatus(name="dreichor-runtime-dev", id="b" * 64, image=IMAGE, state="running"),
        applied=AppliedStatus(revision="a" * 40, image=IMAGE, signer="ops@example (SSH)", applied_at=now),
        last_attempt=AttemptStatus(revision="a" * 40, result="applied", reason="applied", at=now),
    )
    write_status(agent / "state" / "status.json", status)
    return agent / "state" / "status.json"


def _program() -> list[str]:
    """The installed ``dreichor-controller`` beside this interpreter, else ``python -m controller``."""
    script = Path(sys.executable).with_name("dreichor-controller")
    return [str(script)] if script.exists() else [sys.executable, "-m", "controller"]


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def measure(runs: int = RUNS) -> list[Result]:
    """One row per command: the median of ``runs`` fresh processes vs the bare reader's, alternating."""
    with tempfile.TemporaryDirectory(prefix="dreichor-bench-cli-") as folder:
        root = Path(folder)
        status_file = _host(root)
        env = {**os.environ, "DREICHOR_ROOT": str(root)}
        bare = [sys.executable, "-c", "import json, sys; json.load(open(sys.argv[1]))", str(status_file)]
        program = _program()
        baseline: list[float] = []
        samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for n in range(WARMUP + runs):
            took = _seconds(bare, env)
            if n >= WARMUP:
                baseline.append(took)
            for name, args in COMMANDS.items():
                took = _seconds([*program, *args], env)
                if n >= WARMUP:
                    samples[name].append(took)
    floor, floor_spread = median_with_spread(baseline, scale=1e3)
    results = []
    for name, taken in samples.items():
        figure, spread = median_with_spread(taken, scale=1e3)
        results.append(
            Result(
                f"`{name}` (vs python3 reading status.json with json), median of {runs}",
                figure,
                floor,
                "ms",
                GOAL,
                spread=spread,
                baseline_spread=floor_spread,
            )
        )
    return results


def main() -> int:
    """Measure and print."""
    for result in measure():
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
