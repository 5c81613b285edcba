"""The engine port: what the pass and the rollout need from a container engine, as a Protocol.

The orchestration talks to this interface, never to an SDK, so it can run
against the Docker adapter (``docker_engine.Engine``) in production and the
integration tests, and against an in-memory fake in ``tests/unit`` where a
pass must run without root or a Docker Engine.  Only containers named
``dreichor-runtime-<env>`` and its ``-next``/``-previous`` companions exist
through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from controller.model.containers import ContainerState
from controller.model.desired import DesiredContainer

NEXT_SUFFIX = "-next"
PREVIOUS_SUFFIX = "-previous"
# The task states Swarm never moves a task out of: the task will not run again (a restart
# is a new task).  "shutdown" and "remove" belong here too: Swarm shuts a task down only
# to replace or remove it, so a task of the new spec in either did not survive the update,
# and the health gate fails at once rather than waiting out its timeout; the status page
# shows such a task as unhealthy for the same reason.  One set for both readers.
ENDED_TASK_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})


class RuntimeView(Protocol):
    """What the pass and the status need from either mode: the runtime as the planner compares it."""

    @property
    def canonical(self) -> str:
        """The runtime's name, ``dreichor-runtime-<env>``."""
        ...

    def close(self) -> None:
        """Release connections; the next call may reconnect."""
        ...

    def current(self) -> ContainerState | None:
        """The runtime at the canonical name, in as few engine calls as the mode allows."""
        ...


class Runtime(RuntimeView, Protocol):
    """Container mode: one environment's view of its container engine; errors are ``Refused`` or ``Retryable``."""

    def runtime_containers(self) -> dict[str, ContainerState]:
        """This environment's runtime containers by name (canonical, -next, -previous)."""
        ...

    def refuse_other_mode(self) -> None:
        """Before creating the runtime: refuse when this environment runs as a Swarm service (``modes``)."""
        ...

    def inspect(self, ref: str) -> ContainerState | None:
        """The container ``ref`` (id or name), or None when it does not exist."""
        ...

    def image_has_healthcheck(self, image: str) -> bool:
        """Whether the image declares a HEALTHCHECK."""
        ...

    def image_present(self, image: str) -> bool:
        """Whether the engine holds ``image`` locally."""
        ...

    def pull(self, pinned: str, *, auth: dict[str, str] | None = None) -> str:
        """Pull ``repo@sha256:…`` and check the digest; return the image id."""
        ...

    def image_size(self, image: str) -> int | None:
        """The image's size in bytes as the engine reports it (None: it cannot say)."""
        ...

    def keep(self, pinned: str) -> str:
        """Tag ``pinned`` with its keep reference so a registry outage cannot strand it; return the reference."""
        ...

    def prune_kept(self, keep: set[str]) -> None:
        """Untag this environment's keep references that are not in ``keep``."""
        ...

    def create(self, desired: DesiredContainer, *, name: str) -> str:
        """Create (not start) a container under ``name``; return its id."""
        ...

    def start(self, ref: str) -> None:
        """Start a container."""
        ...

    def stop(self, ref: str, *, timeout: int = 30) -> None:
        """Stop gracefully: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        ...

    def rename(self, ref: str, name: str) -> None:
        """Rename a container, only to one of this environment's names."""
        ...

    def remove(self, ref: str) -> None:
        """Force-remove a container; a missing one is not an error."""
        ...

    def logs_tail(self, ref: str, *, lines: int = 50) -> str:
        """The last ``lines`` lines of a container's output."""
        ...


@dataclass(frozen=True)
class ServiceState:
    """A Swarm service as the manager shows it: the spec the rollout snapshots and restores."""

    id: str
    version: int  # the spec's version: an update names the version it replaces
    spec: dict[str, Any]
    update_state: str | None  # UpdateStatus.State: updating, completed, rollback_started, … (None: never updated)
    update_message: str = ""


@dataclass(frozen=True)
class TaskState:
    """One task of the runtime service: where it runs and how it is doing."""

    id: str
    node: str  # the node's hostname
    state: str  # new … starting | running | complete | failed | shutdown | rejected …
    desired_state: str
    image: str
    container_id: str
    current: bool  # created from the service's spec as it is now (not an older generation)
    message: str = ""

    @property
    def live(self) -> bool:
        """Started and not yet ended: a task that may hold the volumes right now."""
        return self.state in ("starting", "running")

    @property
    def ended(self) -> bool:
        """In a state Swarm never moves a task out of (``ENDED_TASK_STATES``)."""
        return self.state in ENDED_TASK_STATES


class ServiceRuntime(RuntimeView, Protocol):
    """Swarm mode (docs/design.md §13): one environment's one-replica service, through a swarm manager.

    Swarm starts and stops the task itself (stop-first), so the port is a service's
    life: create, update to a spec, read its update state and its tasks.  ``current``
    shows the service's spec with its live task's state.
    """

    def check_placement(self) -> str:
        """Refuse unless the engine is a manager and exactly one node carries this env's label; its hostname."""
        ...

    def refuse_other_mode(self) -> None:
        """Before creating the service: refuse when this environment runs as a standalone container (``modes``)."""
        ...

    def service(self) -> ServiceState | None:
        """The service, or None when it does not exist."""
        ...

    def tasks(self, service: ServiceState | None = None) -> list[TaskState]:
        """The service's tasks (of ``service`` when the caller just read it), newest first."""
        ...

    def image_has_healthcheck(self, image: str) -> bool:
        """Whether the image declares a HEALTHCHECK."""
        ...

    def pull(self, pinned: str, *, auth: dict[str, str] | None = None) -> str:
        """Pull ``repo@sha256:…`` on the manager and check the digest; return the image id."""
        ...

    def deploy(self, desired: DesiredContainer, *, auth: dict[str, str] | None = None) -> ServiceState:
        """Create the service, or update it to ``desired``; return its state after the call."""
        ...

    def restore(self, spec: dict[str, Any] | None, *, auth: dict[str, str] | None = None) -> None:
        """Put a snapshot's spec back (None: remove the service, it did not exist before)."""
        ...

    def logs_tail(self, task_id: str, *, lines: int = 50) -> str:
        """The last ``lines`` lines of a task's output."""
        ...
