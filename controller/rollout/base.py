"""Applying a plan to the engine: pull, snapshot, swap, health gate, rollback, crash recovery.

The order is the safety argument.  Everything that can fail slowly (pull,
create) happens before the old container is stopped; the old one is stopped
before the new one starts (never two running); the old one is kept as
``-previous`` until the new one has proven healthy.  An intent journal,
fsynced before the stop and updated at every step, lets a restarted
controller finish or undo a swap that a crash interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from controller.config import HealthConfig, HostPaths
from controller.containers import ContainerState
from controller.contract import LABEL_REVISION, DesiredContainer, keep_reference, runtime_mounts
from controller.engine.modes import CONTAINER, leave_foreign_journal, refuse_foreign_journal
from controller.engine.port import NEXT_SUFFIX, PREVIOUS_SUFFIX, Runtime, RuntimeView
from controller.errors import ControllerError, Reason, Refused, Retryable
from controller.plan import Plan
from controller.records.files import atomic_write
from controller.records.snapshots import Snapshot, list_snapshots, snapshot_id, write_snapshot

log = logging.getLogger("dreichor.rollout")
Clock = Callable[[], datetime]
EngineT = TypeVar("EngineT", bound=RuntimeView)
STOP_TIMEOUT = 30
LOG_LINES = 50
CRASH_HOOK = "DREICHOR_TEST_CRASH_AT"  # test-only: SIGKILL ourselves at this step


class HealthGateFailed(ControllerError):
    """The new container did not become healthy in time; it was rolled back."""

    def __init__(self, reason: str, logs: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.logs = logs


@dataclass(frozen=True)
class Outcome:
    """What an apply did."""

    result: str  # applied | rolled_back | unchanged
    reason: str
    container_id: str | None = None
    snapshot: str | None = None


def checkpoint(step: str) -> None:
    """A named step of a pass; the crash tests stop the process here."""
    if os.environ.get(CRASH_HOOK) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class Journal:
    """``state/inflight.json``: the swap in progress, step by step, fsynced."""

    def __init__(self, path: Path, *, at_step: Callable[[str], None] = checkpoint) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        self.at_step = at_step

    def begin(self, **fields: Any) -> None:
        """Record the intent before anything is stopped."""
        self.data = {"version": 1, **fields, "steps": []}
        self._write()

    def step(self, name: str) -> None:
        """Record a completed step."""
        self.data["steps"].append(name)
        self._write()
        self.at_step(name)

    def finish(self) -> None:
        """The swap is settled: forget it."""
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=2).encode(), mode=0o600)

    def read(self) -> dict[str, Any] | None:
        """The journal left by an interrupted run, if any."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


class Applier(Protocol):
    """What the pass and the service need from a rollout, in either mode (``Rollout``, ``SwarmRollout``)."""

    def apply(self, plan: Plan, desired: DesiredContainer) -> Outcome:
        """Carry out ``plan``; raise ``HealthGateFailed`` after rolling back."""
        ...

    def restore(self, snapshot: Snapshot) -> Outcome:
        """Break-glass: bring back what a snapshot recorded."""
        ...

    def recover(self) -> str | None:
        """Converge after a crash; say what was done."""
        ...


