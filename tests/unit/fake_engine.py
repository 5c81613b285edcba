"""An in-memory container engine implementing ``controller.engine.port.Runtime``, for passes without Docker.

It keeps containers by id with the engine's naming rules (one container per
name), "pulls" only images the test put in its registry, and starts an image
listed in ``crashing`` into ``exited``, so the health gate fails as it does
against a real engine.  ``calls`` records every engine call a pass makes.
mypy checks it against the port (``[tool.mypy] files`` in pyproject.toml): see the end.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import TYPE_CHECKING

from controller.engine.modes import service_found
from controller.engine.port import NEXT_SUFFIX, PREVIOUS_SUFFIX, Runtime
from controller.errors import Reason, Refused, Retryable
from controller.model.containers import ContainerState
from controller.model.desired import DesiredContainer, container_name, keep_reference

# As both adapters word it (``engine.failures``).
UNREACHABLE = "the Docker Engine at /var/run/docker.sock is unreachable: Connection refused (ECONNREFUSED)"


class FakeEngine:
    """One environment's containers and images, in memory."""

    def __init__(self, environment: str, *, registry: set[str], crashing: frozenset[str] = frozenset()) -> None:
        self.environment = environment
        self.canonical = container_name(environment)
        self.names = {self.canonical, self.canonical + NEXT_SUFFIX, self.canonical + PREVIOUS_SUFFIX}
        self.registry = registry
        self.crashing = crashing
        self.local: set[str] = set()
        self.containers: dict[str, ContainerState] = {}
        self.calls: list[str] = []
        self.unavailable = False
        self.swarm_service = False  # the environment runs as a Swarm service (docker.mode switched)
        self.closed = 0
        self._ids = itertools.count(1)

    # -- what a test looks at --------------------------------------------------------------

    def running(self) -> ContainerState | None:
        """The canonical container when it runs."""
        state = self._by_name(self.canonical)
        return state if state is not None and state.running else None

    def names_present(self) -> set[str]:
        """The names of every container the engine holds."""
        return {c.name for c in self.containers.values()}

    # -- the port ----------------------------------------------------------------------------

    def close(self) -> None:
        """Count disconnections."""
        self.closed += 1

    def current(self) -> ContainerState | None:
        """The canonical container."""
        self._call("current")
        return self._by_name(self.canonical)

    def runtime_containers(self) -> dict[str, ContainerState]:
        """Containers by name."""
        self._call("runtime_containers")
        return {c.name: c for c in self.containers.values() if c.name in self.names}

    def refuse_other_mode(self) -> None:
        """Refused as the engine does when the environment's Swarm service runs."""
        self._call("refuse_other_mode")
        if self.swarm_service:
            raise service_found(self.canonical)

    def inspect(self, ref: str) -> ContainerState | None:
        """By id or name."""
        self._call("inspect")
        return self.containers.get(ref) or self._by_name(ref)

    def image_size(self, image: str) -> int | None:
        """A fixed size: the fake images are all alike (not a recorded call: it only feeds a log line)."""
        return 1024 if image in self.registry else None

    def image_has_healthcheck(self, image: str) -> bool:
        """The fake images have none: the health gate waits for ``stable`` seconds."""
        self._call("image_has_healthcheck")
        return False

    def image_present(self, image: str) -> bool:
        """Whether the image was pulled or kept."""
        self._call("image_present")
        return image in self.local

    def pull(self, pinned: str, *, auth: dict[str, str] | None = None) -> str:
        """From the test's registry, or refused like a digest the registry lacks."""
        self._call("pull")
        if pinned not in self.registry:
            raise Refused(f"image {pinned} does not exist in the registry", code=Reason.IMAGE_NOT_FOUND)
        self.local.add(pinned)
        return "sha256:" + pinned.rpartition(":")[2]

    def keep(self, pinned: str) -> str:
        """Tag the keep reference."""
        self._call("keep")
        kept = keep_reference(pinned, self.environment)
        self.local.add(kept)
        return kept

    def prune_kept(self, keep: set[str]) -> None:
        """Untag other keep references."""
        self._call("prune_kept")
        prefix = keep_reference("x:y", self.environment).rpartition(":")[0]
        self.local = {i for i in self.local if not i.startswith(prefix) or i in keep}

    def create(self, desired: DesiredContainer, *, name: str) -> str:
        """A created (not started) container."""
        self._call("create")
        self._name_free(name)
        cid = f"c{next(self._ids):04d}"
        self.containers[cid] = ContainerState(
            id=cid,
            name=name,
            image=desired.image,
            image_id="sha256:" + desired.image.rpartition(":")[2],
            env=dict(desired.env),
            mounts=tuple(sorted(desired.mounts, key=lambda m: m.target)),
            labels=dict(desired.labels),
            restart_policy=desired.restart_policy,
            init=desired.init,
            network_mode=desired.network_mode,
            status="created",
            health=None,
            restart_count=0,
            started_at="",
        )
        return cid

    def start(self, ref: str) -> None:
        """Running, or exited at once for a crashing image."""
        self._call("start")
        state = self._get(ref)
        self.containers[state.id] = replace(state, status="exited" if state.image in self.crashing else "running")

    def stop(self, ref: str, *, timeout: int = 30) -> None:
        """Exited."""
        self._call("stop")
        state = self._get(ref)
        self.containers[state.id] = replace(state, status="exited")

    def rename(self, ref: str, name: str) -> None:
        """Only to one of the environment's names, and only to a free one."""
        self._call("rename")
        if name not in self.names:
            raise Refused(f"refusing to rename to {name}", code=Reason.ISOLATION)
        self._name_free(name)
        state = self._get(ref)
        self.containers[state.id] = replace(state, name=name)

    def remove(self, ref: str) -> None:
        """Gone; a missing container is not an error."""
        self._call("remove")
        state = self.containers.get(ref) or self._by_name(ref)
        if state is not None:
            del self.containers[state.id]

    def logs_tail(self, ref: str, *, lines: int = 50) -> str:
        """What a crashing image printed."""
        self._call("logs_tail")
        return "panic: the runtime could not start"

    # -- inside ------------------------------------------------------------------------------

    def _call(self, name: str) -> None:
        if self.unavailable:
            raise Retryable(UNREACHABLE, code=Reason.ENGINE_UNAVAILABLE)
        self.calls.append(name)

    def _by_name(self, name: str) -> ContainerState | None:
        return next((c for c in self.containers.values() if c.name == name), None)

    def _get(self, ref: str) -> ContainerState:
        state = self.containers.get(ref) or self._by_name(ref)
        if state is None:
            raise Refused(f"no such container {ref}", code=Reason.NOT_FOUND)
        return state

    def _name_free(self, name: str) -> None:
        if self._by_name(name) is not None:
            raise Retryable(f"the name {name} is already in use", code=Reason.ENGINE_UNAVAILABLE)


if TYPE_CHECKING:  # the fake stands in for the port: mypy refuses it the day they part
    _PORT: Runtime = FakeEngine("prod", registry=set())
