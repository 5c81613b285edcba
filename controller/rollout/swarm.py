"""Applying a plan in Swarm mode (docs/design.md §13): snapshot the service spec, update, gate, restore.

Swarm performs the swap itself, stop-first, so there is never a moment with
two tasks of one environment; what stays ours is the safety around it.  The
service spec and its version are snapshotted and journaled before the update;
the update counts only when Swarm says ``completed`` *and* the live task is of
the new spec, on the new digest, and healthy by our gate; any ``rollback_*``
state is a rollback, never a success.  On failure the snapshot's spec is put
back by us, since Swarm remembers only one previous spec.  A crash anywhere
before the gate passed is undone at the next start from the journal.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from controller.containers import ContainerState
from controller.contract import DesiredContainer
from controller.engine.modes import SWARM, leave_foreign_journal, refuse_foreign_journal
from controller.engine.port import ServiceRuntime, ServiceState, TaskState
from controller.plan import Plan
from controller.rollout.base import HealthGateFailed, Outcome, RolloutBase

log = logging.getLogger("dreichor.swarm")
LOG_LINES = 50
RESTORE_TIMEOUT = 60  # seconds for the restored spec's task to run again
POLL = 0.25
IN_FLIGHT = frozenset({"updating", "rollback_started"})
ROLLED_BACK_BY_SWARM = "Swarm rolled the update back ({state}): {message}"
PAUSED_BY_SWARM = "Swarm paused the update: {message}"


class SwarmRollout(RolloutBase[ServiceRuntime]):
    """Applies plans for one environment's service."""

    def apply(self, plan: Plan, desired: DesiredContainer) -> Outcome:
        """Carry out ``plan``; raise ``HealthGateFailed`` after restoring the prior spec."""
        if plan.action == "nothing":
            return Outcome("unchanged", plan.reason)
        self.engine.check_placement()
        self.engine.pull(desired.image, auth=self.auth)
        self.at_step("pull")
        before = self.engine.service()
        refuse_foreign_journal(self.journal, mode=SWARM)
        if before is None:
            self.engine.refuse_other_mode()  # a switched docker.mode must not start a second runtime
        snapshot = self._snapshot(before, self.engine.current() if before else None, desired, plan.reason)
        self.at_step("snapshot")
        self.journal.begin(
            mode=SWARM,
            service=before.id if before else None,
            version=before.version if before else None,
            spec=before.spec if before else None,
            image=desired.image,
            at=self.clock().astimezone(UTC).isoformat(),
        )
        known = {t.id for t in self.engine.tasks()} if before else set()
        self._wait_settled()
        self.engine.deploy(desired, auth=self.auth)
        self.journal.step("update")
        try:
            task = self._health_gate(desired, updated=before is not None, known=known)
        except HealthGateFailed as failed:
            self._restore(before.spec if before else None)
            self.journal.finish()
            raise HealthGateFailed(failed.reason, failed.logs) from None
        self.journal.step("health")
        self.journal.finish()
        return Outcome("applied", plan.reason, container_id=task.container_id, snapshot=snapshot)

    def _snapshot(
        self, before: ServiceState | None, old: ContainerState | None, desired: DesiredContainer, reason: str
    ) -> str:
        """The service spec and its version, and the runtime as it ran: what a restore puts back."""
        return self._write_snapshot(old, desired, reason, image_id=None, record=_service_record(before))

    # -- the health gate ---------------------------------------------------------------------

    def _health_gate(self, desired: DesiredContainer, *, updated: bool, known: set[str]) -> TaskState:
        """Swarm's update state and our gate: the live task of the new spec, healthy within ``timeout``."""
        has_check = self.engine.image_has_healthcheck(desired.image)
        deadline = self.monotonic() + self.health.timeout
        stable: tuple[str, float] | None = None  # (task id, since): a restart starts a new task
        while self.monotonic() < deadline:
            service = self.engine.service()
            if service is None:
                raise HealthGateFailed("the service disappeared during the update", "")
            self._judge_update_state(service)
            tasks = self.engine.tasks(service)
            self._judge_tasks([t for t in tasks if t.id not in known], desired)
            live = next((t for t in tasks if t.live and t.current and t.image == desired.image), None)
            settled = service.update_state == "completed" or (not updated and service.update_state is None)
            if live is None or live.state != "running" or not settled:
                self.sleep(POLL)
                continue
            if has_check:
                return live  # Swarm holds a task at "starting" until its HEALTHCHECK passes
            if stable is None or stable[0] != live.id:
                stable = (live.id, self.monotonic())
            if self.monotonic() - stable[1] >= self.health.stable:
                return live
            self.sleep(POLL)
        raise HealthGateFailed(f"the new task was not healthy within {self.health.timeout}s", self._logs())

    def _judge_update_state(self, service: ServiceState) -> None:
        state = service.update_state or ""
        if state.startswith("rollback"):
            message = service.update_message or "the new task failed"
            raise HealthGateFailed(ROLLED_BACK_BY_SWARM.format(state=state, message=message), self._logs())
        if state == "paused":
            raise HealthGateFailed(PAUSED_BY_SWARM.format(message=service.update_message), self._logs())

    def _judge_tasks(self, tasks: list[TaskState], desired: DesiredContainer) -> None:
        """A new task of the new spec that ended (crashed, failed its HEALTHCHECK, was rejected) fails the gate."""
        ended = next((t for t in tasks if t.current and t.image == desired.image and _ended(t)), None)
        if ended is not None:
            why = f": {ended.message}" if ended.message else ""
            raise HealthGateFailed(f"the new task is {ended.state}{why}", self._logs())

    def _logs(self) -> str:
        return self.engine.logs_tail(self.canonical, lines=LOG_LINES)

    # -- undoing -----------------------------------------------------------------------------

    def _restore(self, spec: dict[str, Any] | None) -> None:
        """Put the snapshot's spec back (Swarm may already have) and wait for its task to run."""
        self._wait_settled()
        self.engine.restore(spec, auth=self.auth)
        if spec is not None:
            self._wait_running()

    def _wait_settled(self) -> None:
        """Let an update or rollback in flight finish first: interrupting one may leave two tasks running."""
        deadline = self.monotonic() + RESTORE_TIMEOUT
        while self.monotonic() < deadline:
            service = self.engine.service()
            if service is None or service.update_state not in IN_FLIGHT:
                return
            self.sleep(POLL)
        log.warning("a service update did not settle in time", extra={"service": self.canonical})

    def _wait_running(self) -> None:
        deadline = self.monotonic() + RESTORE_TIMEOUT
        while self.monotonic() < deadline:
            service = self.engine.service()
            settled = service is not None and not (service.update_state or "").endswith("started")
            settled = settled and service is not None and service.update_state != "updating"
            if settled and any(t.current and t.state == "running" for t in self.engine.tasks()):
                return
            self.sleep(POLL)
        log.warning("the restored service spec did not run again in time", extra={"service": self.canonical})

    def recover(self) -> str | None:
        """After a crash: an update that passed its gate is kept, any other is undone from the journal."""
        if leave_foreign_journal(self.journal, mode=SWARM):
            return None
        journal = self.journal.read()
        if not journal:
            self.journal.finish()
            return None
        steps = journal.get("steps") or []
        if "health" in steps:
            self.journal.finish()
            return "finished an update that had passed its health gate"
        spec = journal.get("spec")
        current = self.engine.service()
        if current is not None and spec is not None and current.spec == spec:
            self.journal.finish()
            return "found the interrupted update had not begun: the previous service runs"
        self._restore(spec if isinstance(spec, dict) else None)
        self.journal.finish()
        if spec is None:
            return "undid an interrupted first deploy: removed the half-made service"
        return "undid an interrupted update: the previous service spec runs again"


def _ended(task: TaskState) -> bool:
    return task.state in ("failed", "rejected", "complete", "orphaned")


def _service_record(service: ServiceState | None) -> dict[str, Any] | None:
    """The service as a snapshot keeps it: id, spec version and the whole spec."""
    return {"Service": {"ID": service.id, "Version": service.version, "Spec": service.spec}} if service else None
