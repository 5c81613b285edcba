"""Deploy windows and freezes (docs/design.md §18) over the real engine.

Real dockerd, registry, git and signatures; the controller's own command line and daemon.  The
windows are real cron windows on the wall clock of Europe/Berlin, placed a few seconds from now:
cron counts whole minutes, so a window that opens "soon" opens at the next minute boundary.  The
arithmetic itself (daylight saving, month ends, overlaps) is tested as a table in
``tests/unit/test_windows.py``; the pass's verdicts over a fake engine in ``tests/unit/test_windows_pass.py``.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from controller.cli import main
from testbed import ControllerHost, wait_for

WAITING, ROLLED_BACK = 5, 4
BERLIN = ZoneInfo("Europe/Berlin")


def configure(host: ControllerHost, windows: str, *, interval: int | None = None) -> None:
    """Add ``windows`` (YAML flow text) to prod's config; ``interval``: the poll interval instead of 1 s."""
    path = host.configs["prod"]
    text = path.read_text()
    if interval is not None:
        text = text.replace("interval: 1,", f"interval: {interval},")
    path.write_text(text + f"windows: {windows}\n")


def cron_at(moment: datetime) -> str:
    """The cron expression of ``moment``'s minute on Berlin's wall clock, every day."""
    local = moment.astimezone(BERLIN)
    return f"{local.minute} {local.hour} * * *"


def next_minute(*, at_least: float) -> datetime:
    """The next whole minute at least ``at_least`` seconds away."""
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return start if (start - now).total_seconds() >= at_least else start + timedelta(minutes=1)


def container_id(host: ControllerHost) -> str:
    return str(host.running("prod")["Id"])


@pytest.fixture
def host(controller_host: ControllerHost) -> ControllerHost:
    """prod running healthy-a, applied before any window was configured."""
    assert controller_host.sync("prod") == 0
    return controller_host


def test_a_change_in_a_closed_window_waits_and_the_daemon_applies_it_when_the_window_opens(
    host: ControllerHost, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    opens = next_minute(at_least=15)
    configure(host, f"{{timezone: Europe/Berlin, allow: [{{cron: '{cron_at(opens)}', duration: 10m}}]}}", interval=600)
    before = container_id(host)
    host.publish("b, outside the window", prod=images["healthy-b"])
    capsys.readouterr()
    assert host.sync("prod") == WAITING
    said = capsys.readouterr().out
    assert said.startswith("waiting: waiting for the deploy window: opens ") and " (in " in said
    assert container_id(host) == before and host.image("prod") == images["healthy-a"]  # untouched
    assert main(["plan", "--config", str(host.configs["prod"]), "--exit-code"]) == WAITING
    assert "would wait: waiting for the deploy window" in capsys.readouterr().out
    assert main(["status", "--config", str(host.configs["prod"]), "--check"]) == 3
    assert host.status("prod").window is not None and host.status("prod").window.next_change == opens  # type: ignore[union-attr]
    daemon = host.start_daemon("prod")  # polls every 600 s: only the pass at the opening can apply it
    try:
        wait_for(lambda: host.status("prod").sync.state == "InSync", timeout=120, what="the change applied")  # type: ignore[union-attr]
        status = host.status("prod")
        assert host.image("prod") == images["healthy-b"] and status.applied is not None
        started = status.applied.applied_at - opens  # the pass that applied it began at the opening
        assert timedelta(0) <= started < timedelta(seconds=5), started  # its own pass, not the next poll (600 s)
        assert status.window is not None and status.window.open and status.window.waiting is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    events = [e["event"] for e in host.audit("prod")]
    assert events[-2:] == ["waiting_window", "applied"] and events.count("waiting_window") == 1
    with capsys.disabled():
        print("\n" + "\n".join(f"  {line}" for line in _status_text(host).splitlines()))


def _status_text(host: ControllerHost) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["status", "--config", str(host.configs["prod"])])
    return out.getvalue()


def test_a_sick_change_in_an_open_window_is_rolled_back_although_the_window_closes(
    host: ControllerHost, images: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    if now.second > 50:  # the window below must open this minute and close a few seconds from now
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    closes = now + timedelta(seconds=3)
    length = int((closes - now.replace(second=0, microsecond=0)).total_seconds())
    configure(host, f"{{timezone: Europe/Berlin, allow: [{{cron: '{cron_at(now)}', duration: {length}s}}]}}")
    host.publish("unhealthy, at the end of the window", prod=images["unhealthy"])
    assert host.sync("prod") == ROLLED_BACK
    assert datetime.now(UTC) > closes  # the window closed while the change was judged
    assert host.image("prod") == images["healthy-a"]
    assert host.status("prod").health == "Healthy"
    assert [e["event"] for e in host.audit("prod")][-1] == "rolled_back"


def test_break_glass_applies_now_and_records_who_and_why(
    host: ControllerHost, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    configure(host, "{timezone: Europe/Berlin, deny: [{cron: '0 0 * * *', duration: 2d}]}")  # a freeze for good
    host.publish("b, in a freeze", prod=images["healthy-b"])
    assert host.sync("prod") == WAITING and host.image("prod") == images["healthy-a"]
    assert host.sync("prod", "--break-glass") == 1  # who and why, or nothing
    assert host.sync("prod", "--break-glass", "--reason", "the order router leaks") == 0
    assert host.image("prod") == images["healthy-b"]
    who = os.environ.get("SUDO_USER") or getpass.getuser()
    applied = host.audit("prod")[-1]
    assert applied["event"] == "applied"
    assert applied["break_glass"] == {"by": who, "reason": "the order router leaks"}
    status = host.status("prod")
    assert status.applied is not None and status.applied.break_glass is not None
    assert (status.applied.break_glass.by, status.applied.break_glass.reason) == (who, "the order router leaks")
    capsys.readouterr()
    assert main(["status", "--config", str(host.configs["prod"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["applied"]["break_glass"]["by"] == who and shown["window"]["open"] is False


def test_drift_is_repaired_inside_a_freeze(host: ControllerHost, images: dict[str, str]) -> None:
    configure(host, "{timezone: Europe/Berlin, deny: [{cron: '0 0 * * *', duration: 2d}]}")
    host.engine.cli("stop", "dreichor-runtime-prod")
    assert host.sync("prod") == 0
    running = host.running("prod")
    assert running["State"]["Running"] and host.image("prod") == images["healthy-a"]  # type: ignore[index]
    assert [e["event"] for e in host.audit("prod")][-1] in ("drift_repaired", "applied")


def test_a_host_without_windows_writes_no_window(host: ControllerHost, images: dict[str, str]) -> None:
    host.publish("b", prod=images["healthy-b"])
    assert host.sync("prod") == 0 and host.image("prod") == images["healthy-b"]
    data = json.loads((host.root / "prod/deploy-agent/state/status.json").read_text())
    assert "window" not in data and "break_glass" not in data["applied"]
