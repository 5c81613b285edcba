"""A soak of an operator's bad day: pushes, kills at random moments, engine restarts, a state folder that fails.

``soak`` runs one controller daemon for a bounded time against a private engine
and registry, with its state folder on a tmpfs of its own, and keeps doing what
a bad day does: signed pushes (healthy, sick, content-neutral), SIGKILLs of
the daemon a random 0-4 s after a push (sometimes its children too, as
systemd would), restarts of the Docker Engine, and the state folder made
read-only or full for a few seconds.  Then the faults stop, one last healthy
change is pushed, and the invariants are read from ``docker events``, from
polls of the engine and of the status file, and from the files:

- never more than one runtime container running (events and polls);
- the final state right: one container, on the last change, ``InSync``, no
  ``-next`` or ``-previous`` left, no journal;
- the audit chain intact up to the status file's anchor, every snapshot readable;
- the status file valid JSON at every sample;
- no traceback in any daemon's output.

``bench/chaos`` runs it from the command line; the engine tier runs a short one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.records.audit import Anchor, verify_chain
from controller.records.snapshots import list_snapshots
from testbed import ControllerHost, LocalRegistry, ManifestRepo, PrivateDocker, SshKey, peak_running, wait_for
from testbed.disk import Hog, set_read_only, small_tmpfs

RUNTIME = "dreichor-runtime-prod"
POLL = 0.1  # seconds between samples of the engine and of the status file


@dataclass
class Figures:
    """What a soak did and saw; ``violations`` is empty when every invariant held."""

    seconds: float = 0.0
    pushes: dict[str, int] = field(default_factory=lambda: {"healthy": 0, "sick": 0, "neutral": 0})
    kills: int = 0
    kills_with_children: int = 0
    engine_restarts: int = 0
    disk_faults: dict[str, int] = field(default_factory=lambda: {"read-only": 0, "full": 0})
    engine_events: int = 0
    engine_polls: int = 0
    status_samples: int = 0
    audit_events: int = 0
    snapshots: int = 0
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data."""
        return dict(self.__dict__)


class Sampler(threading.Thread):
    """Polls the engine's running runtime containers and the status file every ``POLL`` seconds."""

    def __init__(self, engine: PrivateDocker, status: Path, figures: Figures) -> None:
        super().__init__(daemon=True)
        self.engine, self.status, self.figures = engine, status, figures
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(POLL):
            self._status()
            self._engine()

    def _status(self) -> None:
        try:
            raw = self.status.read_bytes()
        except FileNotFoundError:
            return
        self.figures.status_samples += 1
        try:
            json.loads(raw)
        except ValueError:
            self.figures.violations.append(f"the status file was not valid JSON: {raw[:80]!r}")

    def _engine(self) -> None:
        probe = subprocess.run(
            self.engine.cli_args("ps", "--format", "{{.Names}}"), capture_output=True, text=True, check=False
        )
        if probe.returncode != 0:
            return  # the engine is being restarted
        self.figures.engine_polls += 1
        running = [name for name in probe.stdout.split() if name.startswith(RUNTIME)]
        if len(running) > 1:
            self.figures.violations.append(f"{len(running)} runtime containers running at once: {running}")


