"""The glance end to end (docs/design.md §7, §8, §16): a rolled-back change on the real engine, as read by people.

The manifest repository is real git signed with a real ssh key, the runtime runs
on the test bed's private dockerd, and every command goes through the installed
``dreichor-controller`` entry point in a child process, with ``-e prod`` and
``DREICHOR_ROOT`` as the operator types it.  What the operator sees (``status``
text, the metrics, the page in headless Chromium) is saved under
``test-output/glance/``; with ``DREICHOR_WRITE_DOCS=1`` the page's screenshot also
replaces ``docs/status-page.png``, so the documentation shows real output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.daemon.scheduler import Daemon
from testbed import ControllerHost, wait_for

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("DREICHOR_TEST_OUTPUT") or ROOT / "test-output") / "glance"
CLI = Path(sys.executable).with_name("dreichor-controller")


@dataclass
class Operator:
    """Runs the real command line against one host, as a person at its shell would."""

    host: ControllerHost
    user: str = "alice"

    def run(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        """``dreichor-controller ARGS`` with the host's root; ``check``: the exit code it must end with."""
        env = {**os.environ, "DREICHOR_ROOT": str(self.host.root), "SUDO_USER": self.user}
        env.pop("DREICHOR_CONFIG", None)
        done = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        if check is not None:
            assert done.returncode == check, (args, done.returncode, done.stdout, done.stderr)
        return done

    def piped(self, command: str, reader: str) -> tuple[int, str]:
        """``dreichor-controller COMMAND | READER``: its own exit code and what it said on stderr."""
        # without PYTHONUNBUFFERED, as on a host: the output waits in the buffer for the flush at exit
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"DREICHOR_ROOT": str(self.host.root)}
        script = f"{CLI} {command} | {reader} >/dev/null; echo ${{PIPESTATUS[0]}}"
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=True)
        return int(done.stdout.strip()), done.stderr


def tagged(image: str, tag: str) -> str:
    """``repo@sha256:…`` as a manifest declares it with a tag beside the digest."""
    repository, _, digest = image.partition("@")
    return f"{repository}:{tag}@{digest}"


@pytest.fixture
def rolled_back(controller_host: ControllerHost, images: dict[str, str]) -> Iterator[tuple[Daemon, Operator]]:
    """prod ran 1.4.2; 1.5.0 exits at start and was rolled back by the daemon's pass."""
    host = controller_host
    host.publish("prod: 1.4.2", prod=tagged(images["healthy-a"], "1.4.2"))
    daemon = Daemon(host.configs["prod"])
    assert daemon.tick().result == "applied"
    host.publish("prod: 1.5.0", prod=tagged(images["exits"], "1.5.0"))
    assert daemon.tick().result == "rolled_back"
    wait_for(lambda: host.running()["State"]["Health"]["Status"] == "healthy", timeout=30)  # type: ignore[index]
    assert daemon.tick().result == "refused"  # held, said by every pass; the restored container is seen healthy
    yield daemon, Operator(host)
    daemon.service.close()


def test_a_rolled_back_change_reads_out_of_sync_and_healthy_at_the_previous_version(
    rolled_back: tuple[Daemon, Operator],
) -> None:
    _, operator = rolled_back
    text = operator.run("-e", "prod", "status").stdout
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "status-rolled-back.txt").write_text(text)
    head = text.splitlines()[0]
    assert re.search(r"sync: OutOfSync +health: Healthy +version: 1\.4\.2", head), text
    assert "why:         rolled back: " in text
    assert "[HealthGateFailed]" in text
    assert all(len(line) <= 80 or len(line[13:].split()) == 1 for line in text.splitlines()), text  # a URL stays whole
    unwrapped = re.sub(r"\n {13}", " ", text)  # a field's text goes on under its label column
    assert re.search(r"quarantine:  the content of [0-9a-f]{12} \(desired container sha256:[0-9a-f]{16}…\)", unwrapped)
    assert "container log before the rollback (first" in text and "  | " in text
    assert re.search(r"applied:     1\.4\.2 \([0-9a-f]{12}\), \d+ (s|min) ago\n", text), text
    status = json.loads(operator.run("-e", "prod", "status", "--json").stdout)
    assert status["sync"]["state"] == "OutOfSync" and status["health"] == "Healthy"
    assert status["applied"]["tag"] == "1.4.2"
    assert status["last_attempt"]["code"] == "HealthGateFailed"


def test_status_check_and_the_config_on_either_side_of_the_command(rolled_back: tuple[Daemon, Operator]) -> None:
    _, operator = rolled_back
    config = str(operator.host.configs["prod"])
    operator.run("-e", "prod", "status", "--check", check=3)  # out of sync, container healthy
    operator.run("--config", config, "status", "--check", check=3)
    operator.run("status", "--config", config, "--check", check=3)
    operator.run("status", "-e", "prod", "--check", check=3)
    wrong = operator.run("-e", "dev", "status", "--config", config, check=1)
    assert "the config is for 'prod', not 'dev'" in wrong.stderr
    operator.host.engine.cli("rm", "--force", "dreichor-runtime-prod")
    operator.run("-e", "prod", "suspend", "--reason", "looking at it")
    # suspended: it only looks, records the container missing, and says it is suspended (exit 3, issue 31)
    operator.run("-e", "prod", "sync", check=3)
    assert "health: Missing" in operator.run("-e", "prod", "status").stdout
    operator.run("-e", "prod", "status", "--check", check=4)  # down outranks out of sync


