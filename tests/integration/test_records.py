"""The controller's memory end to end: watermark, unreadable status, content quarantine, audit anchor,
bounded untrusted text, rollback to any snapshot, upgrades from the previous release.

Real dockerd, registry, git and ssh-keygen; the controller's own command line, as an operator runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from controller.cli import main
from controller.records.snapshots import list_snapshots
from controller.rollout.base import CRASH_HOOK
from testbed import ControllerHost as Host
from testbed import manifest_text, ssh_sign, with_signature

REPO_ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE = "e3b072e"  # 0.1.0: wrote status.json without a watermark or an audit anchor
LAST_FLAT_RELEASE = "590ce1b"  # the last release with every module flat in controller/
RELEASE_BEFORE_KEYLESS = "cd76640"  # the last release before keyless image signatures
FIRST_KEYLESS_RELEASE = "73b9bd7"  # hashed the image settings into the quarantine key
LAST_SINGLE_PASS_MODULE = "45269f2"  # the last release before reconcile/ and compose.py
RELEASES = REPO_ROOT / "tests" / "data" / "releases"  # each release's controller/, as it shipped (SOURCES.md)
TEARING_RELEASE = LAST_SINGLE_PASS_MODULE  # also the last release whose audit appends a full disk could tear


@pytest.fixture
def host(controller_host: Host) -> Host:
    """The test bed's controller host: dev and prod configured, nothing deployed yet."""
    return controller_host


def state(host: Host, env: str = "prod") -> Path:
    return host.root / env / "deploy-agent" / "state"


def cli(*args: str, host: Host, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main([args[0], "--config", str(host.configs["prod"]), *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def deploy_two(host: Host, images: dict[str, str]) -> tuple[str, str]:
    """C1 (image A) then C2 (image B) deployed; returns both commit ids."""
    first = host.repo.head()
    assert host.sync() == 0
    second = host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    return first, second


@pytest.mark.parametrize("lost", ["status", "status+watermark", "status+watermark+container"])
def test_losing_the_status_file_never_lets_an_older_signed_commit_in(
    host: Host, images: dict[str, str], lost: str
) -> None:
    first, _second = deploy_two(host, images)
    (state(host) / "status.json").unlink()
    if "watermark" in lost:
        (state(host) / "watermark").unlink()
    if "container" in lost:  # the last fallback: the audit log's newest applied event
        host.engine.cli("rm", "-f", "dreichor-runtime-prod")
    host.repo.git("reset", "-q", "--hard", first)
    host.repo.push(force=True)
    assert host.sync() == 3
    status = host.status()
    assert status.last_attempt is not None and "history rewritten" in status.last_attempt.reason
    if "container" in lost:
        assert host.engine.inspect("dreichor-runtime-prod") is None
    else:
        assert host.image() == images["healthy-b"]


def test_an_unreadable_status_file_stops_action_loudly_and_is_kept_aside(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.sync() == 0
    before = host.running()["Id"]
    host.publish("b", prod=images["healthy-b"])
    damaged = b'{"environment": "prod", "phase": "InSy'
    (state(host) / "status.json").write_bytes(damaged)
    code, out = cli("sync", host=host, capsys=capsys)
    assert code == 3 and "status.json" in out
    assert host.running()["Id"] == before and host.image() == images["healthy-a"]
    kept = sorted(state(host).glob("status.json.damaged*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    status = host.status()
    assert status.phase == "Degraded" and status.last_attempt is not None
    assert "status.json" in status.last_attempt.reason and "not valid JSON" in status.last_attempt.reason
    code, out = cli("status", host=host, capsys=capsys)
    assert code == 0 and kept[0].name in out and "Degraded" in out
    code, out = cli("plan", host=host, capsys=capsys)
    assert code == 3 and kept[0].name in out
    assert host.sync() == 3 and kept[0].read_bytes() == damaged  # stays stopped, the copy is never overwritten
    assert host.running()["Id"] == before
    kept[0].unlink()  # the operator's repair: look at the copy, then remove it
    assert host.sync() == 0 and host.image() == images["healthy-b"]


def rewrap_signature(raw: bytes, width: int = 60) -> bytes:
    """The same commit with the signature armor's base64 wrapped at another width: a new commit id."""
    headers, _sep, message = raw.partition(b"\n\n")
    lines = headers.split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"gpgsig "))
    end = next(i for i in range(start, len(lines)) if b"END SSH SIGNATURE" in lines[i])
    body = b"".join(line.strip() for line in lines[start + 1 : end])
    wrapped = [body[i : i + width] for i in range(0, len(body), width)]
    armor = [lines[start], *(b" " + w for w in wrapped), lines[end]]
    return b"\n".join(lines[:start] + armor + lines[end + 1 :]) + b"\n\n" + message


def test_a_rolled_back_change_stays_quarantined_under_any_commit_id(host: Host, images: dict[str, str]) -> None:
    assert host.sync() == 0
    good = host.running()
    bad = host.publish("broken", prod=images["exits"])
    assert host.sync() == 4
    after = host.running()
    twin = host.repo.store_commit(rewrap_signature(host.repo.raw_commit(bad)))
    assert twin != bad
    host.repo.push(force=True)
    events = len(host.audit())
    assert host.sync() == 3  # held: the twin is the same content under another commit id
    now = host.running()
    assert now["Id"] == good["Id"] == after["Id"]
    assert now["State"]["StartedAt"] == after["State"]["StartedAt"]  # type: ignore[index]
    assert len(host.audit()) == events
    assert host.status().phase == "Degraded"
    assert host.sync("prod", "--force") == 4  # --force lifts it once
    host.publish("fixed", prod=images["healthy-b"])  # a different change lifts it
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    assert host.status().phase == "InSync" and host.status().quarantined is None


@pytest.mark.parametrize("cut", ["last line", "everything"])
def test_cutting_the_audit_log_is_detected(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str], cut: str
) -> None:
    deploy_two(host, images)
    log = state(host) / "audit.jsonl"
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]) if cut == "last line" else b"")
    code, out = cli("history", "--verify", host=host, capsys=capsys)
    assert code == 3
    missing = 1 if cut == "last line" else 2
    assert f"{missing} event" in out and "BROKEN" in out