class Chaos:
    """One soak: the host, its daemon, the faults, and what was seen."""

    def __init__(self, host: ControllerHost, images: dict[str, str], *, seed: int) -> None:
        self.host, self.images = host, images
        self.random = random.Random(seed)  # noqa: S311 a repeatable bad day, not a secret
        self.figures = Figures()
        self.state = host.root / "prod" / "deploy-agent" / "state"
        self.daemons: list[subprocess.Popen[str]] = []
        self.segment_since = f"{time.time():.6f}"
        self.last_healthy = ""
        self.content = 0

    @property
    def daemon(self) -> subprocess.Popen[str]:
        return self.daemons[-1]

    def start_daemon(self) -> None:
        self.daemons.append(self.host.start_daemon())

    def push(self) -> None:
        """A signed push: a healthy change, a sick one, or one that changes no content."""
        kind = self.random.choices(["healthy", "sick", "neutral"], weights=[5, 2, 2])[0]
        self.figures.pushes[kind] += 1
        if kind == "neutral":
            self.host.repo.commit("a change of nothing the runtime sees", key=self.host.key)
            self.host.repo.push()
            return
        self.content += 1
        image = (
            self.images["unhealthy"] if kind == "sick" else self.images[self.random.choice(["healthy-a", "healthy-b"])]
        )
        self.host.repo.write("envs/prod.yaml", _manifest(image, self.content))
        self.host.repo.commit(f"{kind} change {self.content}", key=self.host.key)
        self.host.repo.push()

    def kill(self) -> None:
        """SIGKILL the daemon (and sometimes its children, as systemd would), then start another."""
        victims = [self.daemon.pid]
        if self.random.random() < 0.3:
            victims += _children(self.daemon.pid)
            self.figures.kills_with_children += 1
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.daemon.wait(timeout=30)
        self.figures.kills += 1
        time.sleep(self.random.uniform(0, 1))
        self.start_daemon()

    def restart_engine(self) -> None:
        """Stop the Docker Engine and start it again (its events before the stop are kept first)."""
        self.collect_events()
        self.host.engine.kill(signal.SIGTERM)
        time.sleep(self.random.uniform(0.5, 2))
        self.host.engine.start()
        self.segment_since = f"{time.time():.6f}"
        self.figures.engine_restarts += 1

    def disk_fault(self) -> None:
        """The state folder read-only, or full (a competing writer takes every page), for a few seconds."""
        seconds = self.random.uniform(1, 5)
        if self.random.random() < 0.5:
            self.figures.disk_faults["read-only"] += 1
            set_read_only(self.state, True)
            try:
                time.sleep(seconds)
            finally:
                set_read_only(self.state, False)
            return
        self.figures.disk_faults["full"] += 1
        hog = Hog(self.state / "hog")
        hog.start()
        try:
            hog.full.wait(10)
            time.sleep(seconds)
        finally:
            hog.stop()
            (self.state / "hog").unlink(missing_ok=True)

    def collect_events(self) -> None:
        """The engine's events since its last start: the peak of runtime containers running at once."""
        with contextlib.suppress(Exception):
            events = self.host.engine.events(since=self.segment_since)
            self.figures.engine_events += len(events)
            peak = peak_running(events, prefix=RUNTIME)
            if peak > 1:
                self.figures.violations.append(f"docker events show {peak} runtime containers running at once")

    def round(self) -> None:
        """One moment of the bad day."""
        roll = self.random.random()
        if roll < 0.6:
            self.push()
            if self.random.random() < 0.6:
                time.sleep(self.random.uniform(0, 4))
                self.kill()
            elif self.random.random() < 0.3:
                time.sleep(self.random.uniform(0, 2))
                self.disk_fault()
            else:
                time.sleep(self.random.uniform(1, 4))
        elif roll < 0.68:
            self.restart_engine()
        elif roll < 0.85:
            self.disk_fault()
        else:
            time.sleep(self.random.uniform(1, 3))

    def converge(self) -> None:
        """The faults over: one last healthy change, and the controller must settle on it."""
        if self.daemon.poll() is not None:
            self.start_daemon()
        self.content += 1
        image = self.images["healthy-a"]
        self.host.repo.write("envs/prod.yaml", _manifest(image, self.content))
        head = self.host.repo.commit("the last change of the day", key=self.host.key)
        self.host.repo.push()
        wait_for(
            lambda: (
                self.host.status().applied.revision == head  # type: ignore[union-attr]
                and self.host.status().phase == "InSync"
                and self.host.image() == image
            ),
            timeout=180,
            what="the last change applied",
        )

    def check_files(self) -> None:
        """The final state and the records, as ``history --verify`` and ``status`` would show them."""
        names = self.host.engine.cli("ps", "-a", "--format", "{{.Names}}").split()
        left = sorted(n for n in names if n.startswith(RUNTIME))
        if left != [RUNTIME]:
            self.figures.violations.append(f"runtime containers at the end: {left}")
        if (self.state / "inflight.json").exists():
            self.figures.violations.append("a crash journal was left at the end")
        status = self.host.status()
        anchor = Anchor(status.audit.events, status.audit.head) if status.audit else None
        broken = verify_chain(self.state / "audit.jsonl", anchor)
        if broken:
            self.figures.violations.append(f"history --verify: {broken}")
        self.figures.audit_events = len(self.host.audit())
        files = list((self.state / "snapshots").glob("*.json"))
        self.figures.snapshots = len(list_snapshots(self.state / "snapshots"))
        if self.figures.snapshots != len(files):
            self.figures.violations.append(f"{len(files) - self.figures.snapshots} snapshots unreadable")

    def check_logs(self) -> None:
        for daemon in self.daemons:
            out, err = self.host.daemon_output(daemon)
            for text in (out, err):
                if "Traceback" in text or "the pass failed with a bug" in text:
                    line = next(line for line in text.splitlines() if "Traceback" in line or "bug" in line)
                    self.figures.violations.append(f"daemon {daemon.pid} logged a traceback: {line[:200]}")
                    break


def soak(
    base: Path,
    *,
    engine: PrivateDocker,
    registry: LocalRegistry,
    repo: ManifestRepo,
    key: SshKey,
    images: dict[str, str],
    minutes: float,
    seed: int = 38,
) -> Figures:
    """Run the bad day for ``minutes``, then converge and check; the figures, with any violation."""
    engine.remove_all_containers()
    host = ControllerHost(base, engine, registry, repo, key)
    config = host.configs["prod"]
    config.write_text(config.read_text().replace("timeout: 20", "timeout: 8"))
    host.publish("initial", dev=images["healthy-a"], prod=images["healthy-a"])
    chaos = Chaos(host, images, seed=seed)
    kept = base / "state-kept"
    subprocess.run(["cp", "-a", str(chaos.state), str(kept)], check=True)
    started = time.monotonic()
    with small_tmpfs(chaos.state, size="16m"):
        subprocess.run(["cp", "-a", f"{kept}/.", str(chaos.state)], check=True)
        if host.sync() != 0:
            chaos.figures.violations.append("the first sync failed")
        sampler = Sampler(engine, chaos.state / "status.json", chaos.figures)
        sampler.start()
        chaos.start_daemon()
        try:
            deadline = started + minutes * 60
            while time.monotonic() < deadline:
                chaos.round()
            chaos.converge()
        except AssertionError as exc:
            chaos.figures.violations.append(str(exc))
        finally:
            sampler.stopping.set()
            sampler.join(timeout=10)
            chaos.collect_events()
            with contextlib.suppress(Exception):
                chaos.check_files()
            for daemon in chaos.daemons:
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(timeout=60)
            chaos.check_logs()
            set_read_only(chaos.state, False)
    chaos.figures.seconds = round(time.monotonic() - started, 1)
    return chaos.figures


def _manifest(image: str, content: int) -> str:
    return f'environment: prod\nimage: {image}\nenv:\n  SOAK_CHANGE: "{content}"\n'


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (git, while it fetches)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found
