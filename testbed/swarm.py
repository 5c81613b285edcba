"""Swarm mode's test bed: a private ``dockerd`` with a single-node swarm on 127.0.0.1, and two nodes.

A swarm of its own, never the session's engine, so the container-mode tests
keep a plain engine.  The single-node swarm listens on 127.0.0.1 only (its own
bridge, as every private engine here); the registry of the test bed on
127.0.0.1 is reachable from it as an insecure loopback registry.

Two nodes on one machine: the worker is a second private engine in network and
UTS namespaces of its own (another hostname, another loopback), joined over a
veth pair with addresses from 198.18.0.0/15; it cannot reach the host's
127.0.0.1, so that swarm has its own registry on the veth's host address.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from testbed import BedError, ControllerHost, LocalRegistry, PrivateDocker, free_port, peak_running, wait_for

NODE_LABEL = "dreichor.env"


class PrivateSwarm:
    """A private engine that is the manager (and only node) of its own swarm."""

    def __init__(self, base: Path, *, address: str = "127.0.0.1", extra_args: tuple[str, ...] = ()) -> None:
        self.engine = PrivateDocker(base, extra_args=extra_args)
        self.url = self.engine.url
        self.address = address
        self.port = free_port()
        self.node_id = ""
        self.hostname = ""

    def start(self) -> PrivateSwarm:
        """Start the engine and initialise the swarm on its address (127.0.0.1 unless told)."""
        self.engine.start()
        listen = f"{self.address}:{self.port}"
        self.engine.cli("swarm", "init", "--advertise-addr", self.address, "--listen-addr", listen)
        self.node_id = self.engine.cli("info", "--format", "{{.Swarm.NodeID}}").strip()
        self.hostname = self.engine.cli("node", "inspect", "--format", "{{.Description.Hostname}}", "self").strip()
        return self

    def label(self, env: str, *, node: str = "") -> None:
        """Label ``node`` (default: the manager) for ``env``: the runtime of ``env`` runs there."""
        self.engine.cli("node", "update", "--label-add", f"{NODE_LABEL}={env}", node or self.node_id)

    def unlabel(self, *, node: str = "") -> None:
        """Take the environment label off ``node`` (default: the manager)."""
        node = node or self.node_id
        labels = json.loads(self.engine.cli("node", "inspect", "--format", "{{json .Spec.Labels}}", node))
        if NODE_LABEL in (labels or {}):
            self.engine.cli("node", "update", "--label-rm", NODE_LABEL, node)

    def service(self, name: str) -> dict[str, Any] | None:
        """``docker service inspect`` of ``name``, or None."""
        try:
            data: list[dict[str, Any]] = json.loads(self.engine.cli("service", "inspect", name))
        except BedError:
            return None
        return data[0]

    def tasks(self, name: str) -> list[dict[str, Any]]:
        """``docker inspect`` of every task of the service ``name``."""
        ids = self.engine.cli("service", "ps", "--quiet", "--no-trunc", name).split()
        return list(json.loads(self.engine.cli("inspect", "--type", "task", *ids))) if ids else []

    def running_tasks(self, name: str) -> list[dict[str, Any]]:
        """The tasks of ``name`` that Swarm shows running."""
        return [t for t in self.tasks(name) if t["Status"]["State"] == "running"]

    def reset(self) -> None:
        """No services, no containers, no labels: a fresh swarm for the next test."""
        names = self.engine.cli("service", "ls", "--quiet").split()
        if names:
            self.engine.cli("service", "rm", *names)
        wait_for(lambda: not self.engine.cli("ps", "-aq").split(), timeout=60, what="service containers to go")
        self.unlabel()

    def max_running_at_once(self, *, since: str, env: str) -> int:
        """From ``docker events``: the most task containers of ``env`` running at one instant."""
        time.sleep(0.2)  # the engine writes an event a moment after the state change
        return self.engine.max_running_at_once(since=since, prefix=f"dreichor-runtime-{env}.")

    def stop(self) -> None:
        """Leave the swarm and stop the engine."""
        with contextlib.suppress(BedError):
            self.engine.cli("swarm", "leave", "--force")
        self.engine.stop()


def swarm_mode(host: ControllerHost, swarm: PrivateSwarm) -> ControllerHost:
    """Point both controllers of ``host`` at the swarm, in ``docker.mode: swarm``."""
    for config in host.configs.values():
        text = config.read_text()
        old = f"docker: {{url: '{host.engine.url}'}}"
        if old not in text:
            raise BedError(f"{config} does not name the engine {host.engine.url}")
        config.write_text(text.replace(old, f"docker: {{url: '{swarm.url}', mode: swarm}}"))
    return host


class NamespacedDocker(PrivateDocker):
    """A private engine in a network namespace and a UTS namespace of its own: a second machine.

    ``nsenter --net`` rather than ``ip netns exec``, which remounts ``/sys``
    (the engine then fails: "Devices cgroup isn't mounted"); ``unshare --uts``
    gives it a hostname of its own, which Swarm reports as the node's.  Its
    socket is a file, so the host's CLI still reaches it.
    """

    def __init__(self, base: Path, *, netns: str, hostname: str, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(base, extra_args=extra_args)
        self.netns = netns
        self.hostname = hostname

    def launcher(self, args: list[str]) -> list[str]:
        """``dockerd`` in a new UTS namespace named ``hostname``, inside the network namespace."""
        enter = ["nsenter", f"--net=/var/run/netns/{self.netns}", "--"]
        return ["unshare", "--uts", "--", *enter, "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, *args]

    def ip(self, *args: str) -> list[str]:
        """``ip`` aimed at the engine's network namespace."""
        return ["ip", "-n", self.netns, *args]


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise BedError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