def test_a_closed_pipe_ends_the_command_quietly(rolled_back: tuple[Daemon, Operator]) -> None:
    _, operator = rolled_back
    for command in ("-e prod status --json", "-e prod history --json", "-e prod status"):
        for reader in ("head -1", "true"):  # true reads nothing: every write meets a closed pipe
            code, err = operator.piped(command, reader)
            assert (code, err) == (0, ""), (command, reader, code, err)


def test_the_held_head_is_one_decision_logged_counted_and_told_once(
    rolled_back: tuple[Daemon, Operator], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, operator = rolled_back
    events = operator.host.audit()
    with caplog.at_level(logging.INFO, logger="dreichor.daemon"):
        for _ in range(3):
            daemon.tick()
    assert operator.host.audit() == events  # nothing new to tell
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    status = operator.host.status()
    assert status.last_attempt is not None and status.last_attempt.code == "HealthGateFailed"
    metrics = daemon.metrics.exposition().decode()
    (OUTPUT / "metrics-rolled-back.txt").write_text(metrics)
    assert "_created" not in metrics
    assert 'dreichor_sync{state="OutOfSync"} 1.0' in metrics
    assert 'dreichor_health{state="Healthy"} 1.0' in metrics
    assert re.search(r'dreichor_applied_info\{.*version="1\.4\.2"', metrics)
    assert "dreichor_rollbacks_total 1.0" in metrics


def test_a_head_refused_before_anything_ran_is_held_not_refused_every_poll(
    controller_host: ControllerHost, images: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    host = controller_host
    host.publish("unsigned", key=None, prod=images["healthy-b"])
    daemon = Daemon(host.configs["prod"])
    try:
        with caplog.at_level(logging.INFO, logger="dreichor.daemon"):
            results = [daemon.tick() for _ in range(4)]
    finally:
        daemon.service.close()
    assert [r.result for r in results] == ["refused"] * 4
    assert [e["event"] for e in host.audit()] == ["refused"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage() == "pass"]
    assert len(warnings) == 1
    status = host.status()
    assert status.last_attempt is not None and status.last_attempt.code != "Quarantined"
    assert status.sync is not None and status.sync.state == "OutOfSync"
    metrics = daemon.metrics.exposition().decode()
    assert 'dreichor_passes_total{result="refused"} 1.0' in metrics
    assert 'dreichor_passes_total{result="held"} 3.0' in metrics
    assert re.search(r'dreichor_refusals_total\{reason="[A-Za-z]+"\} 1\.0', metrics)


def test_suspend_records_who_and_why_and_resume_records_what_is_true(rolled_back: tuple[Daemon, Operator]) -> None:
    _, operator = rolled_back
    said = operator.run("-e", "prod", "suspend", "--reason", "db migration until 15:00").stdout
    assert said.strip() == "suspended by alice: db migration until 15:00"
    event = operator.host.audit()[-1]
    assert (event["event"], event["by"], event["reason"]) == ("suspended", "alice", "db migration until 15:00")
    text = operator.run("-e", "prod", "status").stdout
    assert "sync: Suspended" in text and "suspended:   by alice, " in text and ": db migration until 15:00" in text
    operator.run("-e", "prod", "status", "--check", check=3)
    operator.run("-e", "prod", "resume")
    status = operator.host.status()
    assert status.phase == "Degraded"  # what is true: the change was rolled back; no pass is running
    assert status.sync is not None and status.sync.state == "OutOfSync" and status.suspension is None


def test_plan_exit_code_tells_a_change_from_nothing(controller_host: ControllerHost, images: dict[str, str]) -> None:
    operator = Operator(controller_host)
    operator.run("-e", "prod", "sync")
    operator.run("-e", "prod", "plan", "--exit-code")  # nothing to do: 0
    controller_host.publish("prod: 1.5.0", prod=tagged(images["healthy-b"], "1.5.0"))
    said = operator.run("-e", "prod", "plan", "--exit-code", check=2).stdout
    assert re.search(r"^fetched:   main at [0-9a-f]{12}$", said, re.MULTILINE), said
    assert f"verified:  signed by {controller_host.key.principal}" in said
    assert re.search(r"^valid: .*@sha256:[0-9a-f]{64} \(tag 1\.5\.0\)$", said, re.MULTILINE), said
    assert "plan:      replace: " in said
    operator.run("-e", "prod", "plan")  # without --exit-code a planned change is 0, as before
    controller_host.publish("unsigned", key=None, prod=images["healthy-a"])
    operator.run("-e", "prod", "plan", "--exit-code", check=3)


def test_the_page_shows_sync_and_health_apart_in_chromium(rolled_back: tuple[Daemon, Operator], tmp_path: Path) -> None:
    daemon, _ = rolled_back
    binary = shutil.which("chromium")
    assert binary is not None, "chromium is installed by scripts/setup"
    daemon.api = daemon._start_api()
    try:
        url = f"http://{daemon.config.listen}/"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path}/p"]
        dump = [binary, *flags, "--dump-dom", url]
        dom = subprocess.run(dump, capture_output=True, text=True, timeout=120, check=True).stdout
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "page-rolled-back.png"
        subprocess.run(
            [binary, *flags, f"--screenshot={shot}", "--window-size=1100,1500", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    finally:
        daemon.api.shutdown()
        daemon.api.server_close()
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "OutOfSync Healthy running 1.4.2" in words
    assert "the container runs and is healthy" in words
    assert re.search(r"Quarantined the content of [0-9a-f]{12} \(desired container sha256:[0-9a-f]{16}…\)", words)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DREICHOR_WRITE_DOCS") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "status-page.png")
