"""The glance in the fast tier: sync and health apart, the status text, ``--check``, ``-e``, help and pipes.

The end-to-end versions (real engine, git, keys, the page in Chromium) are in
``tests/integration/test_glance.py``; these pin the pure rules and the command
line's parsing without Docker.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.cli import main
from controller.cli.parser import COMMANDS
from controller.cli.render import audit_lines, snapshot_lines, status_lines, wants_colour
from controller.daemon.metrics import Metrics
from controller.errors import Reason
from controller.model.config import config_path
from controller.reconcile.record import PassReport, PassResult, record, suspension
from controller.records.snapshots import Snapshot
from controller.records.status import (
    AppliedStatus,
    AttemptStatus,
    ContainerStatus,
    SourceStatus,
    Status,
    health_of,
    read_status,
    write_status,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "status"
NOW = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)
OLD, NEW = "a" * 40, "b" * 40
IMAGE = "registry.test/runtime@sha256:" + "1" * 64
RUNNING = ContainerStatus(name="dreichor-runtime-prod", id="c1", image=IMAGE, state="running", health="healthy")


def rolled_back() -> Status:
    return Status(
        environment="prod",
        phase="Degraded",
        updated_at=NOW,
        source=SourceStatus(url="file:///m", branch="main", head=NEW, fetched_at=NOW),
        applied=AppliedStatus(revision=OLD, image=IMAGE, signer="alice", applied_at=NOW, tag="1.4.2"),
        last_attempt=AttemptStatus(
            revision=NEW, result="rolled_back", reason="unhealthy", code="HealthGateFailed", at=NOW, logs="a\nb"
        ),
        container=RUNNING,
        quarantined="content:" + "5" * 64,
    )


# -- the status file ----------------------------------------------------------------------------


def test_the_previous_releases_status_file_loads_with_sync_and_health_derived(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    shutil.copyfile(DATA / "previous-release-rolled-back.json", path)
    assert "sync" not in json.loads(path.read_text())
    status = read_status(path)
    assert status is not None and status.sync is not None
    assert (status.sync.state, status.health) == ("OutOfSync", "Healthy")
    assert status.sync.reason.startswith("rolled back: the new container is restarting")
    assert status.applied is not None and status.applied.tag is None
    assert status.applied.version() == "sha256:bb3317c66c3c"  # no tag declared: the short digest
    write_status(path, status)
    written = json.loads(path.read_text())
    assert written["sync"]["state"] == "OutOfSync" and written["health"] == "Healthy"
    assert written["applied"]["tag"] is None


@pytest.mark.parametrize(
    ("state", "health", "expected"),
    [
        ("running", "healthy", "Healthy"),
        ("running", "none", "Healthy"),
        ("running", "unhealthy", "Unhealthy"),
        ("running", "starting", "Unknown"),
        ("exited", "none", "Unhealthy"),
        ("missing", "none", "Missing"),
        ("unknown", "unknown", "Unknown"),
    ],
)
def test_health_is_one_word_for_the_container(state: str, health: str, expected: str) -> None:
    assert health_of(ContainerStatus(name="x", state=state, health=health)) == expected


def test_the_quarantine_is_named_readably_not_cut() -> None:
    text = rolled_back().quarantine_text()
    assert text is not None and text.startswith(
        "the content of bbbbbbbbbbbb (desired container sha256:5555555555555555…)"
    )
    assert "content:5555" not in text


# -- recording ----------------------------------------------------------------------------------


def _report(result: PassResult, **fields: object) -> PassReport:
    return PassReport(result=result, container=RUNNING, head=NEW, host_digest="h", **fields)  # type: ignore[arg-type]


def test_a_held_head_keeps_the_real_reason_and_writes_no_audit_line() -> None:
    held = PassResult("refused", "unhealthy", code=Reason.QUARANTINED)
    status, events = record(rolled_back(), _report(held, target=NEW), now=NOW, stale_after=timedelta(minutes=5))
    assert events == []
    assert status.last_attempt is not None and status.last_attempt.code == "HealthGateFailed"
    assert status.quarantined == rolled_back().quarantined
    assert status.sync is not None and status.sync.state == "OutOfSync"


def test_an_applied_tag_is_recorded_and_shown_as_the_version() -> None:
    applied = PassResult("applied", "deploying", code=Reason.APPLIED)
    report = _report(applied, target=NEW, signer="alice", image=IMAGE, tag="1.5.0", content="c")
    status, _ = record(rolled_back(), report, now=NOW, stale_after=timedelta(minutes=5))
    assert status.applied is not None and status.applied.version() == "1.5.0"
    assert status.health == "Healthy"
    assert status.sync is not None and status.sync.state == "InSync"


def test_suspend_records_who_and_why_and_resume_records_what_is_true() -> None:
    suspended = suspension(rolled_back(), suspended=True, now=NOW, by="alice", reason="db migration")
    assert suspended.sync is not None and suspended.sync.state == "Suspended"
    assert suspended.sync.reason == "suspended by alice: db migration"
    resumed = suspension(suspended, suspended=False, now=NOW, by="alice")
    assert resumed.phase == "Degraded" and resumed.suspension is None  # not "Progressing": no pass runs
    in_sync = rolled_back().model_copy(update={"quarantined": None, "last_attempt": None})
    assert suspension(in_sync, suspended=False, now=NOW).phase == "InSync"


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_carry_sync_and_health_and_no_created_series() -> None:
    metrics = Metrics()
    metrics.record_status(rolled_back())
    metrics.record_pass(
        "refused", reason=Reason.QUARANTINED, drift_repaired=False, seconds=0.1, revision=OLD, image=IMAGE
    )
    text = metrics.exposition().decode()
    assert "_created" not in text
    assert 'dreichor_sync{state="OutOfSync"} 1.0' in text and 'dreichor_sync{state="Waiting"} 0.0' in text
    assert 'dreichor_health{state="Healthy"} 1.0' in text
    assert 'dreichor_passes_total{result="held"} 1.0' in text
    assert "dreichor_refusals_total{" not in text  # the held head was refused once, earlier


# -- the command line ---------------------------------------------------------------------------


def _status_file(tmp_path: Path, status: Status) -> Path:
    """A layout under ``tmp_path`` whose prod status is ``status``; returns the config."""
    agent = tmp_path / "prod" / "deploy-agent"
    (agent / "state").mkdir(parents=True)
    (agent / "trust").mkdir()
    (agent / "trust" / "allowed_signers").write_text("")
    config = agent / "controller.yaml"
    config.write_text(
        f"environment: prod\nroot: {tmp_path}\nsource: {{url: 'file:///nowhere'}}\n"
        "trust: {allowed_signers: trust/allowed_signers}\n"
    )
    # The fixed statuses of this module are written now: a status older than three intervals says "unknown".
    fresh = status.model_copy(update={"updated_at": datetime.now(UTC)}) if status.updated_at <= NOW else status
    write_status(agent / "state" / "status.json", fresh)
    return config


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"quarantined": None, "last_attempt": None}, 0),
        ({}, 3),
        ({"suspended": True}, 3),
        ({"container": ContainerStatus(name="dreichor-runtime-prod")}, 4),
        ({"container": ContainerStatus(name="x", state="running", health="unhealthy")}, 4),
        ({"container": ContainerStatus(name="x", state="unknown", health="unknown")}, 4),
    ],
)
def test_status_check_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, object], code: int
) -> None:
    status = Status.model_validate({**rolled_back().model_dump(exclude={"sync", "health"}), **change})
    _status_file(tmp_path, status)
    monkeypatch.setenv("DREICHOR_ROOT", str(tmp_path))
    assert main(["-e", "prod", "status", "--check"]) == code
    assert main(["status", "-e", "prod"]) == 0  # without --check, reading it is success


def test_status_check_says_unknown_when_no_controller_wrote_the_status_for_three_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = {"quarantined": None, "last_attempt": None}
    status = Status.model_validate({**rolled_back().model_dump(exclude={"sync", "health"}), **healthy})
    config = _status_file(tmp_path, status.model_copy(update={"updated_at": datetime.now(UTC) - timedelta(minutes=2)}))
    assert (
        main(["--config", str(config), "status", "--check"]) == 0
    )  # 2 min: within three intervals (60 s) and a health gate (60 s)
    _status_file(tmp_path / "old", status.model_copy(update={"updated_at": datetime.now(UTC) - timedelta(minutes=5)}))
    old = tmp_path / "old" / "prod" / "deploy-agent" / "controller.yaml"
    capsys.readouterr()
    assert main(["--config", str(old), "status", "--check"]) == 4
    assert "unknown: no controller has written the status for 5 min" in capsys.readouterr().err


def test_status_check_without_a_status_file_is_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _status_file(tmp_path, rolled_back())
    (config.parent / "state" / "status.json").unlink()
    assert main(["--config", str(config), "status", "--check"]) == 1
    assert main(["--config", str(config), "status"]) == 0


def test_status_text_shows_the_glance_with_ages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = rolled_back().model_copy(update={"updated_at": datetime.now(UTC) - timedelta(minutes=3)})
    status.source.last_error = "git: connection refused"
    status.applied.image_signer = "SHA256:abc"  # type: ignore[union-attr]
    config = _status_file(tmp_path, status)
    assert main(["status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "sync: OutOfSync   health: Healthy   version: 1.4.2" in text.splitlines()[0]
    assert "quarantine:  the content of bbbbbbbbbbbb" in text
    assert "fetch error: git: connection refused" in text
    assert "image by:    SHA256:abc" in text
    assert "  | a\n  | b\n" in text
    assert "updated:     3 min ago (" in text


def test_e_finds_the_config_under_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DREICHOR_ROOT", raising=False)
    assert config_path(None, environment="prod") == Path("/opt/dreichor/prod/deploy-agent/controller.yaml")
    monkeypatch.setenv("DREICHOR_ROOT", "/srv/d")
    assert config_path(None, environment="dev") == Path("/srv/d/dev/deploy-agent/controller.yaml")
    assert config_path("/x.yaml", environment="dev") == Path("/x.yaml")


def test_the_config_given_before_the_command_is_used(tmp_path: Path) -> None:
    config = _status_file(tmp_path, rolled_back())
    assert main(["--config", str(config), "status", "--check"]) == 3
    assert main(["status", "--config", str(config), "--check"]) == 3


def test_every_command_has_a_description_an_example_and_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command.name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert command.description.split()[0] in text, command.name
        assert f"example:\n  dreichor-controller {command.name}" in text, command.name
        assert "exit codes:\n  0" in text, command.name


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _status_file(tmp_path, rolled_back())
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["status", "--config", str(config), "--json"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", [["status", "--json"], ["status"], ["history", "--json"]])
def test_a_reader_gone_before_the_final_flush_ends_the_command_quietly(tmp_path: Path, command: list[str]) -> None:
    """The output fits the buffer, so the only write is the flush at the end: it meets the closed pipe.

    ``PYTHONUNBUFFERED`` would write at each print, where the command's own handler catches it: the
    flush at exit is what a host without it meets, so the child runs without it.
    """
    config = _status_file(tmp_path, rolled_back())
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (``| true``) is gone before the command writes a byte
    try:
        done = subprocess.run(
            [sys.executable, "-m", "controller", *command, "--config", str(config)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_status_all_is_one_line_per_environment_within_80_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _status_file(tmp_path, rolled_back())
    (tmp_path / "dev" / "deploy-agent" / "state").mkdir(parents=True)  # laid out, no pass yet
    monkeypatch.setenv("DREICHOR_ROOT", str(tmp_path))
    assert main(["status", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ENV", "SYNC", "HEALTH", "VERSION", "WHY"]
    assert lines[1].split()[:2] == ["dev", "-"] and lines[1].endswith("no pass has run yet")
    assert lines[2].split()[:4] == ["prod", "OutOfSync", "Healthy", "1.4.2"]
    assert all(len(line) <= 80 for line in lines), lines
    assert main(["status", "--all", "--check"]) == 3  # the worst of them: prod is out of sync
    capsys.readouterr()
    assert main(["status", "--all", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["environment"], e["sync"], e["version"]) for e in listed] == [
        ("dev", None, None),
        ("prod", "OutOfSync", "1.4.2"),
    ]
    assert main(["-e", "prod", "status", "--all"]) == 1  # one environment or all of them, not both


def test_history_lists_snapshots_and_the_audit_log_under_headers() -> None:
    first = Snapshot(
        id="20261205T120000000000Z-none",
        environment="prod",
        created_at=NOW,
        reason="create",
        revision=None,
        image=None,
        image_id=None,
        container=None,
        desired={},
    )
    tagged = first.model_copy(
        update={
            "id": f"20261205T130000000000Z-{OLD[:12]}",
            "revision": OLD,
            "image": "r.test/runtime:1.4.2@sha256:" + "1" * 64,
        }
    )
    lines = snapshot_lines([tagged, first])
    assert lines[1].split() == ["ID", "TAKEN", "VERSION", "REVISION", "HELD"]
    assert lines[2].split()[3:6] == ["1.4.2", OLD[:12], "prod's"]
    assert lines[3].split()[3:5] == ["-", "-"] and lines[3].endswith("nothing: no container ran yet")
    audit = audit_lines([{"at": NOW.isoformat(), "event": "suspended", "by": "alice", "reason": "maintenance"}])
    assert audit[1].split() == ["WHEN", "EVENT", "WHO", "REVISION", "WHY"]
    assert audit[2].split() == ["2026-12-05", "13:00:00", "suspended", "alice", "-", "maintenance"]


@pytest.mark.parametrize(
    "argv",
    [
        ["-e", "prod", "status", "-e", "dev"],
        ["--config", "a.yaml", "status", "--config", "b.yaml"],
        ["-eprod", "status", "--environment=dev"],
    ],
)
def test_the_environment_is_chosen_once(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2  # a usage error, never the last one silently winning
    assert "is given twice" in capsys.readouterr().err


def test_validate_with_e_reads_that_environments_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _status_file(tmp_path, rolled_back())
    config.write_text(config.read_text() + "image: {repository: registry.test/runtime}\n")
    (config.parent / ".env").write_text("DATABASE_URL=postgresql://u@db/dreichor_prod\n")
    (config.parent / ".env").chmod(0o600)
    manifest = tmp_path / "envs" / "prod.yaml"
    manifest.parent.mkdir()
    manifest.write_text(f"environment: prod\nimage: {IMAGE}\n")
    monkeypatch.setenv("DREICHOR_ROOT", str(tmp_path))
    assert main(["validate", str(manifest)]) == 3  # no -e: the default repository
    assert main(["-e", "prod", "validate", str(manifest)]) == 0, capsys.readouterr().err


def test_the_glance_fits_80_columns_and_names_the_last_decision() -> None:
    status = rolled_back()
    lines = status_lines(status, now=NOW + timedelta(minutes=5))
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert lines[0] == "prod   sync: OutOfSync   health: Healthy   version: 1.4.2"
    assert "last:        rolled_back [HealthGateFailed] (bbbbbbbbbbbb), 5 min ago: unhealthy" in lines
    settled = status.model_copy(
        update={
            "last_attempt": AttemptStatus(revision=OLD, result="unchanged", reason="matches", at=NOW),
            "quarantined": None,
        }
    )
    assert "last:        applied 1.4.2 (aaaaaaaaaaaa), 5 min ago" in status_lines(
        settled, now=NOW + timedelta(minutes=5)
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "coloured"),
    [
        (_Terminal(), {}, True),
        (io.StringIO(), {}, False),
        (_Terminal(), {"NO_COLOR": "1"}, False),
        (_Terminal(), {"TERM": "dumb"}, False),
    ],
)
def test_colour_only_on_a_terminal_without_no_color(
    stream: io.StringIO, env: dict[str, str], coloured: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wants_colour(stream) is coloured
    first = status_lines(rolled_back(), now=NOW, colour=wants_colour(stream))[0]
    assert ("\033[1;31mOutOfSync\033[0m" in first) is coloured