class TwoNodeSwarm:
    """A manager on the host and a worker in its own namespaces, joined over a veth pair.

    The manager advertises the veth's host address (the worker cannot reach the
    host's 127.0.0.1), the registry listens there too, and both engines treat it
    as an insecure registry.  ``stop`` removes the daemons, the namespace and the
    veth pair whatever state ``start`` reached.
    """

    WORKER_HOSTNAME = "dreichor-worker"

    def __init__(self, base: Path) -> None:
        tag = os.getpid() % 100000
        octet = os.getpid() % 250 + 1  # 198.19.x.0/30: beside the engines' bridges in 198.18.0.0/16
        self.netns = f"drsw{tag}"
        self.host_veth, self.node_veth = f"drvh{tag}", f"drvn{tag}"
        self.host_address, self.node_address = f"198.19.{octet}.1", f"198.19.{octet}.2"
        self.registry = LocalRegistry(base / "registry", address=self.host_address)
        insecure = (f"--insecure-registry={self.registry.host}",)
        self.manager = PrivateSwarm(base / "manager", address=self.host_address, extra_args=insecure)
        self.worker = NamespacedDocker(
            base / "worker", netns=self.netns, hostname=self.WORKER_HOSTNAME, extra_args=insecure
        )
        self.worker_id = ""

    def start(self) -> TwoNodeSwarm:
        """Wire the namespace, start registry and both engines, join the worker; undo all on failure."""
        try:
            self._wire()
            self.registry.start()
            self.manager.start()
            self.worker.start()
            self._join()
        except BaseException:
            self.stop()
            raise
        return self

    def _wire(self) -> None:
        self._unwire()  # a namespace left by a killed run
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth)
        _ip("link", "set", self.node_veth, "netns", self.netns)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_veth)
        _ip("link", "set", self.host_veth, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.node_address}/30", "dev", self.node_veth)
        _ip("-n", self.netns, "link", "set", self.node_veth, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def _join(self) -> None:
        token = self.manager.engine.cli("swarm", "join-token", "--quiet", "worker").strip()
        manager = f"{self.host_address}:{self.manager.port}"
        self.worker.cli("swarm", "join", "--token", token, "--advertise-addr", self.node_address, manager)
        self.worker_id = self.worker.cli("info", "--format", "{{.Swarm.NodeID}}").strip()
        wait_for(self._worker_ready, timeout=60, what="the worker to be ready")

    def _worker_ready(self) -> bool:
        state = self.manager.engine.cli("node", "inspect", "--format", "{{.Status.State}}", self.worker_id)
        return state.strip() == "ready"

    def max_running_at_once(self, *, since: str, env: str) -> int:
        """From both engines' ``docker events``, merged by time: the most tasks of ``env`` running at once."""
        time.sleep(0.2)
        prefix = f"dreichor-runtime-{env}."
        events = [*self.manager.engine.events(since=since), *self.worker.events(since=since)]
        return peak_running(sorted(events, key=lambda e: int(e["timeNano"])), prefix=prefix)

    def stop(self) -> None:
        """Remove services, stop both engines and the registry, delete the namespace and the veth pair."""
        with contextlib.suppress(BedError, subprocess.TimeoutExpired):
            names = self.manager.engine.cli("service", "ls", "--quiet").split()
            if names:
                self.manager.engine.cli("service", "rm", *names)
        with contextlib.suppress(BedError, subprocess.TimeoutExpired):
            self.worker.cli("swarm", "leave", "--force")
        for part in (self.worker.stop, self.manager.stop, self.registry.stop):
            with contextlib.suppress(Exception):
                part()
        self._unwire()

    def _unwire(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, check=False)
