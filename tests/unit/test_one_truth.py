"""The state table of docs/design.md §16, one row per test, through the real command line.

Each test reaches a state as a person would (push, sync, suspend), then asks every channel a
script or a person would: ``sync``'s exit code, ``plan --exit-code``, ``status --check``,
``sync.state`` and the audit log — from the pass that made the decision and from the passes after.
Real git and real ``ssh-keygen`` signatures; the engine is the in-memory fake (the same rows run
on the real engine in ``tests/integration/test_one_truth_engine.py``).  Every "how to clear it" a
refusal gives is followed here, and the environment converges.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import controller
from controller.model.containers import ContainerState
from controller.records.status import Status, read_watermark, write_status
from testbed import SshKey, make_ssh_key, manifest_text
from tests.unit.cli_host import GOOD, LATE, SICK, Crash, Host
from tests.unit.fake_engine import FakeEngine


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    return make_ssh_key(tmp_path_factory.mktemp("keys"), name="alice")


@pytest.fixture
def host(tmp_path: Path, key: SshKey) -> Iterator[Host]:
    host = Host(tmp_path, key)
    host.publish(GOOD[0])
    code, out = host.cli("sync")
    assert code == 0, out
    yield host


def events(host: Host) -> list[str]:
    return [e["event"] for e in host.events()]


def channels(host: Host) -> tuple[int, int, int, str]:
    """``sync``, then ``plan --exit-code``, ``status --check`` and ``sync.state`` as they stand after it."""
    sync, _ = host.cli("sync")
    plan, _ = host.cli("plan", "--exit-code")
    check, _ = host.cli("status", "--check")
    return sync, plan, check, host.status()["sync"]["state"]


def test_the_heads_content_runs_after_a_commit_that_leaves_it_as_it_is(host: Host) -> None:
    applied = host.status()["applied"]
    head = host.touch_elsewhere(1)  # a dev bump: prod's content is unchanged
    assert channels(host) == (0, 0, 0, "InSync")
    status = host.status()
    assert events(host) == ["applied"]  # no applied event: nothing was applied
    assert status["applied"]["revision"] == applied["revision"]  # still the change that made the container
    assert status["applied"]["image_signer"] == applied["image_signer"] == "cosign:release"
    assert status["sync"]["revision"] == head
    assert read_watermark(host.config.paths.watermark) == head  # the guard advances


def test_a_change_applied_by_this_pass(host: Host) -> None:
    host.publish(GOOD[1])
    assert host.cli("plan", "--exit-code")[0] == 2  # a change would apply
    assert channels(host) == (0, 0, 0, "InSync")
    assert events(host) == ["applied", "applied"]
    assert host.engine.running() is not None and host.engine.running().image == GOOD[1]  # type: ignore[union-attr]


def test_refused_by_this_pass_and_held_since(host: Host) -> None:
    host.publish(GOOD[1], signed=False)
    assert channels(host) == (3, 3, 3, "OutOfSync")
    assert channels(host) == (3, 3, 3, "OutOfSync")  # held: every pass says so
    code, out = host.cli("sync")
    assert (code, out.split(":")[0]) == (3, "held")
    assert events(host) == ["applied", "refused"]  # told once


def test_rolled_back_by_this_pass_then_held_since(host: Host) -> None:
    host.publish(SICK)
    sync, _ = host.cli("sync")
    assert sync == 4
    assert host.cli("status", "--check")[0] == 3 and host.status()["sync"]["state"] == "OutOfSync"
    assert channels(host) == (3, 3, 3, "OutOfSync")
    assert events(host) == ["applied", "rolled_back"]
    assert host.engine.running().image == GOOD[0]  # type: ignore[union-attr]


def test_a_retried_refusal_answers_the_same_from_every_pass(host: Host) -> None:
    host.unsigned_images.add(LATE)
    host.publish(LATE)
    assert channels(host) == (3, 3, 3, "OutOfSync")
    assert channels(host) == (3, 3, 3, "OutOfSync")
    assert events(host) == ["applied", "refused"]
    host.unsigned_images.clear()  # the signature is pushed: the same head deploys, no --force
    assert channels(host) == (0, 0, 0, "InSync")
    assert host.engine.running().image == LATE  # type: ignore[union-attr]


def test_suspended_answers_3_and_plan_says_what_resume_would_do(host: Host) -> None:
    assert host.cli("suspend", "--reason", "exchange maintenance")[0] == 0
    host.publish(GOOD[1])
    assert channels(host) == (3, 2, 3, "Suspended")
    status = host.status()
    assert status["source"]["head"] == host.repo.head() and not status["source"]["stale"]  # still fetched
    code, out = host.cli("suspend", "--reason", "again")
    assert code == 0 and "already suspended by" in out and "exchange maintenance" in out
    assert host.cli("resume")[0] == 0
    code, out = host.cli("resume")
    assert code == 0 and out.startswith("not suspended")
    assert events(host) == ["applied", "suspended", "resumed"]  # the second suspend and resume record nothing
    suspended = host.events()[1]
    assert suspended["reason"] == "exchange maintenance" and suspended["by"]
    assert channels(host) == (0, 0, 0, "InSync")


# -- repair while the head is held ---------------------------------------------------------------


@pytest.mark.parametrize("hold", ["unsigned", "sick", "image not yet signed"])
@pytest.mark.parametrize("damage", ["stop", "remove"])
def test_a_held_head_never_switches_self_repair_off(host: Host, hold: str, damage: str) -> None:
    if hold == "unsigned":
        host.publish(GOOD[1], signed=False)
    elif hold == "sick":
        host.publish(SICK)
    else:
        host.unsigned_images.add(LATE)
        host.publish(LATE)
    host.cli("sync")
    for _ in range(2):  # the pass that decided, and the passes after
        runtime = host.engine.current()
        assert runtime is not None
        host.engine.stop(runtime.id) if damage == "stop" else host.engine.remove(runtime.id)
        code, _ = host.cli("sync")
        assert code == 3
        running = host.engine.running()
        assert running is not None and running.image == GOOD[0]
        assert host.status()["health"] == "Healthy" and host.status()["sync"]["state"] == "OutOfSync"
    assert events(host).count("drift_repaired") == 2


# -- the advice in a refusal works when followed ------------------------------------------------


def test_an_unsigned_commit_on_main_says_it_must_leave_main_and_that_works(host: Host) -> None:
    applied = host.status()["applied"]["revision"]
    host.publish(GOOD[1], signed=False)
    host.publish(GOOD[2])  # a signed commit on top does not cover it
    assert host.cli("sync")[0] == 3
    reason = host.status()["sync"]["reason"]
    assert "take it off the branch" in reason and f"reset to {applied[:12]}, the applied revision" in reason
    assert "sync --force" not in reason  # it would not help
    assert host.cli("sync", "--force")[0] == 3
    host.repo.git("reset", "-q", "--hard", applied)  # what the reason says
    host.repo.write("envs/prod.yaml", manifest_text("prod", GOOD[2]))
    host.repo.commit("run dddddd again, signed", key=host.key)
    host.repo.push(force=True)
    assert channels(host) == (0, 0, 0, "InSync")
    assert host.engine.running().image == GOOD[2]  # type: ignore[union-attr]


def test_an_unsigned_commit_clears_with_trust_mode_head_as_the_reason_offers(host: Host) -> None:
    host.publish(GOOD[1], signed=False)
    host.publish(GOOD[2])
    assert host.cli("sync")[0] == 3
    assert "or set trust.mode: head" in host.status()["sync"]["reason"]
    trust = host.config.trust.model_copy(update={"mode": "head"})  # the operator's edit of controller.yaml
    host.config = host.config.model_copy(update={"trust": trust})
    assert channels(host) == (0, 0, 0, "InSync")
    assert host.engine.running().image == GOOD[2]  # type: ignore[union-attr]


def test_a_rolled_back_change_offers_sync_force_and_it_tries_again(host: Host) -> None:
    host.publish(SICK)
    assert host.cli("sync")[0] == 4
    assert "'sync --force'" in host.status()["sync"]["reason"]
    host.engine.crashing = frozenset()  # the cause was outside the image (a database that was down)
    assert host.cli("sync", "--force")[0] == 0
    assert host.engine.running().image == SICK  # type: ignore[union-attr]


# -- status --check and the caller's own limits ------------------------------------------------


def test_status_check_says_unknown_when_the_status_is_older_than_three_intervals(host: Host) -> None:
    status = Status.model_validate(host.status())
    old = datetime.now(UTC) - timedelta(seconds=3 * 60 + 61)
    write_status(host.config.paths.status, status.model_copy(update={"updated_at": old}))
    code, out = host.cli("status", "--check")
    assert code == 4 and "unknown: no controller has written the status for 4 min" in out


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to run as another user")
@pytest.mark.parametrize("command", [("status", "--check"), ("status",), ("sync",), ("plan", "--exit-code")])
def test_a_state_file_the_caller_may_not_read_is_their_limit_not_the_hosts_damage(
    key: SshKey, command: tuple[str, ...]
) -> None:
    base = Path(tempfile.mkdtemp(prefix="dreichor-perm-"))  # outside pytest's private tmp, so others may enter
    try:
        host = Host(base, key)
        host.publish(GOOD[0])
        assert host.cli("sync")[0] == 0
        host.config_file.write_text(_config_yaml(host))
        for folder in (base, *base.rglob("*")):
            if folder.is_dir():
                folder.chmod(0o755)
        host.config.paths.status.chmod(0o600)  # the controller's own; the caller is someone else
        with _enterable_by_others(Path(sys.executable), Path(controller.__file__), base):
            run = _run_as_nobody(command, host.config_file)
        assert run.returncode == 1, run.stderr
        assert "permission denied: run as root or the controller's user" in run.stderr
        assert "keeps it aside" not in run.stderr
        assert not list(host.config.paths.status.parent.glob("status.json.damaged-*"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _enterable_by_others(*paths: Path) -> Iterator[None]:
    """Let another user reach the interpreter and the package: a checkout in a private folder (mktemp -d)
    is not enterable by them, which would fail the command before it reads any state file."""
    changed: list[tuple[Path, int]] = []
    for path in paths:
        for folder in path.parents:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                changed.append((folder, mode))
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(stat.S_IMODE(mode))


def _run_as_nobody(command: tuple[str, ...], config_file: Path) -> subprocess.CompletedProcess[str]:
    """The command line run as user 65534, a caller who is not the controller's user."""
    return subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "controller",
            *command,
            "--config",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": "/"},
    )


