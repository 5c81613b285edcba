"""The engine port: what the pass and the rollout need from a container engine, as a Protocol.

The orchestration talks to this interface, never to an SDK, so it can run
against the Docker adapter (``docker_engine.Engine``) in production and the
integration tests, and against an in-memory fake in ``tests/unit`` where a
pass must run without root or a Docker Engine.  Only containers named
``dreichor-runtime-<env>`` and its ``-next``/``-previous`` companions exist
through it.
"""

from __future__ import annotations

from typing import Protocol

from controller.containers import ContainerState
from controller.contract import DesiredContainer

NEXT_SUFFIX = "-next"
PREVIOUS_SUFFIX = "-previous"


class Runtime(Protocol):
    """One environment's view of its container engine; errors are ``Refused`` or ``Retryable``."""

    @property
    def canonical(self) -> str:
        """The runtime container's name, ``dreichor-runtime-<env>``."""
        ...

    def close(self) -> None:
        """Release connections; the next call may reconnect."""
        ...

    def current(self) -> ContainerState | None:
        """The container at the canonical name, in one engine call at most (the no-change pass's only one)."""
        ...

    def runtime_containers(self) -> dict[str, ContainerState]:
        """This environment's runtime containers by name (canonical, -next, -previous)."""
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
