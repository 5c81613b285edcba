"""What the command line loads for the commands people and monitoring run most: ``--version``,
``status``, ``status --check`` and a completion script (issue 36, a light command line).

Each runs in a fresh ``python -X importtime -m controller`` and the test reads which modules it
imported: none of the daemon, the API, the pass, the engine, git, the trust code or notifications,
and no third-party SDK they wrap.  What is imported is the test; how long it takes is
``bench/run``'s row, never a timed test.  A command that builds the service (``history``) is the
control: the same reading sees them there, so the test cannot pass by reading nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.cli import main
from controller.records.status import ContainerStatus, SourceStatus, Status, write_status

HEAVY = (
    "docker",
    "git",
    "apscheduler",
    "jinja2",
    "apprise",
    "sigstore",
    "sigstore_models",
    "cryptography",
    "pysequoia",
    "requests",
    "jwt",
    "h11",
    "prometheus_client",
    "dotenv",
    "controller.compose",
    "controller.service",
    "controller.daemon.scheduler",
    "controller.daemon.metrics",
    "controller.api",
    "controller.reconcile",
    "controller.rollout",
    "controller.engine",
    "controller.source",
    "controller.signatures",
    "controller.notifications",
)
URL = "file:///nonexistent/manifests.git"  # nothing here fetches; the control reads history only


def imported(*args: str, root: Path) -> set[str]:
    """The modules a fresh ``python -m controller ARGS`` imports, from ``-X importtime``'s report."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "controller", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DREICHOR_ROOT": str(root)},
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]  # --check's 3 or 4 is an answer too
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "controller.cli" in names, proc.stderr[-2000:]  # the report was read: the command line itself is in it
    return names


def heavy(names: set[str]) -> list[str]:
    """The heavy modules (or their submodules) among ``names``."""
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A host with a config and a status file, as a running controller leaves it."""
    assert main(["init", "--environment", "dev", "--root", str(tmp_path)]) == 0
    agent = tmp_path / "dev" / "deploy-agent"
    config = agent / "controller.yaml"
    config.write_text(config.read_text().replace("  # url: ssh://git@github.com/<owner>/<repo>.git", f"  url: {URL}"))
    now = datetime.now(UTC)
    status = Status(
        environment="dev",
        updated_at=now,
        source=SourceStatus(url=URL, branch="main", head="a" * 40, fetched_at=now),
        container=ContainerStatus(name="dreichor-runtime-dev", state="running", health="healthy"),
    )
    write_status(agent / "state" / "status.json", status)
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("status", "-e", "dev"),
        ("status", "-e", "dev", "--check"),
        ("status", "-e", "dev", "--json"),
        ("completion", "bash"),
    ],
    ids=" ".join,
)
def test_a_light_command_loads_no_daemon_api_pass_engine_git_or_trust(args: tuple[str, ...], root: Path) -> None:
    assert heavy(imported(*args, root=root)) == []


def test_status_reads_the_status_file_it_shows(root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "status", "-e", "dev"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DREICHOR_ROOT": str(root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "container:   dreichor-runtime-dev running (health healthy)" in proc.stdout


def test_a_command_that_builds_the_service_loads_it_and_the_reading_sees_that(root: Path) -> None:
    names = imported("history", "-e", "dev", root=root)
    assert {"controller.service", "controller.reconcile.steps", "git", "docker"} <= set(heavy(names))
