"""A private Docker Engine (its own dockerd on a unix socket under a temporary folder) and what tests ask of it."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from testbed.common import BedError, _run, _wait

BUSYBOX = Path("/usr/bin/busybox")


_ENGINES = itertools.count()


def docker_cli() -> str:
    """The Docker CLI that ships with the engine (Debian's), else any on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    raise BedError("no docker CLI found: install docker.io")


def peak_running(events: list[dict[str, Any]], *, prefix: str) -> int:
    """The most containers named ``prefix…`` running at one instant, from ``docker events`` in time order."""
    running: set[str] = set()
    peak = 0
    for event in events:
        if not event.get("Actor", {}).get("Attributes", {}).get("name", "").startswith(prefix):
            continue
        if event.get("Action") == "start":
            running.add(event["id"])
        elif event.get("Action") in ("die", "destroy"):
            running.discard(event["id"])
        peak = max(peak, len(running))
    return peak


class PrivateDocker:
    """A ``dockerd`` with its own data root, exec root, pidfile, socket and bridge."""

    def __init__(self, base: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.base = base
        self.extra_args = extra_args
        self.socket = base / "docker.sock"
        self.url = f"unix://{self.socket}"
        serial = next(_ENGINES)  # two engines in one process must not share a bridge
        octet = (os.getpid() + 37 * serial) % 250 + 1
        self.bridge = f"drtb{os.getpid() % 100000}x{serial}"
        self.bridge_cidr = f"198.18.{octet}.1/24"  # RFC 2544 benchmark range: never routed
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = base / "dockerd.log"

    def start(self) -> PrivateDocker:
        """Start the engine and wait until it answers."""
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise BedError("dockerd is not installed (Debian package docker.io)")
        self.base.mkdir(parents=True, exist_ok=True)
        self._make_bridge()
        args = [
            dockerd,
            f"--data-root={self.base / 'data'}",
            f"--exec-root={self.base / 'exec'}",
            f"--pidfile={self.base / 'dockerd.pid'}",
            f"--host={self.url}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--max-download-attempts=1",  # a cut pull fails at once instead of retrying for a minute
            *self.extra_args,
        ]
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(self.launcher(args), stdout=log, stderr=log, start_new_session=True)
        _wait(self._answers, timeout=60, what=f"dockerd (log: {self._log})")
        return self

    def launcher(self, args: list[str]) -> list[str]:
        """The command line that starts ``dockerd`` (a subclass may wrap it in namespaces)."""
        return args

    def ip(self, *args: str) -> list[str]:
        """An ``ip`` command line in the engine's network namespace (the host's here)."""
        return ["ip", *args]

    def _make_bridge(self) -> None:
        subprocess.run(self.ip("link", "del", self.bridge), capture_output=True, check=False)
        _run(self.ip("link", "add", self.bridge, "type", "bridge"))
        _run(self.ip("addr", "add", self.bridge_cidr, "dev", self.bridge))
        _run(self.ip("link", "set", self.bridge, "up"))

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise BedError(f"dockerd exited with {self._proc.returncode}; see {self._log}")
        probe = subprocess.run(self.cli_args("version"), capture_output=True, check=False, timeout=30)
        return probe.returncode == 0

    def cli_args(self, *args: str) -> list[str]:
        """A docker CLI command line aimed at this engine."""
        return [docker_cli(), "--host", self.url, *args]

    def cli(self, *args: str) -> str:
        """Run the docker CLI against this engine; return stdout."""
        env = {**os.environ, "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(self.base / "cli")}
        return _run(self.cli_args(*args), env=env)

    def inspect(self, name: str) -> dict[str, object] | None:
        """``docker inspect`` of a container, or None when it does not exist."""
        proc = subprocess.run(self.cli_args("inspect", "--type", "container", name), capture_output=True, check=False)
        if proc.returncode != 0:
            return None
        data: list[dict[str, object]] = json.loads(proc.stdout)
        return data[0]

    def running_names(self, prefix: str = "") -> list[str]:
        """Names of running containers starting with ``prefix``."""
        out = self.cli("ps", "--format", "{{.Names}}")
        return sorted(n for n in out.split() if n.startswith(prefix))

    def remove_all_containers(self) -> None:
        """Force-remove every container of this engine."""
        ids = self.cli("ps", "-aq").split()
        if ids:
            self.cli("rm", "-f", *ids)

    def events(self, *, since: str) -> list[dict[str, Any]]:
        """Container events from ``docker events`` since ``since`` (a UNIX time), oldest first."""
        out = self.cli(
            "events",
            "--since",
            since,
            "--until",
            f"{time.time():.6f}",
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        )
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return sorted(events, key=lambda e: int(e["timeNano"]))

    def max_running_at_once(self, *, since: str, prefix: str) -> int:
        """From ``docker events``: the most containers named ``prefix…`` running at one instant."""
        return peak_running(self.events(since=since), prefix=prefix)

    def stop(self) -> None:
        """Remove all containers, stop the engine, delete the bridge, unmount what the engine left."""
        if self._proc is not None:
            with contextlib.suppress(BedError, subprocess.TimeoutExpired):
                self.remove_all_containers()
            self.kill(signal.SIGTERM)
        subprocess.run(self.ip("link", "del", self.bridge), capture_output=True, check=False)
        unmount_under(self.base)  # also after a fault test killed the engine and left it down

    def kill(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the engine with ``sig`` and wait for it (used by fault tests too)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def mounts_under(folder: Path) -> list[str]:
    """The mount points at or below ``folder`` in this mount namespace, deepest first."""
    root = os.path.realpath(folder)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with space, tab, newline and backslash written in octal.
        point = line.split(" ")[4].encode().decode("unicode_escape")
        if point == root or point.startswith(root + "/"):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_under(folder: Path) -> None:
    """Unmount what a stopped engine left below ``folder`` (a swarm's ``nsfs`` netns, overlays, shm).

    A killed or swarm-mode dockerd leaves network namespaces bind-mounted under
    its exec root (the ingress sandbox's ``exec/netns/1-…``) and sometimes its
    overlay mounts: the folder cannot be removed until they are gone.  Lazy, so
    a mount still in use is detached now and freed when its last user leaves.
    """
    for point in mounts_under(folder):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
