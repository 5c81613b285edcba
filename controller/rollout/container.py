"""Container mode's swap: one container, created beside the old one, renamed, stopped, started.

Everything slow (pull, create) happens before the old container is stopped;
the old one is stopped before the new one starts (never two running); the old
one is kept as ``-previous`` until the new one has proven healthy, so an undo
is a rename and a start.  The sequence around these steps is ``base``'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from controller.engine.modes import CONTAINER
from controller.engine.port import NEXT_SUFFIX, PREVIOUS_SUFFIX, Runtime
from controller.errors import ControllerError, Refused, Retryable
from controller.model.containers import ContainerState
from controller.model.desired import DesiredContainer, keep_reference
from controller.records.snapshots import list_snapshots
from controller.rollout.base import LOG_LINES, HealthGateFailed, RolloutBase

log = logging.getLogger("dreichor.rollout")
STOP_TIMEOUT = 30
Containers = dict[str, ContainerState]  # this environment's runtime containers by name


@dataclass(frozen=True)
class Swap:
    """A container swap in flight: the new container (created, not started) and the old one."""

    new_id: str
    old: ContainerState | None


class ContainerRollout(RolloutBase[Runtime, Containers, Swap]):
    """Applies plans for one environment (container mode)."""

    mode = CONTAINER

    def _pull(self, desired: DesiredContainer, fields: dict[str, object]) -> DesiredContainer:
        """Pull by digest unless present, and keep it; the log line gets the image's size."""
        desired = self._ensure_image(desired)
        fields["bytes"] = self.engine.image_size(desired.image)
        return desired

    def _ensure_image(self, desired: DesiredContainer) -> DesiredContainer:
        """Pull by digest unless present; when the registry cannot serve it, use the kept copy."""
        kept = keep_reference(desired.image, self.paths.environment)
        if not self.engine.image_present(desired.image):
            try:
                self.engine.pull(desired.image, auth=self.auth)
            except (Retryable, Refused):
                if not self.engine.image_present(kept):
                    raise
                return replace(desired, image=kept)  # the same digest, kept on this host
        self.engine.keep(desired.image)
        return desired

    def _prior(self) -> Containers:
        return self.engine.runtime_containers()

    def _runs(self, prior: Containers) -> bool:
        return self.canonical in prior

    def _snapshot(self, prior: Containers, desired: DesiredContainer, reason: str) -> str:
        old = prior.get(self.canonical)
        return self._write_snapshot(
            old, desired, reason, image_id=old.image_id if old else None, record=old.raw if old else None
        )

    def _prepare(self, prior: Containers, desired: DesiredContainer) -> Swap:
        """Remove a half-made ``-next`` of an earlier run and create the new container beside the old."""
        leftover = prior.get(self.canonical + NEXT_SUFFIX)
        if leftover is not None:
            self.engine.remove(leftover.id)
        with self._timed("create"):
            new_id = self.engine.create(desired, name=self.canonical + NEXT_SUFFIX)
        return Swap(new_id, prior.get(self.canonical))

    def _intent(self, prior: Containers, swap: Swap, desired: DesiredContainer) -> dict[str, Any]:
        # No "mode" field: the previous release's journals have none, and recovery reads both alike.
        return {"new_id": swap.new_id, "old_id": swap.old.id if swap.old else None, "image": desired.image}

    def _swap(self, swap: Swap) -> None:
        """Rename both, stop the old, start the new: the window is only the engine's own stop and start."""
        self.journal.step("create")
        old, new_id = swap.old, swap.new_id
        # Renamed while the old one still runs, so nothing but the stop and start is in the window.
        if old is not None:
            self.engine.rename(old.id, self.canonical + PREVIOUS_SUFFIX)
        self.engine.rename(new_id, self.canonical)
        self.journal.step("rename")
        if old is not None and old.status in ("running", "restarting"):
            with self._timed("stop", container=old.id[:12]):
                self.engine.stop(old.id, timeout=STOP_TIMEOUT)
        self.at_step("stop")
        with self._timed("start", container=new_id[:12]):
            self.engine.start(new_id)
        self.journal.step("start", gate_deadline=self._gate_deadline())

    def _gate_fields(self, swap: Swap) -> dict[str, object]:
        return {"container": swap.new_id[:12]}

    def _gate(self, swap: Swap, desired: DesiredContainer) -> str | None:
        """Healthy (HEALTHCHECK) or running ``stable`` seconds without a restart, within ``timeout``."""
        return self._await_healthy(swap.new_id, desired.image, timeout=self.health.timeout)

    def _await_healthy(self, container_id: str, image: str, *, timeout: float) -> str:
        """The gate itself: the container's id once healthy within ``timeout`` seconds, else ``HealthGateFailed``."""
        has_check = self.engine.image_has_healthcheck(image)
        deadline = self.monotonic() + timeout
        stable_since: float | None = None
        first = self.engine.inspect(container_id)
        restarts = first.restart_count if first else 0
        while self.monotonic() < deadline:
            state = self.engine.inspect(container_id)
            if state is None:
                raise HealthGateFailed("the new container disappeared", "")
            if state.status not in ("running", "created") or state.restart_count != restarts:
                raise HealthGateFailed(
                    f"the new container is {state.status} (restarts: {state.restart_count})",
                    self._logs(container_id),
                )
            if has_check and state.health == "healthy":
                return container_id
            if has_check and state.health == "unhealthy":
                raise HealthGateFailed("the new container's HEALTHCHECK reports unhealthy", self._logs(container_id))
            if not has_check and state.running:
                stable_since = stable_since or self.monotonic()
                if self.monotonic() - stable_since >= self.health.stable:
                    return container_id
            self.sleep(0.2)
        raise HealthGateFailed(f"the new container was not healthy within {timeout:g}s", self._logs(container_id))

    def _logs(self, container_id: str) -> str:
        return self.engine.logs_tail(container_id, lines=LOG_LINES)

    def _undo(self, swap: Swap) -> str | None:
        """Remove the new container, give the old one its name back, start it, and gate it like a deploy."""
        self.engine.remove(swap.new_id)
        if swap.old is None:
            return None
        self.engine.rename(swap.old.id, self.canonical)
        self.engine.start(swap.old.id)
        return self._gate_restored(swap.old)

    def _gate_restored(self, old: ContainerState) -> str | None:
        """The restored container passes the same gate (docs/design.md §16): None when it is healthy again
        (or running, for an image without HEALTHCHECK), else what it is after ``health.timeout``."""
        has_check = self.engine.image_has_healthcheck(old.image)
        deadline = self.monotonic() + self.health.timeout
        state = self.engine.inspect(old.id)
        while self.monotonic() < deadline:
            state = self.engine.inspect(old.id)
            if state is not None and state.running and (not has_check or state.health == "healthy"):
                return None
            if state is not None and (state.health == "unhealthy" or state.status not in ("running", "created")):
                break
            self.sleep(0.2)
        if state is None:
            return "the restored container is gone"
        health = f", health {state.health}" if has_check and state.health else ""
        return f"the restored container is not healthy either ({state.status}{health})"

    def _finish(self, swap: Swap, desired: DesiredContainer) -> None:
        """Remove the old container; keep the images of the current container and the newest snapshots."""
        if swap.old is not None:
            self.engine.remove(swap.old.id)
        env = self.paths.environment
        wanted = {keep_reference(desired.image, env)}
        wanted |= {keep_reference(s.image, env) for s in list_snapshots(self.paths.snapshots) if s.image}
        try:
            self.engine.prune_kept(wanted)
        except ControllerError as exc:
            log.warning("could not prune kept images", extra={"reason": str(exc)})

    def _wait_running(self, container_id: str, *, timeout: float = 30) -> None:
        deadline = self.monotonic() + timeout
        while self.monotonic() < deadline:
            state = self.engine.inspect(container_id)
            if state is not None and state.running:
                return
            self.sleep(0.1)

    def _recover(self) -> str | None:
        """Converge from the journal and what the engine shows: finish a swap that passed, undo any other.

        A swap killed in its health gate before the gate's deadline is gated on until that deadline
        (passed: finished; failed: undone); after the deadline it is undone first.  So a sick container
        runs no longer than the deadline or the recovery's own start, whichever is later, and a healthy
        one is not undone only to be redone by the next pass.  ``base`` clears the journal.
        """
        journal = self.journal.read()
        containers = self.engine.runtime_containers()
        current = containers.get(self.canonical)
        previous = containers.get(self.canonical + PREVIOUS_SUFFIX)
        leftover = containers.get(self.canonical + NEXT_SUFFIX)
        done: list[str] = []
        steps = journal.get("steps", []) if journal else []
        if journal and "health" not in steps and self._passes_the_rest_of_its_gate(journal, current):
            steps = [*steps, "health"]  # finished below: the old container is not started only to be stopped
            done.append("the new container passed its health gate after the restart")
        elif journal and journal.get("new_id") and "health" not in steps:
            done += self._undo_interrupted(journal, containers)
        if leftover is not None and leftover.id != (journal or {}).get("new_id"):
            self.engine.remove(leftover.id)
            done.append("removed a half-created container")
        if journal and "health" in steps and previous is not None:
            self.engine.remove(previous.id)  # the new one had passed: finish
            done.append("finished a swap that had passed its health gate")
        elif journal and journal.get("new_id") and "health" not in steps:
            pass  # undone above
        elif current is None and previous is not None:
            self.engine.rename(previous.id, self.canonical)
            self.engine.start(previous.id)
            done.append("restored the previous container")
        elif current is not None and previous is not None:
            self.engine.remove(previous.id)
            done.append("removed a stale previous container")
        return "; ".join(done) or None

    def _passes_the_rest_of_its_gate(self, journal: dict[str, Any], current: ContainerState | None) -> bool:
        """Killed in its health gate before the gate's deadline: the gate goes on, until that deadline only.

        So a restart within ``health.timeout`` neither cuts a healthy change short (the old container
        started, then stopped again by the pass that redoes the change) nor lets a sick one run longer.
        """
        left = _left(journal.get("gate_deadline"), self.clock())
        new_id, image = journal.get("new_id"), journal.get("image")
        if left is None or current is None or current.id != new_id or not current.running or not image:
            return False
        with self._timed("health", container=str(new_id)[:12], resumed=True):
            try:
                self._await_healthy(str(new_id), str(image), timeout=left)
            except HealthGateFailed:
                return False
        return True

    def _undo_interrupted(self, journal: dict[str, Any], containers: Containers) -> list[str]:
        """Remove the new container and run the old one under its name again; what was done (nothing: [])."""
        new_id, old_id = journal.get("new_id"), journal.get("old_id")
        by_id = {c.id: c for c in containers.values()}
        current = containers.get(self.canonical)
        acted = False
        if new_id in by_id:
            late = _past(journal.get("gate_deadline"), self.clock())
            self.engine.remove(str(new_id))
            acted = True
            if by_id[str(new_id)].running and late is not None:
                log.warning("a runtime killed in its health gate ran past the gate's deadline", extra={"seconds": late})
            current = None if current is not None and current.id == new_id else current
        previous = containers.get(self.canonical + PREVIOUS_SUFFIX)
        old = previous if previous is not None and previous.id == old_id else current
        if old is not None:
            if old.name != self.canonical:
                self.engine.rename(old.id, self.canonical)
                acted = True
            if not old.running:
                self.engine.start(old.id)
                acted = True
            self._wait_running(old.id)
        return ["undid an interrupted swap: the previous container runs again"] if acted else []


def _left(deadline: object, now: datetime) -> float | None:
    """Seconds left until an ISO ``deadline`` from the journal (None: passed, or no deadline)."""
    if not isinstance(deadline, str):
        return None
    try:
        left = (datetime.fromisoformat(deadline) - now).total_seconds()
    except ValueError:
        return None
    return left if left > 0 else None


def _past(deadline: object, now: datetime) -> float | None:
    """Seconds ``now`` is past an ISO ``deadline`` from the journal (None: not past, or no deadline)."""
    if not isinstance(deadline, str):
        return None
    try:
        late = (now - datetime.fromisoformat(deadline)).total_seconds()
    except ValueError:
        return None
    return round(late, 3) if late > 0 else None
