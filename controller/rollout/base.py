"""The apply sequence, written once: pull, refuse, snapshot, journal, swap, health gate, undo, finish.

The order is the safety argument, and it is the same in both modes.
Everything that can fail slowly (the pull, a container's create) happens
before the running runtime is touched; the other mode's unfinished change or
runtime is refused before anything is written; the prior state is snapshotted
and an intent journal, fsynced before the swap and updated at every step, lets
a restarted controller finish or undo a swap that a crash interrupted; a swap
that fails its health gate is undone before the failure is raised.  A mode
(``container``, ``swarm``) supplies only what differs: how it reads its
runtime, swaps, gates, undoes and recovers.  Every step is logged with its
duration, in both modes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from controller.engine.modes import leave_foreign_journal, refuse_foreign_journal
from controller.engine.port import RuntimeView
from controller.errors import ControllerError, Reason, Refused
from controller.model.config import HealthConfig, HostPaths
from controller.model.containers import ContainerState
from controller.model.desired import LABEL_REVISION, DesiredContainer, runtime_mounts
from controller.model.plan import Plan
from controller.records.files import atomic_write
from controller.records.snapshots import Snapshot, snapshot_id, write_snapshot

log = logging.getLogger("dreichor.rollout")
Clock = Callable[[], datetime]


class ModeEngine(RuntimeView, Protocol):
    """What the shared sequence itself asks of either mode's engine port."""

    def refuse_other_mode(self) -> None:
        """Before creating the runtime: refuse when the other mode's runtime of this environment is here."""
        ...


EngineT = TypeVar("EngineT", bound=ModeEngine)
PriorT = TypeVar("PriorT")  # the mode's runtime as it was before the change
SwapT = TypeVar("SwapT")  # the mode's change in flight: what its swap, gate and undo share
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


@dataclass(frozen=True)
class Recovery:
    """What crash recovery did, when, and to which change (the journal's revision and new container)."""

    done: str
    at: datetime
    revision: str | None = None
    container: str | None = None

    def fields(self) -> dict[str, str]:
        """The ``recovered`` audit event's fields."""
        named = {"revision": self.revision, "container": self.container}
        return {"reason": self.done, **{key: value for key, value in named.items() if value}}


class RecoveryUnsettled(OSError):
    """Recovery acted (or had nothing to do) but could not clear its journal: the state folder took no write.

    ``recovery`` is what was done, to be recorded when the folder takes writes again.
    """

    def __init__(self, recovery: Recovery | None, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc), exc.filename)
        self.recovery = recovery


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

    def step(self, name: str, **fields: Any) -> None:
        """Record a completed step (and ``fields`` learned with it)."""
        self.data["steps"].append(name)
        self.data.update(fields)
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
    """What the pass and the service need from a rollout, in either mode (``ContainerRollout``, ``SwarmRollout``)."""

    def apply(self, plan: Plan, desired: DesiredContainer) -> Outcome:
        """Carry out ``plan``; raise ``HealthGateFailed`` after rolling back."""
        ...

    def restore(self, snapshot: Snapshot) -> Outcome:
        """Break-glass: bring back what a snapshot recorded."""
        ...

    def recover(self) -> Recovery | None:
        """Converge after a crash; say what was done (``RecoveryUnsettled`` when its journal stays)."""
        ...


