"""What the controller knows about an actual container, independent of the Docker SDK.

The Docker adapter fills it from ``inspect``; the planner compares it with the
desired container; snapshots store the full inspect next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.model.desired import LABEL_MANAGED_BY, MANAGED_BY, Mount


@dataclass(frozen=True)
class Privileges:
    """What a container may do that the controller never gives it: each field is empty as the controller creates it.

    The adapters fill it from what the engine shows; ``controller.model.plan`` calls any non-empty
    field drift, because each one widens what the runtime can reach on the host.
    """

    pid_mode: str = ""  # "host" or "container:<id>": another process namespace
    ipc_mode: str = ""  # beyond the engine's private/shareable default
    uts_mode: str = ""
    userns_mode: str = ""
    cap_add: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # host paths
    security_opt: tuple[str, ...] = ()  # seccomp/apparmor/label options ("no-new-privileges" narrows, so is left out)
    user: str = ""  # a user set on the container, other than the image's own USER
    extra_mounts: tuple[str, ...] = ()  # tmpfs and volumes-from, which the engine lists apart from Mounts


@dataclass(frozen=True)
class ContainerState:
    """One container as the engine shows it."""

    id: str
    name: str
    image: str  # the reference it was created from (Config.Image)
    image_id: str
    env: dict[str, str]  # the container's env minus what the image sets itself
    mounts: tuple[Mount, ...]
    labels: dict[str, str]
    restart_policy: str
    init: bool
    network_mode: str
    status: str  # created | running | restarting | exited | …
    health: str | None  # None without HEALTHCHECK, else starting | healthy | unhealthy
    restart_count: int
    started_at: str
    privileged: bool = False
    published_ports: bool = False
    node: str | None = None  # Swarm mode: the node the running task is on
    task: str | None = None  # Swarm mode: the running task's id
    placed: bool = True  # Swarm mode: pinned to the node that carries the environment's label
    replicas: int | None = 1  # Swarm mode: the tasks the service asks for; None: a global service, one per node
    privileges: Privileges = field(default_factory=Privileges)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def managed(self) -> bool:
        """Whether this controller created it (the label says so)."""
        return self.labels.get(LABEL_MANAGED_BY) == MANAGED_BY

    @property
    def running(self) -> bool:
        """Running and not in a restart loop."""
        return self.status == "running"
