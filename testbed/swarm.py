"""Swarm mode's test bed: a private ``dockerd`` with a single-node swarm on 127.0.0.1.

A swarm of its own, never the session's engine, so the container-mode tests
keep a plain engine.  The swarm listens on 127.0.0.1 only (its own bridge, as
every private engine here); the registry of the test bed on 127.0.0.1 is
reachable from it as an insecure loopback registry.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from testbed import BedError, ControllerHost, PrivateDocker, free_port, wait_for

NODE_LABEL = "dreichor.env"


class PrivateSwarm:
    """A private engine that is the manager (and only node) of its own swarm."""

    def __init__(self, base: Path) -> None:
        self.engine = PrivateDocker(base)
        self.url = self.engine.url
        self.node_id = ""
        self.hostname = ""

    def start(self) -> PrivateSwarm:
        """Start the engine and initialise the swarm on 127.0.0.1."""
        self.engine.start()
        port = free_port()
        self.engine.cli("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")
        self.node_id = self.engine.cli("info", "--format", "{{.Swarm.NodeID}}").strip()
        self.hostname = self.engine.cli("node", "inspect", "--format", "{{.Description.Hostname}}", "self").strip()
        return self

    def label(self, env: str) -> None:
        """Label the node for ``env``: the runtime of ``env`` may run here."""
        self.engine.cli("node", "update", "--label-add", f"{NODE_LABEL}={env}", self.node_id)

    def unlabel(self) -> None:
        """Take the environment label off the node."""
        labels = json.loads(self.engine.cli("node", "inspect", "--format", "{{json .Spec.Labels}}", "self"))
        if NODE_LABEL in (labels or {}):
            self.engine.cli("node", "update", "--label-rm", NODE_LABEL, self.node_id)

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
