"""``EnvironmentService``: every operation on one environment, for the CLI, the daemon and the API alike.

sync, plan, verify, rollback, suspend, resume, recover, history and status
live here once, so the entry points cannot drift apart.  The service owns the
pass lock and crash recovery; what it acts through is built in ``wiring`` or
passed in (tests hand it a fake engine), and what it writes goes through
``records.store``.  ``audit_hooks`` hear every audit event written, with the
pass's facts it does not record (``image``, ``signer``, ``image_signer``,
``log``); ``notice_hooks`` hear the moments that are no audit event
(``progressing``, ``unchanged`` at the head, ``stale``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controller import wiring
from controller.config import Config, load_config
from controller.engine.port import RuntimeView
from controller.errors import ConfigError, Reason, Refused, Retryable
from controller.reconcile import (
    HeadApprovals,
    ImageCheck,
    Pass,
    PassContext,
    PassOptions,
    PassWorld,
    PlanAnswer,
    current_container,
    head_approvals,
    remembered_revision,
)
from controller.recording import AuditEvent, PassResult, record, rolled_back_to, suspension
from controller.records.dotenv import read_dotenv
from controller.records.files import write_failure
from controller.records.host_init import init_layout, next_steps
from controller.records.locks import pass_lock
from controller.records.snapshots import Snapshot, find_snapshot, restorable
from controller.records.status import Status
from controller.records.store import History, StateWriteFailed, Store
from controller.rollout.base import Applier, Outcome, Recovery, RecoveryUnsettled, checkpoint
from controller.signatures.commits.policy import VerifiedCache
from controller.signatures.commits.verification import Verification, load_policy, verify_revision
from controller.signatures.images.verifier import ImageVerdict
from controller.source import GitSource
from controller.wiring import validate_file

log = logging.getLogger("dreichor.service")
Clock = Callable[[], datetime]
AuditHook = Callable[[dict[str, Any]], None]
STALE_AFTER_INTERVALS = 5

__all__ = ["EnvironmentService", "History", "PassOptions", "PassResult", "PlanAnswer", "Verification"]
__all__ += ["init_layout", "next_steps", "validate_file"]  # for the command line, which imports no record


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EnvironmentService:
    """The one object per environment that every entry point calls."""

    def __init__(
        self,
        config: Config,
        *,
        engine: Callable[[], RuntimeView] | None = None,
        source: GitSource | None = None,
        image_check: ImageCheck | None = None,
        clock: Clock = _utcnow,
        at_step: Callable[[str], None] = checkpoint,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.paths = config.paths
        self.clock = clock
        self.at_step = at_step
        self.sleep = sleep
        self.monotonic = monotonic
        self._connect = engine or (lambda: wiring.connect_engine(config))
        self._engine: RuntimeView | None = None
        self.source = source or wiring.git_source(config)
        self.store = Store(config, clock=clock)
        self.images = wiring.ImageTrust(config) if config.image.signatures is not None else None
        self.world = PassWorld(
            config=config,
            source=self.source,
            engine=self.engine,
            rollout=self.rollout,
            cache=VerifiedCache(),
            progress=self._progress,
            at_step=at_step,
        )
        if self.images is not None:
            self.world.image_check, self.world.image_signer_trusted = self.images.check, self.images.trusted_signer
        self.world.image_check = image_check or self.world.image_check
        self.audit_hooks: list[AuditHook] = []
        self.notice_hooks: list[AuditHook] = []

    @classmethod
    def from_file(cls, config_file: Path) -> EnvironmentService:
        """The service for the environment a ``controller.yaml`` describes."""
        return cls(load_config(config_file))

    # -- the world ---------------------------------------------------------------------------

    def engine(self) -> RuntimeView:
        """The engine, connected on first use and again after a failure."""
        if self._engine is None:
            self._engine = self._connect()
        return self._engine

    def rollout(self) -> Applier:
        """The rollout for this environment and its ``docker.mode``."""
        return wiring.make_rollout(
            self.config,
            self.engine(),
            clock=self.clock,
            sleep=self.sleep,
            monotonic=self.monotonic,
            at_step=self.at_step,
        )

    def close(self) -> None:
        """Drop the engine connection."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # -- passes ------------------------------------------------------------------------------

    def sync(self, options: PassOptions | None = None) -> PassResult:
        """One pass under the pass lock, after finishing a swap a crash interrupted."""
        with pass_lock(self.paths.pass_lock):
            try:
                recovered = self.rollout().recover() if self.paths.journal.exists() else None
            except Retryable as exc:  # an engine that cannot be reached to finish the swap: recorded, retried
                return self._pass(options or PassOptions(), unrecovered=exc)
            except RecoveryUnsettled as exc:  # a full or read-only state folder: what was undone is still told
                return self._pass(options or PassOptions(), unrecovered=exc, recovered=exc.recovery)
            return self._pass(options or PassOptions(), recovered=recovered)

    def plan(self) -> PassResult:
        """What the next sync would do: every step up to the plan, nothing changed or recorded."""
        return self.plan_report().result

    def plan_report(self) -> PlanAnswer:
        """``plan`` with what its steps learned before the end (the head, its signer, the desired image)."""
        run = Pass(self.world, self.store.load(), PassOptions(dry_run=True), now=self.clock())
        return run.learned(self._pass(PassOptions(dry_run=True), run=run))

    def _pass(
        self,
        options: PassOptions,
        *,
        recovered: Recovery | None = None,
        unrecovered: Retryable | RecoveryUnsettled | None = None,
        run: Pass | None = None,
    ) -> PassResult:
        damaged = self.store.damage(keep_aside=not options.dry_run)
        previous = self.store.load()
        run = run or Pass(self.world, previous, options, now=self.clock())
        result = PassResult("failed", "the pass did not finish", code=Reason.INTERNAL_ERROR)
        try:
            if damaged:
                result = PassResult("refused", damaged, code=Reason.STATUS_UNREADABLE)
            elif isinstance(unrecovered, OSError):
                reason = f"cannot settle the swap a crash interrupted: {write_failure(unrecovered, self.paths.state)}"
                result = PassResult("failed", reason, retryable=True, code=Reason.STATE_IO)
            elif unrecovered is not None:
                reason = f"cannot finish the swap a crash interrupted: {unrecovered.reason}"
                result = PassResult("failed", reason, retryable=True, code=unrecovered.code)
            else:
                result = run.run()
        finally:
            if not options.dry_run:
                result = self._record(previous, run, result, recovered=recovered)
            if result.code == Reason.ENGINE_UNAVAILABLE:
                self.close()
        return result

    def _record(self, previous: Status, run: Pass, result: PassResult, *, recovered: Recovery | None) -> PassResult:
        self.at_step("record")  # returns the result: failed when the watermark or the audit log took no write
        stale_after = timedelta(seconds=STALE_AFTER_INTERVALS * self.config.source.interval)
        recovered_fields = recovered.fields() if recovered else None
        report = run.report(result, recovered=recovered_fields)
        status, events = record(previous, report, now=run.ctx.now, stale_after=stale_after)
        try:
            self.store.remember(previous, status, guard=run.ctx.guard)
        except OSError as exc:  # the guard must not lag: the pass is not done
            why = f"cannot write the watermark {self.paths.watermark}: {exc.strerror or exc}"
            result = PassResult("failed", why, retryable=True, code=Reason.STATE_IO, plan=result.plan)
            report = run.report(result, recovered=recovered_fields)
            status, events = record(previous, report, now=run.ctx.now, stale_after=stale_after)
        facts = {key: getattr(report, key) for key in ("image", "signer", "image_signer")} | {"log": report.logs}
        unwritten: StateWriteFailed | None = None
        for event in events:  # each one written, or held with its time for the next pass that can write
            at = recovered.at if recovered and event.event == "recovered" else run.ctx.now
            try:
                self.emit(event, at=at, facts=facts)
            except StateWriteFailed as exc:
                unwritten = exc
        if unwritten is not None and result.code != Reason.STATE_IO:
            why = f"{unwritten.strerror}; the events are kept for the next pass that can write"
            result = PassResult("failed", why, retryable=True, code=Reason.STATE_IO, plan=result.plan)
        self.store.write(status)
        if status.source.stale and not previous.source.stale:
            self._notice("stale", reason=status.source.last_error or "", code=str(Reason.FETCH_FAILED))
        if result.result == "unchanged" and report.target and report.target == report.head:
            self._notice("unchanged", revision=report.target, **facts)
        return result

    def _progress(self, ctx: PassContext) -> None:
        status = self.store.load()
        status.phase, status.updated_at = "Progressing", self.clock()
        self.store.write(status)
        image, signer = ctx.desired.image if ctx.desired else None, ctx.verdict.signer if ctx.verdict else None
        self._notice("progressing", revision=ctx.target, image=image, signer=signer)

    def _notice(self, kind: str, **fields: Any) -> None:
        """Tell the notice hooks a moment of the pass that is no audit event."""
        self._tell(self.notice_hooks, {"event": kind, **fields})

    # -- crash recovery ----------------------------------------------------------------------

    def recover(self) -> str | None:
        """Finish or undo a swap a crash interrupted (at the daemon's start); say what was done."""
        with pass_lock(self.paths.pass_lock):  # the record too: a sync waiting for it must not be overwritten
            try:
                done, unsettled = self.rollout().recover(), None
            except RecoveryUnsettled as exc:  # the undo happened; the state folder takes no write
                done, unsettled = exc.recovery, exc
            if done:
                log.warning("recovered from an interrupted run", extra={"done": done.done})
                self.emit(AuditEvent("recovered", done.fields()), at=done.at)  # held on a full disk
                status = self.store.read()
                if status is not None:
                    self.store.write(status)  # the audit anchor follows every append
            if unsettled is not None:
                raise StateWriteFailed(self.paths.journal, unsettled)
        return done.done if done else None

    # -- verification ------------------------------------------------------------------------

    def verify(self, rev: str | None = None) -> Verification:
        """Fetch (with the same credentials as a pass), then verify ``rev`` or the head."""
        head = self.source.fetch()
        revision = self.source.resolve(rev) if rev else head
        applied = remembered_revision(self.config, self.store.load(), self.engine, self.source)
        try:
            verdict = verify_revision(
                self.source,
                load_policy(self.config),
                mode=self.config.trust.mode,
                applied=applied,
                head=revision,
                now=self.clock(),
            )
        except Refused as exc:
            return Verification(revision, None, exc)
        try:
            image = self.images.declared(self.source, revision) if self.images else None
        except Refused as exc:
            return Verification(revision, verdict, exc)
        return Verification(revision, verdict, image=image)

    def verify_image(self, reference: str) -> ImageVerdict:
        """The cosign signature of ``reference`` (``repo@sha256:…``) against ``image.signatures.keys``."""
        return wiring.ImageTrust(self.config).verify(reference)

    def approvals(self) -> HeadApprovals:
        """For the verified head's content: who approved, who is missing, when each approval expires."""
        applied = remembered_revision(self.config, self.store.load(), self.engine, self.source)
        return head_approvals(self.config, self.source, applied=applied, now=self.clock())

    # -- operator actions --------------------------------------------------------------------

    def rollback(self, snapshot_id: str | None = None) -> Snapshot:
        """Break-glass: restore a snapshot, then suspend so the next poll does not undo it."""
        snapshot = find_snapshot(self.paths.snapshots, snapshot_id, environment=self.config.environment)
        try:
            dotenv = read_dotenv(self.paths.dotenv)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {self.paths.dotenv}: {exc}") from None
        checked = restorable(snapshot, repository=self.config.image.repository, dotenv=dotenv)
        with pass_lock(self.paths.pass_lock):
            outcome = self._restore_suspended(checked, reason=f"rollback to snapshot {snapshot.id}")
            now = self.clock()
            fields = {"snapshot": snapshot.id, "revision": snapshot.revision, "image": snapshot.image}
            self.emit(AuditEvent("rollback", fields), at=now)
            status = rolled_back_to(
                self.store.load(),
                revision=snapshot.revision,
                image=snapshot.image,
                snapshot=snapshot.id,
                taken=outcome.snapshot,
                container=current_container(self.engine, self.config.environment),
                now=now,
            )
            self.store.write(status)
        return snapshot

    def suspend(self, reason: str = "no reason given", *, by: str = "unknown") -> None:
        """Stop acting on new revisions, recording who and why (waits for a pass in progress, like a pass does)."""
        with pass_lock(self.paths.pass_lock):
            self._set_suspended(True, reason=reason, by=by)

    def resume(self, reason: str = "resumed by an operator", *, by: str = "unknown") -> None:
        """Act on new revisions again, from the next pass (waits for a pass in progress)."""
        with pass_lock(self.paths.pass_lock):
            self._set_suspended(False, reason=reason, by=by)

    def _restore_suspended(self, snapshot: Snapshot, *, reason: str) -> Outcome:
        """Restore with the marker down, so a crash mid-restore leaves the environment suspended;
        a restore that fails takes the marker away again, and only a done one is recorded as suspended."""
        placed = self.store.place_marker(reason)
        try:
            outcome = self.rollout().restore(snapshot)
        except Exception:
            if placed:
                self.store.lift_marker()
            raise
        if placed:
            self._record_suspension(True, reason=reason, by="rollback")
        return outcome

    def _set_suspended(self, suspended: bool, *, reason: str, by: str) -> None:
        changed = self.store.place_marker(f"{by}: {reason}") if suspended else self.store.lift_marker()
        if changed:
            self._record_suspension(suspended, reason=reason, by=by)

    def _record_suspension(self, suspended: bool, *, reason: str, by: str) -> None:
        now = self.clock()
        self.emit(AuditEvent("suspended" if suspended else "resumed", {"reason": reason, "by": by}), at=now)
        status = self.store.read()
        if status is not None:
            self.store.write(suspension(status, suspended=suspended, now=now, by=by, reason=reason))

    # -- reading -----------------------------------------------------------------------------

    def status(self) -> Status | None:
        """The status file, or None when there is none (yet) or it cannot be read."""
        return self.store.read()

    def history(self, *, verify: bool = False) -> History:
        """Snapshots and audit events; with ``verify``, whether the chain holds and reaches its anchor."""
        return self.store.history(verify=verify)

    # -- telling -----------------------------------------------------------------------------

    def emit(self, event: AuditEvent, *, at: datetime, facts: dict[str, Any] | None = None) -> None:
        """Append an audit event, then tell the hooks (with ``facts`` the event does not record, if given);
        a hook never fails the caller, a state folder that takes no write does (``StateWriteFailed``, the
        event held for the next append)."""
        for written in self.store.append(event.event, event.fields, at=at):
            self._tell(self.audit_hooks, {**(facts or {}), **written})

    def _tell(self, hooks: list[AuditHook], event: dict[str, Any]) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                log.exception("an audit hook failed", extra={"event": event.get("event")})
