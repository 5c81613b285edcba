"""Applying a plan in Swarm mode (docs/design.md §13): snapshot the service spec, update, gate, restore.

Swarm performs the swap itself, stop-first, so there is never a moment with
two tasks of one environment; what stays ours is the safety around it.  The
service spec and its version are snapshotted and journaled before the update;
the update counts only when Swarm says ``completed`` *and* the live task is of
the new spec, on the new digest, and healthy by our gate; any ``rollback_*``
state is a rollback, never a success.  On failure the snapshot's spec is put
back by us, since Swarm remembers only one previous spec.  A crash anywhere
before the gate passed is undone at the next start from the journal.  The
sequence around these steps is ``base``'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from controller.engine.modes import SWARM
from controller.engine.port import ServiceRuntime, ServiceState, TaskState
from controller.model.containers import ContainerState
from controller.model.desired import DesiredContainer
from controller.rollout.base import LOG_LINES, HealthGateFailed, RolloutBase

log = logging.getLogger("dreichor.swarm")
RESTORE_TIMEOUT = 60  # seconds for the restored spec's task to run again
POLL = 0.25
IN_FLIGHT = frozenset({"updating", "rollback_started"})
ROLLED_BACK_BY_SWARM = "Swarm rolled the update back ({state}): {message}"
PAUSED_BY_SWARM = "Swarm paused the update: {message}"


@dataclass(frozen=True)
class Update:
    """A service update in flight: the service before it, and the tasks that existed then."""

    before: ServiceState | None
    known: frozenset[str]
    desired: DesiredContainer


class SwarmRollout(RolloutBase[ServiceRuntime, ServiceState | None, Update]):
    """Applies plans for one environment's service."""

    mode = SWARM

    def _pull(self, desired: DesiredContainer, fields: dict[str, object]) -> DesiredContainer:
        """Refuse a swarm the runtime cannot be placed on, then pull on the manager."""
        fields["node"] = self.engine.check_placement()
        self.engine.pull(desired.image, auth=self.auth)
        return desired

    def _prior(self) -> ServiceState | None:
        return self.engine.service()

    def _runs(self, prior: ServiceState | None) -> bool:
        return prior is not None

    def _snapshot(self, prior: ServiceState | None, desired: DesiredContainer, reason: str) -> str:
        """The service spec and its version, and the runtime as it ran: what a restore puts back."""
        old: ContainerState | None = self.engine.current() if prior else None
        return self._write_snapshot(old, desired, reason, image_id=None, record=_service_record(prior))

    def _prepare(self, prior: ServiceState | None, desired: DesiredContainer) -> Update:
        known = frozenset(t.id for t in self.engine.tasks()) if prior else frozenset()
        return Update(prior, known, desired)

    def _intent(self, prior: ServiceState | None, swap: Update, desired: DesiredContainer) -> dict[str, Any]:
        return {
            "mode": SWARM,
            "service": prior.id if prior else None,
            "version": prior.version if prior else None,
            "spec": prior.spec if prior else None,
            "image": desired.image,
        }

    def _swap(self, swap: Update) -> None:
        """Let an update in flight settle, then update (Swarm stops the old task before it starts the new)."""
        with self._timed("update", service=self.canonical):
            self._wait_settled()
            self.engine.deploy(swap.desired, auth=self.auth)
        self.journal.step("update", gate_deadline=self._gate_deadline())

    def _gate(self, swap: Update, desired: DesiredContainer) -> str | None:
        return self._health_gate(desired, updated=swap.before is not None, known=set(swap.known)).container_id

    def _undo(self, swap: Update) -> None:
        self._restore(swap.before.spec if swap.before else None)

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
        ended = next((t for t in tasks if t.current and t.image == desired.image and t.ended), None)
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

    def _recover(self) -> str | None:
        """After a crash: an update that passed its gate is kept, any other is undone from the journal
        (``base`` clears the journal after)."""
        journal = self.journal.read()
        if not journal:
            return None
        steps = journal.get("steps") or []
        if "health" in steps:
            return "finished an update that had passed its health gate"
        spec = journal.get("spec")
        current = self.engine.service()
        if current is not None and spec is not None and current.spec == spec:
            return "found the interrupted update had not begun: the previous service runs"
        self._restore(spec if isinstance(spec, dict) else None)
        if spec is None:
            return "undid an interrupted first deploy: removed the half-made service"
        return "undid an interrupted update: the previous service spec runs again"


def _service_record(service: ServiceState | None) -> dict[str, Any] | None:
    """The service as a snapshot keeps it: id, spec version and the whole spec."""
    return {"Service": {"ID": service.id, "Version": service.version, "Spec": service.spec}} if service else None
