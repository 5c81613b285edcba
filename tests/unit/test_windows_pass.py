"""Deploy windows (docs/design.md §18) through the real service: real git and signatures, a fake engine.

The controller's clock is passed in and moves only when a test moves it (or the health gate
sleeps), so a window opens exactly when the test says; ``tests/integration/test_windows.py``
repeats the main path over the real engine and the daemon.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller import compose
from controller.api import page
from controller.cli.main import main
from controller.cli.render import status_lines as _status_lines
from controller.daemon.scheduler import JOB_ID, OPENING_JOB_ID, Daemon
from controller.model.config import Config, parse_config
from controller.notifications import announcements as policy
from controller.records.audit import read_events
from controller.records.host_init import init_layout
from controller.records.status import Status
from controller.service import BreakGlass, EnvironmentService, PassOptions
from testbed import ManifestRepo, SshKey, make_ssh_key, manifest_text
from tests.unit.fake_engine import FakeEngine

REPOSITORY = "registry.test/dreichor/runtime"
GOOD_A = f"{REPOSITORY}@sha256:{'a' * 64}"
GOOD_B = f"{REPOSITORY}@sha256:{'b' * 64}"
SICK = f"{REPOSITORY}@sha256:{'c' * 64}"
BERLIN = ZoneInfo("Europe/Berlin")
EVENINGS = {"timezone": "Europe/Berlin", "allow": [{"cron": "0 18 * * 1-5", "duration": "3h"}]}


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(UTC)


@dataclass
class Host:
    """prod on one host with weekday evening windows; the clock is ``now`` and moves with the health gate's sleeps."""

    repo: ManifestRepo
    key: SshKey
    config: Config
    engine: FakeEngine
    now: datetime = field(default_factory=lambda: berlin("2026-12-07 18:30"))
    told: list[dict[str, object]] = field(default_factory=list)
    ticks: float = 0.0
    step: timedelta = timedelta(0)  # how far each reading of the clock moves it

    def clock(self) -> datetime:
        moment, self.now = self.now, self.now + self.step
        return moment

    def sleep(self, seconds: float) -> None:
        self.ticks += seconds
        self.now += timedelta(seconds=seconds)

    def service(self) -> EnvironmentService:
        service = compose.environment_service(
            self.config,
            engine=lambda: self.engine,
            clock=self.clock,
            sleep=self.sleep,
            monotonic=lambda: self.ticks,
        )
        service.audit_hooks.append(self.told.append)
        return service

    def sync(self, **options: object) -> str:
        return self.service().sync(PassOptions(**options)).result  # type: ignore[arg-type]

    def publish(self, image: str, message: str = "") -> str:
        self.repo.write("envs/prod.yaml", manifest_text("prod", image))
        sha = self.repo.commit(message or f"run {image[-6:]}", key=self.key)
        self.repo.push()
        return sha

    def status(self) -> Status:
        status = self.service().status()
        assert status is not None
        return status

    def image(self) -> str | None:
        running = self.engine.running()
        return running.image if running else None

    def events(self) -> list[str]:
        return [str(e["event"]) for e in read_events(self.config.paths.audit)]


def content(image: str) -> str:
    return hashlib.sha256(manifest_text("prod", image).encode()).hexdigest()