class RolloutBase(Generic[EngineT, PriorT, SwapT]):
    """The apply sequence over a mode's engine; the mode supplies its runtime, swap, gate, undo and recover."""

    mode: str  # which mode's journal this rollout writes and may act on (``engine.modes``)

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
        """Carry out ``plan``; raise ``HealthGateFailed`` after undoing a change that failed its gate."""
        if plan.action == "nothing":
            return Outcome("unchanged", plan.reason)
        with self._timed("pull", image=desired.image) as pulled:
            desired = self._pull(desired, pulled)
        self.at_step("pull")
        prior = self._prior()
        refuse_foreign_journal(self.journal, mode=self.mode)
        if not self._runs(prior):
            self.engine.refuse_other_mode()  # a switched docker.mode must not start a second runtime
        with self._timed("snapshot") as taken:
            snapshot = taken["snapshot"] = self._snapshot(prior, desired, plan.reason)
        self.at_step("snapshot")
        swap = self._prepare(prior, desired)
        revision = desired.labels.get(LABEL_REVISION)
        self.journal.begin(**self._intent(prior, swap, desired), revision=revision, at=_iso(self.clock()))
        self._swap(swap)
        try:
            with self._timed("health", **self._gate_fields(swap)):
                container_id = self._gate(swap, desired)
        except HealthGateFailed as failed:
            with self._timed("rollback"):
                restored = self._undo(swap)
            self.journal.finish()
            reason = f"{failed.reason}; {restored}" if restored else failed.reason
            raise HealthGateFailed(reason, failed.logs) from None
        self.journal.step("health")
        self._finish(swap, desired)
        self.journal.finish()
        return Outcome("applied", plan.reason, container_id=container_id, snapshot=snapshot)

    def recover(self) -> Recovery | None:
        """Converge after a crash from the journal and what the engine shows; say what was done, to what.

        The other mode's journal is left alone (with a warning): only that mode can finish it.  The
        journal is cleared last; a state folder that does not let it go raises ``RecoveryUnsettled``
        with what was done, so the undo is recorded once the folder takes writes again.
        """
        if leave_foreign_journal(self.journal, mode=self.mode):
            return None
        journal = self.journal.read() or {}
        done = self._recover()
        recovery = None
        if done:
            revision, container = journal.get("revision"), journal.get("new_id")
            recovery = Recovery(
                done,
                at=self.clock(),
                revision=revision if isinstance(revision, str) else None,
                container=container[:12] if isinstance(container, str) else None,
            )
        try:
            self.journal.finish()
        except OSError as exc:
            raise RecoveryUnsettled(recovery, exc) from None
        return recovery

    # -- what each mode supplies ------------------------------------------------------------

    def _pull(self, desired: DesiredContainer, fields: dict[str, object]) -> DesiredContainer:
        """Make the image available before anything is touched; return the spec to run (``fields``: the log's)."""
        raise NotImplementedError

    def _prior(self) -> PriorT:
        """The mode's runtime as it is now, before the change."""
        raise NotImplementedError

    def _runs(self, prior: PriorT) -> bool:
        """Whether ``prior`` holds a runtime of this mode (if not, the other mode's is looked for)."""
        raise NotImplementedError

    def _snapshot(self, prior: PriorT, desired: DesiredContainer, reason: str) -> str:
        """Write the snapshot of ``prior``; return its id."""
        raise NotImplementedError

    def _prepare(self, prior: PriorT, desired: DesiredContainer) -> SwapT:
        """What can be done before the journal begins without touching the running runtime."""
        raise NotImplementedError

    def _intent(self, prior: PriorT, swap: SwapT, desired: DesiredContainer) -> dict[str, Any]:
        """The journal's fields: what a restarted controller needs to finish or undo the swap."""
        raise NotImplementedError

    def _swap(self, swap: SwapT) -> None:
        """Replace the running runtime, each step journaled and timed."""
        raise NotImplementedError

    def _gate_fields(self, swap: SwapT) -> dict[str, object]:
        """Extra fields for the health step's log line."""
        return {}

    def _gate(self, swap: SwapT, desired: DesiredContainer) -> str | None:
        """Wait for the new runtime to prove healthy; its container id, or ``HealthGateFailed``."""
        raise NotImplementedError

    def _undo(self, swap: SwapT) -> str | None:
        """Bring back the prior runtime after a failed gate; what is wrong with it, when it is not healthy again."""
        raise NotImplementedError

    def _finish(self, swap: SwapT, desired: DesiredContainer) -> None:
        """Tidy up after a passed gate (the journal still names the swap)."""

    def _recover(self) -> str | None:
        """This mode's own recovery from its journal."""
        raise NotImplementedError

    # -- shared by the modes ----------------------------------------------------------------

    def _gate_deadline(self) -> str:
        """When the health gate that begins now gives up: journaled with the step that starts the new
        runtime, so a recovery after a kill in the gate can say how far past it the runtime ran."""
        return _iso(self.clock() + timedelta(seconds=self.health.timeout))

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


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
