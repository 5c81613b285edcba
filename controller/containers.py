"""What the controller knows about an actual container, independent of the Docker SDK.

The Docker adapter fills it from ``inspect``; the planner compares it with the
desired container; snapshots store the full inspect next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.contract import LABEL_MANAGED_BY, MANAGED_BY, Mount


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
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def managed(self) -> bool:
        """Whether this controller created it (the label says so)."""
        return self.labels.get(LABEL_MANAGED_BY) == MANAGED_BY

    @property
    def running(self) -> bool:
        """Running and not in a restart loop."""
        return self.status == "running"