def make_host(tmp_path: Path, *, windows: dict[str, object] | None) -> Host:
    key = make_ssh_key(tmp_path, name="committer")
    repo = ManifestRepo(tmp_path / "manifests")
    init_layout(tmp_path / "opt", "prod")
    agent = tmp_path / "opt" / "prod" / "deploy-agent"
    (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
    (agent / ".env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    raw: dict[str, object] = {
        "environment": "prod",
        "root": str(tmp_path / "opt"),
        "source": {"url": repo.url, "interval": 60},
        "trust": {"allowed_signers": "trust/allowed_signers"},
        "image": {"repository": REPOSITORY},
        "health": {"timeout": 5, "stable": 1},
    }
    if windows is not None:
        raw["windows"] = windows
    engine = FakeEngine("prod", registry={GOOD_A, GOOD_B, SICK}, crashing=frozenset({SICK}))
    return Host(repo=repo, key=key, config=parse_config(raw, base=agent), engine=engine)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    """prod running image A, applied inside Monday evening's window; the clock then moves to Monday 14:48."""
    host = make_host(tmp_path, windows=EVENINGS)
    host.publish(GOOD_A)
    assert host.sync() == "applied" and host.image() == GOOD_A
    host.now = berlin("2026-12-07 14:48")
    yield host


def test_a_change_outside_the_window_waits_once_and_applies_when_it_opens(host: Host) -> None:
    host.publish(GOOD_B)
    for _ in range(3):
        assert host.sync() == "waiting" and host.image() == GOOD_A
    status = host.status()
    assert status.sync is not None and status.sync.state == "Waiting"
    assert status.sync.reason == "waiting for the deploy window: opens Mon 18:00 CET (in 3 h 12 min)"
    assert status.window is not None and not status.window.open
    assert (status.window.waiting, status.window.next_change) == (content(GOOD_B), berlin("2026-12-07 18:00"))
    assert status.quarantined is None and status.approvals is None
    assert host.events() == ["applied", "waiting_window"]  # told once, not once per poll
    told = [e for e in host.told if e["event"] == "waiting_window"]
    assert len(told) == 1 and told[0]["opens"] == "2026-12-07T17:00:00+00:00"
    host.now = berlin("2026-12-07 18:00")  # the first pass inside the window
    assert host.sync() == "applied" and host.image() == GOOD_B
    status = host.status()
    assert status.sync is not None and status.sync.state == "InSync"
    assert status.window is not None and status.window.open and status.window.waiting is None
    assert status.window.reason == "open until Mon 21:00 CET (in 3 h)"
    assert status.applied is not None and status.applied.break_glass is None


def test_plan_says_the_change_would_wait_and_until_when(host: Host) -> None:
    host.publish(GOOD_B)
    result = host.service().plan()
    assert (result.result, result.reason) == (
        "waiting",
        "waiting for the deploy window: opens Mon 18:00 CET (in 3 h 12 min)",
    )
    assert result.plan is not None and result.plan.action == "replace"
    assert host.events() == ["applied"] and host.image() == GOOD_A


def test_drift_is_repaired_inside_a_freeze(host: Host) -> None:
    running = host.engine.running()
    assert running is not None
    host.engine.containers[running.id] = replace(running, status="exited")  # someone stopped the runtime
    assert host.sync() == "applied" and host.image() == GOOD_A
    assert host.events()[-1] in ("applied", "drift_repaired")
    assert host.status().sync.state == "InSync"  # type: ignore[union-attr]


def test_a_removed_runtime_is_recreated_inside_a_freeze(host: Host) -> None:
    host.engine.containers.clear()
    assert host.sync() == "applied" and host.image() == GOOD_A


def test_a_sick_change_is_rolled_back_although_the_window_closed_meanwhile(host: Host) -> None:
    host.publish(SICK)
    host.now, host.step = berlin("2026-12-07 20:59:59"), timedelta(seconds=1)  # each look at the clock: 1 s on
    assert host.sync() == "rolled_back" and host.image() == GOOD_A
    assert host.now > berlin("2026-12-07 21:00")  # the window closed while the change was applied and judged
    assert host.events()[-1] == "rolled_back"


def test_break_glass_applies_now_and_says_who_and_why(host: Host) -> None:
    host.publish(GOOD_B)
    assert host.sync() == "waiting"
    glass = BreakGlass(by="alice", reason="fix the order router before the open")
    assert host.sync(break_glass=glass) == "applied" and host.image() == GOOD_B
    status = host.status()
    assert status.applied is not None and status.applied.break_glass == glass
    assert status.window is not None and status.window.waiting is None
    applied = [e for e in host.told if e["event"] == "applied"][-1]
    assert applied["break_glass"] == {"by": "alice", "reason": "fix the order router before the open"}
    assert read_events(host.config.paths.audit)[-1]["break_glass"]["by"] == "alice"


def test_break_glass_inside_the_window_records_nothing(host: Host) -> None:
    host.now = berlin("2026-12-07 19:00")
    host.publish(GOOD_B)
    assert host.sync(break_glass=BreakGlass(by="alice", reason="no need")) == "applied"
    assert host.status().applied.break_glass is None  # type: ignore[union-attr]


def test_break_glass_waives_no_signature(host: Host) -> None:
    host.repo.write("envs/prod.yaml", manifest_text("prod", GOOD_B))
    host.repo.commit("unsigned", key=None)
    host.repo.push()
    assert host.sync(break_glass=BreakGlass(by="alice", reason="hurry")) == "refused"
    assert host.image() == GOOD_A


def test_a_failed_pass_while_waiting_keeps_the_wait_and_tells_it_once(host: Host) -> None:
    host.publish(GOOD_B)
    assert host.sync() == "waiting"
    host.engine.unavailable = True
    assert host.sync() == "failed"
    status = host.status()
    assert status.sync is not None and status.sync.state == "Waiting"
    host.engine.unavailable = False
    assert host.sync() == "waiting"
    assert host.events() == ["applied", "waiting_window"]


def test_a_revert_to_the_running_content_ends_the_wait(host: Host) -> None:
    host.publish(GOOD_B)
    assert host.sync() == "waiting"
    host.publish(GOOD_A, "revert")
    assert host.sync() == "unchanged"
    status = host.status()
    assert status.sync is not None and status.sync.state == "InSync"
    assert status.window is not None and status.window.waiting is None


def test_a_freeze_wins_over_an_allow_window(tmp_path: Path) -> None:
    year_end = {**EVENINGS, "deny": [{"cron": "0 0 20 12 *", "duration": "14d"}]}
    host = make_host(tmp_path, windows=year_end)
    host.now = berlin("2026-12-21 18:30")  # a weekday evening inside the freeze
    host.publish(GOOD_A)
    assert host.sync() == "waiting" and host.image() is None  # even the first deploy is a change
    assert host.status().sync.reason == (  # type: ignore[union-attr]
        "waiting for the deploy window: opens Mon 4 Jan 2027 18:00 CET (in 13 d 23 h)"
    )


def test_a_host_without_windows_applies_at_any_time_and_shows_no_window(tmp_path: Path) -> None:
    host = make_host(tmp_path, windows=None)
    host.now = berlin("2026-12-12 03:00")  # a Saturday night
    host.publish(GOOD_A)
    assert host.sync() == "applied" and host.image() == GOOD_A
    assert host.status().window is None


def test_the_daemon_schedules_a_pass_at_the_opening_and_shows_the_window_as_a_metric(host: Host) -> None:
    path = host.config.paths.config
    path.write_text(
        f"environment: prod\nroot: {host.config.root}\nsource:\n  url: {host.repo.url}\n"
        "trust:\n  allowed_signers: trust/allowed_signers\nimage:\n  repository: registry.test/dreichor/runtime\n"
        "windows:\n  timezone: Europe/Berlin\n  allow: [{cron: '0 18 * * 1-5', duration: 3h}]\n"
    )
    daemon = Daemon(path)
    daemon.service = host.service()
    daemon.scheduler.start(paused=True)
    try:
        daemon.scheduler.add_job(daemon.tick, daemon._trigger(), id=JOB_ID)
        host.publish(GOOD_B)
        assert daemon.tick().result == "waiting"
        opening = daemon.scheduler.get_job(OPENING_JOB_ID)
        assert opening is not None and opening.next_run_time == berlin("2026-12-07 18:00")
        assert b'dreichor_window_open{environment="prod"} 0.0' in daemon.metrics.exposition()
        host.now = berlin("2026-12-07 18:00")
        assert daemon.tick().result == "applied" and host.image() == GOOD_B
        assert b'dreichor_window_open{environment="prod"} 1.0' in daemon.metrics.exposition()
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_break_glass_needs_a_reason(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--config", str(host.config.paths.config), "--break-glass"]) == 1
    assert "--break-glass needs --reason TEXT" in capsys.readouterr().err


def test_status_shows_the_window_and_who_broke_it(host: Host) -> None:
    host.publish(GOOD_B)
    assert host.sync() == "waiting"
    lines = _status_lines(host.status(), now=host.now)
    assert "why:         waiting for the deploy window: opens Mon 18:00 CET (in 3 h 12 min)" in lines
    assert "window:      closed, opens Mon 18:00 CET (in 3 h 12 min)" in lines
    assert host.sync(break_glass=BreakGlass(by="alice", reason="hotfix")) == "applied"
    lines = _status_lines(host.status(), now=host.now)
    assert "break-glass: by alice: hotfix" in lines


def test_the_page_shows_the_window_and_who_broke_it(host: Host) -> None:
    host.publish(GOOD_B)
    assert host.sync() == "waiting"
    waiting = page.render_page(host.status(), snapshots=[], events=[], chain=None, plan=None, now=host.now)[0].decode()
    assert "waiting for the deploy window: opens Mon 18:00 CET (in 3 h 12 min)" in waiting
    assert "Closed</span> opens Mon 18:00 CET (in 3 h 12 min)" in waiting and "A change waits for it" in waiting
    assert host.sync(break_glass=BreakGlass(by="alice", reason="<b>hotfix</b>")) == "applied"
    shown = page.render_page(host.status(), snapshots=[], events=[], chain=None, plan=None, now=host.now)[0].decode()
    assert "Window broken</span> by <strong>alice</strong>: &lt;b&gt;hotfix&lt;/b&gt;" in shown  # escaped


def test_the_notifications_tell_the_wait_once_and_who_broke_the_glass(host: Host) -> None:
    host.publish(GOOD_B)
    for _ in range(2):
        assert host.sync() == "waiting"
    assert host.sync(break_glass=BreakGlass(by="alice", reason="hotfix")) == "applied"
    told = [policy.decision_from_event("prod", e) for e in host.told if e["event"] in ("waiting_window", "applied")]
    messages = [policy.compose(d) for d in told if d is not None]
    assert [m.title for m in messages][-2:] == [
        f"prod: {_sha(host)} waits for the deploy window",
        f"prod: applied {_sha(host)}",
    ]
    assert "Break-glass (the deploy window was closed): by alice: hotfix" in messages[-1].body
    assert "Reason: waiting for the deploy window: opens Mon 18:00 CET" in messages[-2].body


def _sha(host: Host) -> str:
    return host.repo.head()[:7]