def _config_yaml(host: Host) -> str:
    config = host.config
    return (
        f"environment: prod\nroot: {config.root}\nsource: {{url: '{config.source.url}', interval: 60}}\n"
        "trust: {allowed_signers: trust/allowed_signers}\n"
        f"image: {{repository: {config.image.repository}}}\n"
    )


# -- break-glass rollback ------------------------------------------------------------------------


def test_rollback_records_who_and_why_and_keeps_the_snapshots_tag(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    tagged = [image.replace("@", f":1.4.{n}@") for n, image in enumerate(GOOD[1:3], start=2)]
    for image in tagged:
        host.publish(image)
        assert host.cli("sync")[0] == 0
    assert host.status()["applied"]["tag"] == "1.4.3"
    monkeypatch.setenv("SUDO_USER", "alice")
    code, out = host.cli("rollback", "--reason", "fills lost after 1.4.3")
    assert code == 0, out
    status = host.status()
    assert status["applied"]["tag"] == "1.4.2" and status["applied"]["image"] == GOOD[1]
    assert status["suspension"]["by"] == "alice" and "fills lost after 1.4.3" in status["suspension"]["reason"]
    rollback = next(e for e in host.events() if e["event"] == "rollback")
    assert (rollback["by"], rollback["reason"]) == ("alice", "fills lost after 1.4.3")
    assert channels(host)[0] == 3  # suspended: the rollback stays until 'resume'
    assert host.engine.running().image == GOOD[1]  # type: ignore[union-attr]


# -- an interrupted swap ------------------------------------------------------------------------


def test_a_swap_a_crash_interrupted_is_visible_in_status_and_plan(host: Host) -> None:
    host.publish(GOOD[1])
    host.crash_at = "stop"
    with pytest.raises(Crash):
        host.cli("sync")
    code, out = host.cli("plan", "--exit-code")
    assert code == 2 and "interrupted" in out and "finished or undone first" in out
    code, out = host.cli("status")
    assert "interrupted by a crash: the next pass finishes or undoes it" in out
    assert host.cli("sync")[0] == 0
    assert host.engine.names_present() == {"dreichor-runtime-prod"} and host.engine.running() is not None
    assert channels(host) == (0, 0, 0, "InSync")
    assert "interrupted" not in host.cli("status")[1]


def test_ctrl_c_during_sync_says_the_swap_is_being_finished_and_exits_with_the_passs_code(host: Host) -> None:
    host.publish(GOOD[1])
    host.on_step["stop"] = lambda: (os.kill(os.getpid(), signal.SIGINT), os.kill(os.getpid(), signal.SIGINT))
    code, out = host.cli("sync")
    assert code == 0
    assert "interrupt: the pass in flight is being finished" in out
    assert "interrupt again: this changes nothing" in out
    assert host.engine.running().image == GOOD[1]  # type: ignore[union-attr]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again after the pass


# -- a gated rollback ----------------------------------------------------------------------------


class SlowToHeal(FakeEngine):
    """Images with a HEALTHCHECK: a started container is ``starting`` for a few looks, then healthy
    (or, with ``never_healthy``, unhealthy: the restored release is sick too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looks: dict[str, int] = {}
        self.never_healthy = False

    def image_has_healthcheck(self, image: str) -> bool:
        return True

    def start(self, ref: str) -> None:
        super().start(ref)
        state = self._get(ref)
        self.containers[state.id] = replace(state, health="starting" if state.running else None)
        self.looks[state.id] = 0

    def inspect(self, ref: str) -> ContainerState | None:
        state = super().inspect(ref)
        if state is None or state.health != "starting":
            return state
        self.looks[state.id] = self.looks.get(state.id, 0) + 1
        if self.looks[state.id] >= 3:
            state = replace(state, health="unhealthy" if self.never_healthy else "healthy")
            self.containers[state.id] = state
        return state


@pytest.mark.parametrize("heals", [True, False])
def test_a_rollback_returns_once_the_restored_container_is_healthy_or_says_it_is_not(
    tmp_path: Path, key: SshKey, heals: bool
) -> None:
    host = Host(tmp_path, key)
    host.engine = SlowToHeal("prod", registry={*GOOD, SICK}, crashing=frozenset({SICK}))
    host.publish(GOOD[0])
    assert host.cli("sync")[0] == 0
    host.publish(SICK)
    host.engine.never_healthy = not heals
    code, out = host.cli("sync")
    assert code == 4
    status = host.status()
    if heals:
        assert status["health"] == "Healthy" and status["container"]["health"] == "healthy"
        assert host.cli("status", "--check")[0] == 3  # out of sync, healthy: not 4
        assert "not healthy either" not in out
    else:
        assert "the restored container is not healthy either (running, health unhealthy)" in out
        assert status["health"] == "Unhealthy" and host.cli("status", "--check")[0] == 4
        rolled_back = next(e for e in host.events() if e["event"] == "rolled_back")
        assert "not healthy either" in rolled_back["reason"]