class RolloutBase(Generic[EngineT]):
    """What both modes' rollouts hold: the engine, the host paths, the health gate, the world and the journal."""

    def __init__(
        self,
        engine: EngineT,
        *,
        paths: HostPaths,
        health: HealthConfig,
        clock: Clock = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        auth: dict[str, str] | None = None,
        at_step: Callable[[str], None] = checkpoint,
    ) -> None:
        self.engine = engine
        self.paths = paths
        self.health = health
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.auth = auth
        self.at_step = at_step
        self.journal = Journal(paths.journal, at_step=at_step)
        self.canonical = engine.canonical

    def apply(self, plan: Plan, desired: DesiredContainer) -> Outcome:
        """Carry out ``plan`` in this mode."""
        raise NotImplementedError

    def _write_snapshot(
        self,
        old: ContainerState | None,
        desired: DesiredContainer,
        reason: str,
        *,
        image_id: str | None,
        record: dict[str, Any] | None,
    ) -> str:
        """The prior state before a change (the runtime as it ran, and the mode's own record of it)."""
        now = self.clock()
        revision = old.labels.get(LABEL_REVISION) if old else None
        snapshot = Snapshot(
            id=snapshot_id(now, revision),
            environment=self.paths.environment,
            created_at=now,
            reason=reason,
            revision=revision,
            image=old.image if old else None,
            image_id=image_id,
            container=record,
            prior={"image": old.image, "env": old.env, "labels": old.labels} if old else None,
            desired=desired.describe(),
        )
        write_snapshot(self.paths.snapshots, snapshot)
        return snapshot.id

    def restore(self, snapshot: Snapshot) -> Outcome:
        """Break-glass: bring back the runtime a snapshot recorded (image, env, labels), gated like a deploy."""
        prior = snapshot.prior
        if not prior or not prior.get("image"):
            raise Refused(f"snapshot {snapshot.id} recorded no container to restore", code=Reason.BAD_SNAPSHOT)
        desired = DesiredContainer(
            name=self.canonical,
            image=str(prior["image"]),
            env=dict(prior.get("env") or {}),
            mounts=runtime_mounts(self.paths),
            labels=dict(prior.get("labels") or {}),
        )
        return self.apply(Plan("replace", f"restoring snapshot {snapshot.id}"), desired)