def test_attacker_text_is_bounded_and_harmless_everywhere(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.sync() == 0
    host.repo.write("envs/prod.yaml", manifest_text("prod", images["healthy-b"]))
    unsigned = host.repo.commit("namespace")
    payload = host.repo.raw_commit(unsigned)
    namespace = "\x1b]0;owned\x07\x1b[2J" + "N" * 100_000
    host.repo.store_commit(with_signature(payload, ssh_sign(host.key, payload, namespace=namespace)))
    host.repo.push()
    assert host.sync() == 3
    text = (state(host) / "status.json").read_text()
    attempt = host.status().last_attempt
    assert attempt is not None and "namespace" in attempt.reason
    assert len(attempt.reason) <= 300 and "\x1b" not in attempt.reason and len(text) < 10_000
    for line in (state(host) / "audit.jsonl").read_bytes().splitlines():
        assert len(line) < 2_000 and b"\\u001b" not in line
    code, out = cli("status", host=host, capsys=capsys)
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    host.repo.git("reset", "-q", "--hard", "HEAD~1")  # the bad commit dropped, a good one in its place
    host.repo.write("envs/prod.yaml", manifest_text("prod", images["healthy-b"]))
    host.repo.commit("good", key=host.key)
    host.repo.push(force=True)
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0


def test_a_long_audit_line_does_not_break_the_chain(host: Host, images: dict[str, str]) -> None:
    assert host.sync() == 0
    log = state(host) / "audit.jsonl"
    # A line longer than any tail window, as an older release could write it (a 100 kB reason).
    lines = log.read_bytes().splitlines()
    record = json.loads(lines[-1])
    record["reason"] = "x" * 100_000
    bloated = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    log.write_bytes(b"\n".join([*lines[:-1], bloated]) + b"\n")
    status = json.loads((state(host) / "status.json").read_text())
    status.pop("audit", None)  # as the previous release wrote it: no anchor
    (state(host) / "status.json").write_text(json.dumps(status))
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0
    assert main(["history", "--verify", "--config", str(host.configs["prod"])]) == 0


def test_rollback_to_a_snapshot_without_a_revision_then_passes_continue(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    host.engine.cli("run", "-d", "--init", "--name", "dreichor-runtime-prod", images["healthy-a"])
    assert host.sync("prod", "--adopt") == 0
    adopted = next(s for s in list_snapshots(state(host) / "snapshots") if s.container is not None)
    assert adopted.revision is None
    code, _out = cli("rollback", adopted.id, host=host, capsys=capsys)
    assert code == 0
    assert cli("resume", host=host, capsys=capsys)[0] == 0
    assert host.sync() == 0
    assert host.status().phase == "InSync"
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0 and host.image() == images["healthy-b"]


def run_previous_release(
    host: Host, tmp: Path, *args: str, release: str = PREVIOUS_RELEASE, extra_env: dict[str, str] | None = None
) -> int:
    """``dreichor-controller`` as an earlier release shipped it (its package, kept in ``tests/data/releases``)."""
    old = tmp / release
    if not old.exists():
        old.mkdir()
        with tarfile.open(RELEASES / f"{release}.tar.gz") as archive:
            archive.extractall(old, filter="data")
    env = {**os.environ, "PYTHONPATH": str(old), **(extra_env or {})}
    command = [sys.executable, "-m", "controller", *args, "--config", str(host.configs["prod"])]
    return subprocess.run(command, env=env, cwd=old, capture_output=True, check=False).returncode


def test_a_host_written_by_the_previous_release_keeps_working(
    host: Host, images: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = host.repo.head()
    assert run_previous_release(host, tmp_path, "sync") == 0
    host.publish("b", prod=images["healthy-b"])
    assert run_previous_release(host, tmp_path, "sync") == 0
    written = json.loads((state(host) / "status.json").read_text())
    assert "audit" not in written and not (state(host) / "watermark").exists()
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0
    assert host.sync() == 0  # the new release takes over: in sync, nothing redeployed
    status = host.status()
    assert status.phase == "InSync" and status.audit is not None and status.audit.events == 2
    assert (state(host) / "watermark").read_text().strip() == host.repo.head()
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0
    (state(host) / "status.json").unlink()
    host.repo.git("reset", "-q", "--hard", first)
    host.repo.push(force=True)
    assert host.sync() == 3 and host.image() == images["healthy-b"]


@pytest.mark.parametrize("release", [LAST_FLAT_RELEASE, LAST_SINGLE_PASS_MODULE])
def test_a_host_run_by_an_earlier_layout_upgrades_in_place(
    host: Host, images: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], release: str
) -> None:
    assert run_previous_release(host, tmp_path, "sync", release=release) == 0
    host.publish("b", prod=images["healthy-b"])
    assert run_previous_release(host, tmp_path, "sync", release=release) == 0
    running = host.running()["Id"]
    written = host.status()
    assert written.audit is not None and (state(host) / "watermark").read_text().strip() == host.repo.head()
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0
    assert host.sync() == 0 and host.running()["Id"] == running  # taken over: nothing redeployed
    assert host.status().audit == written.audit  # a no-change pass appends nothing
    snapshot = list_snapshots(state(host) / "snapshots")[0]  # written by the last release before b
    assert cli("rollback", snapshot.id, host=host, capsys=capsys)[0] == 0
    assert host.image() == images["healthy-a"] and host.status().suspended
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0


def test_a_host_the_tearing_release_left_mid_swap_with_a_torn_audit_line_upgrades_in_place(
    host: Host, images: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_previous_release(host, tmp_path, "sync", release=TEARING_RELEASE) == 0
    host.publish("b", prod=images["healthy-b"])
    killed = run_previous_release(host, tmp_path, "sync", release=TEARING_RELEASE, extra_env={CRASH_HOOK: "start"})
    assert killed == -signal.SIGKILL
    journal = json.loads((state(host) / "inflight.json").read_text())
    assert "revision" not in journal and "gate_deadline" not in journal  # that release's journal
    with (state(host) / "audit.jsonl").open("ab") as log:  # what its short write on a full disk left
        log.write(b'{"at":"2026-12-08T03:00:00+00:00","event":"appl')
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 3
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    assert [e["event"] for e in host.audit()][-3:] == ["torn_line_cut", "recovered", "applied"]
    assert cli("history", "--verify", host=host, capsys=capsys)[0] == 0
    assert not (state(host) / "inflight.json").exists()


@pytest.mark.parametrize("release", [RELEASE_BEFORE_KEYLESS, FIRST_KEYLESS_RELEASE, LAST_SINGLE_PASS_MODULE])
def test_a_release_an_earlier_release_rolled_back_stays_quarantined_after_the_upgrade(
    host: Host, images: dict[str, str], tmp_path: Path, release: str
) -> None:
    assert run_previous_release(host, tmp_path, "sync", release=release) == 0
    host.publish("broken", prod=images["exits"])
    assert run_previous_release(host, tmp_path, "sync", release=release) == 4  # rolled back
    running, events = host.running(), len(host.audit())
    assert host.status().quarantined is not None
    assert host.sync() == 3  # held: the new release keeps the quarantine, the broken release is not tried again
    assert host.running()["Id"] == running["Id"] and host.image() == images["healthy-a"]
    assert len(host.audit()) == events