class Rollout(RolloutBase[Runtime]):
    """Applies plans for one environment (container mode)."""

    def apply(self, plan: Plan, desired: DesiredContainer) -> Outcome:
        """Carry out ``plan``; raise ``HealthGateFailed`` after rolling back a bad container."""
        if plan.action == "nothing":
            return Outcome("unchanged", plan.reason)
        with self._timed("pull", image=desired.image) as pulled:
            desired = self._ensure_image(desired)
            pulled["bytes"] = self.engine.image_size(desired.image)
        self.at_step("pull")
        containers = self.engine.runtime_containers()
        old = containers.get(self.canonical)
        refuse_foreign_journal(self.journal, mode=CONTAINER)
        if old is None:
            self.engine.refuse_other_mode()  # a switched docker.mode must not start a second runtime
        with self._timed("snapshot") as taken:
            snapshot = taken["snapshot"] = self._snapshot(old, desired, plan.reason)
        self.at_step("snapshot")
        self._remove_leftovers(containers)
        with self._timed("create"):
            new_id = self.engine.create(desired, name=self.canonical + NEXT_SUFFIX)
        self.journal.begin(new_id=new_id, old_id=old.id if old else None, image=desired.image, at=_iso(self.clock()))
        self.journal.step("create")
        # Rename while the old one still runs: the window between its stop and the
        # new one's start is then only the engine's own stop and start.
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
        self.journal.step("start")
        try:
            with self._timed("health", container=new_id[:12]):
                self._health_gate(new_id, image=desired.image)
        except HealthGateFailed as failed:
            with self._timed("rollback"):
                self._roll_back(new_id, old.id if old else None)
            raise HealthGateFailed(failed.reason, failed.logs) from None
        self.journal.step("health")
        if old is not None:
            self.engine.remove(old.id)
        self.journal.finish()
        self._prune_kept(desired)
        return Outcome("applied", plan.reason, container_id=new_id, snapshot=snapshot)

    @contextlib.contextmanager
    def _timed(self, step: str, **fields: object) -> Iterator[dict[str, object]]:
        """Log one step of a swap with its duration (info; warning when it failed); the body may add fields."""
        started = self.monotonic()
        extra: dict[str, object] = {"step": step, **fields}
        try:
            yield extra
        except BaseException as exc:
            extra.update(seconds=round(self.monotonic() - started, 3), error=str(exc) or type(exc).__name__)
            log.warning("swap step %s failed", step, extra=extra)
            raise
        extra["seconds"] = round(self.monotonic() - started, 3)
        log.info("swap step %s", step, extra=extra)

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

    def _prune_kept(self, desired: DesiredContainer) -> None:
        """Keep the images of the current container and of the newest snapshots; untag the rest."""
        env = self.paths.environment
        wanted = {keep_reference(desired.image, env)}
        wanted |= {keep_reference(s.image, env) for s in list_snapshots(self.paths.snapshots) if s.image}
        try:
            self.engine.prune_kept(wanted)
        except ControllerError as exc:
            log.warning("could not prune kept images", extra={"reason": str(exc)})

    def _snapshot(self, old: ContainerState | None, desired: DesiredContainer, reason: str) -> str:
        return self._write_snapshot(
            old, desired, reason, image_id=old.image_id if old else None, record=old.raw if old else None
        )

    def _remove_leftovers(self, containers: dict[str, Any]) -> None:
        leftover = containers.get(self.canonical + NEXT_SUFFIX)
        if leftover is not None:
            self.engine.remove(leftover.id)

    def _health_gate(self, container_id: str, *, image: str) -> None:
        """Healthy (HEALTHCHECK) or running ``stable`` seconds without a restart, within ``timeout``."""
        has_check = self.engine.image_has_healthcheck(image)
        deadline = self.monotonic() + self.health.timeout
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
                return
            if has_check and state.health == "unhealthy":
                raise HealthGateFailed("the new container's HEALTHCHECK reports unhealthy", self._logs(container_id))
            if not has_check and state.running:
                stable_since = stable_since or self.monotonic()
                if self.monotonic() - stable_since >= self.health.stable:
                    return
            self.sleep(0.2)
        raise HealthGateFailed(
            f"the new container was not healthy within {self.health.timeout}s", self._logs(container_id)
        )

    def _logs(self, container_id: str) -> str:
        return self.engine.logs_tail(container_id, lines=LOG_LINES)

    def _roll_back(self, new_id: str, old_id: str | None) -> None:
        """Remove the new container, give the old one its name back and start it."""
        self.engine.remove(new_id)
        if old_id is not None:
            self.engine.rename(old_id, self.canonical)
            self.engine.start(old_id)
            self._wait_running(old_id)
        self.journal.finish()

    def _wait_running(self, container_id: str, *, timeout: float = 30) -> None:
        deadline = self.monotonic() + timeout
        while self.monotonic() < deadline:
            state = self.engine.inspect(container_id)
            if state is not None and state.running:
                return
            self.sleep(0.1)

    def recover(self) -> str | None:
        """Converge after a crash from the journal and what the engine shows; say what was done."""
        if leave_foreign_journal(self.journal, mode=CONTAINER):
            return None
        journal = self.journal.read()
        containers = self.engine.runtime_containers()
        current = containers.get(self.canonical)
        previous = containers.get(self.canonical + PREVIOUS_SUFFIX)
        leftover = containers.get(self.canonical + NEXT_SUFFIX)
        done: list[str] = []
        if leftover is not None:
            self.engine.remove(leftover.id)
            done.append("removed a half-created container")
        if journal and "health" in journal.get("steps", []) and previous is not None:
            self.engine.remove(previous.id)  # the new one had passed: finish
            done.append("finished a swap that had passed its health gate")
        elif journal and journal.get("new_id") and "health" not in journal.get("steps", []):
            done += self._undo(journal, current, previous)
        elif current is None and previous is not None:
            self.engine.rename(previous.id, self.canonical)
            self.engine.start(previous.id)
            done.append("restored the previous container")
        elif current is not None and previous is not None:
            self.engine.remove(previous.id)
            done.append("removed a stale previous container")
        self.journal.finish()
        return "; ".join(done) or None

    def _undo(self, journal: dict[str, Any], current: Any, previous: Any) -> list[str]:
        new_id, old_id = journal.get("new_id"), journal.get("old_id")
        if current is not None and current.id == new_id:
            self.engine.remove(str(new_id))
            current = None
        elif current is None or current.id != old_id:
            self.engine.remove(str(new_id))
        old = previous if previous is not None and previous.id == old_id else current
        if old is not None:
            if old.name != self.canonical:
                self.engine.rename(old.id, self.canonical)
            if not old.running:
                self.engine.start(old.id)
            self._wait_running(old.id)
        return ["undid an interrupted swap: the previous container runs again"]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
