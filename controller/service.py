"""``EnvironmentService``: every operation on one environment, for the CLI, the daemon and the API alike.

sync, plan, verify, rollback, suspend, resume, recover, history and status
live here once, so the entry points cannot drift apart.  The service owns the
pass lock and hands a pass (``reconcile.steps``, from crash recovery to the record) the world it
acts through, given by ``compose`` (tests hand it a fake engine); what it writes goes
through ``records.store``.  ``audit_hooks`` hear every audit event written, with the
pass's facts it does not record (``image``, ``signer``, ``image_signer``,
``log``); ``notice_hooks`` hear the moments that are no audit event
(``progressing``, ``unchanged`` at the head, ``stale``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.engine.port import RuntimeView
from controller.errors import ConfigError, ControllerError, Reason, Refused
from controller.model.config import DEFAULT_REPOSITORY, Config, HostPaths, load_config
from controller.model.desired import DesiredContainer, desired_from_bytes, parse_image
from controller.model.environments import ENVIRONMENTS
from controller.model.manifest import MAX_MANIFEST_BYTES, load_manifest
from controller.model.windows import DeployWindows
from controller.reconcile.approvals import HeadApprovals, head_approvals
from controller.reconcile.context import Clock, ImageStep, PassOptions, PassWorld
from controller.reconcile.record import AuditEvent, PassResult, held, rolled_back_to, suspension
from controller.reconcile.revisions import remembered_revision
from controller.reconcile.steps import Pass, PlanAnswer, current_container
from controller.records.deliveries import DeliveryMemory
from controller.records.dotenv import load_dotenv
from controller.records.host_init import init_layout, next_steps
from controller.records.locks import DaemonLock, LockHeld, hold_lock, pass_lock
from controller.records.snapshots import Snapshot, find_snapshot, restorable
from controller.records.status import HEALTHS, SYNC_STATES, BreakGlass, Status, read_status
from controller.records.store import History, StateWriteFailed, Store
from controller.rollout.base import Applier, Outcome, RecoveryUnsettled, checkpoint
from controller.signatures.approvals import DEFAULT_VALIDITY as APPROVAL_VALIDITY
from controller.signatures.approvals import write_approval
from controller.signatures.commits.policy import Verdict, VerifiedCache
from controller.signatures.commits.verification import verify_on_host
from controller.signatures.images.trust import ImageCheck
from controller.signatures.images.verifier import ImageVerdict
from controller.source.git import GitSource

log = logging.getLogger("dreichor.service")
AuditHook = Callable[[dict[str, Any]], None]

# What the entry points need of the tiers below, which they do not import (the contracts in pyproject.toml):
__all__ = [
    "BreakGlass",
    "EnvironmentService",
    "History",
    "PassOptions",
    "PassResult",
    "PlanAnswer",
    "Status",
    "Verification",
]
__all__ += ["APPROVAL_VALIDITY", "DeliveryMemory", "Snapshot", "held", "hold_lock", "init_layout", "next_steps"]
__all__ += ["HEALTHS", "SYNC_STATES", "DaemonLock", "LockHeld", "validate_file", "write_approval"]


@dataclass(frozen=True)
class Verification:
    """``verify``'s answer: the revision, and its verdict or the refusal."""

    revision: str
    verdict: Verdict | None
    refusal: Refused | None = None
    image: ImageVerdict | None = None  # the declared image's signature, when ``image.signatures`` is set


def validate_file(
    file: Path, *, environment: str, config_file: Path | None, data: bytes | None = None
) -> DesiredContainer:
    """Check a manifest offline; with a config, against its image repository and ``.env``.

    ``data``: the manifest's bytes when they come from elsewhere (stdin); ``file`` then only names it.
    """
    config = load_config(config_file) if config_file else None
    if config is not None and config.environment != environment:
        raise ConfigError(f"config is for '{config.environment}', the manifest for '{environment}'")
    try:
        data = file.read_bytes() if data is None else data
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    dotenv = None
    if config is not None:
        dotenv = load_dotenv(config.paths.dotenv)
    return desired_from_bytes(
        data,
        environment=environment,
        repository=config.image.repository if config else DEFAULT_REPOSITORY,
        paths=config.paths if config else HostPaths(Path("/opt/dreichor"), environment),
        dotenv=dotenv,
        what=str(file),
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EnvironmentService:
    """The one object per environment that every entry point calls."""

    def __init__(
        self,
        config: Config,
        *,
        connect: Callable[[], RuntimeView],
        source: GitSource,
        rollout: Callable[[RuntimeView], Applier],
        images: ImageCheck,
        image_check: ImageStep | None = None,
        clock: Clock = _utcnow,
        at_step: Callable[[str], None] = checkpoint,
    ) -> None:
        """``connect``: the engine, connected on first use; ``rollout``: the mode's rollout over an engine;
        ``images``: the image check (the pass uses it when ``image.signatures`` is set, or ``image_check``)."""
        self.config = config
        self.paths = config.paths
        self.clock = clock
        self.at_step = at_step
        self._connect = connect
        self._engine: RuntimeView | None = None
        self._rollout = rollout
        self.source = source
        self.store = Store(config, clock=clock)
        self.images = images
        self.world = PassWorld(
            config=config,
            source=self.source,
            engine=self.engine,
            rollout=self.rollout,
            cache=VerifiedCache(),
            store=self.store,
            teller=self,
            clock=clock,
            at_step=at_step,
            windows=DeployWindows(config.windows) if config.windows is not None else None,
        )
        if config.image.signatures is not None:
            self.world.image_check, self.world.image_signer_trusted = images.check, images.trusted_signer
        self.world.image_check = image_check or self.world.image_check
        self.audit_hooks: list[AuditHook] = []
        self.notice_hooks: list[AuditHook] = []

    # -- the world ---------------------------------------------------------------------------

    def engine(self) -> RuntimeView:
        """The engine, connected on first use and again after a failure."""
        if self._engine is None:
            self._engine = self._connect()
        return self._engine

    def rollout(self) -> Applier:
        """The rollout for this environment and its ``docker.mode``."""
        return self._rollout(self.engine())

    def close(self) -> None:
        """Drop the engine connection."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # -- passes ------------------------------------------------------------------------------

    def sync(self, options: PassOptions | None = None) -> PassResult:
        """One pass under the pass lock (its first step finishes a swap a crash interrupted)."""
        with pass_lock(self.paths.pass_lock):
            return self._run(Pass(self.world, options or PassOptions(), now=self.clock()))

    def plan(self) -> PassResult:
        """What the next sync would do: every step up to the plan, nothing changed or recorded."""
        return self.plan_report().result

    def plan_report(self) -> PlanAnswer:
        """``plan`` with what its steps learned before the end (the head, its signer, the desired image)."""
        run = Pass(self.world, PassOptions(dry_run=True), now=self.clock())
        return run.learned(self._run(run))

    def _run(self, run: Pass) -> PassResult:
        result = run.run()
        if result.code == Reason.ENGINE_UNAVAILABLE:
            self.close()
        return result

    def notice(self, kind: str, **fields: Any) -> None:
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
            verdict = verify_on_host(self.config, self.source, applied=applied, head=revision, now=self.clock())
        except Refused as exc:
            return Verification(revision, None, exc)
        try:
            image = self.images.declared(self.source, revision) if self.config.image.signatures else None
        except Refused as exc:
            return Verification(revision, verdict, exc)
        return Verification(revision, verdict, image=image)

    def verify_image(self, reference: str) -> ImageVerdict:
        """The cosign signature of ``reference`` (``repo@sha256:…``) against ``image.signatures.keys``."""
        return self.images.verify(reference)

    def approvals(self) -> HeadApprovals:
        """For the verified head's content: who approved, who is missing, when each approval expires."""
        applied = remembered_revision(self.config, self.store.load(), self.engine, self.source)
        return head_approvals(self.config, self.source, applied=applied, now=self.clock())

    # -- operator actions --------------------------------------------------------------------

    def rollback(
        self, snapshot_id: str | None = None, *, reason: str = "no reason given", by: str = "unknown"
    ) -> Snapshot:
        """Break-glass: restore a snapshot, then suspend so the next poll does not undo it; who and why are recorded."""
        snapshot = find_snapshot(self.paths.snapshots, snapshot_id, environment=self.config.environment)
        dotenv = load_dotenv(self.paths.dotenv)
        checked = restorable(snapshot, repository=self.config.image.repository, dotenv=dotenv)
        why = f"rollback to snapshot {snapshot.id}: {reason}"
        with pass_lock(self.paths.pass_lock):
            outcome = self._restore_suspended(checked, reason=why, by=by)
            now = self.clock()
            fields = {"snapshot": snapshot.id, "revision": snapshot.revision, "image": snapshot.image}
            self.emit(AuditEvent("rollback", {**fields, "by": by, "reason": reason}), at=now)
            status = rolled_back_to(
                self.store.load(),
                revision=snapshot.revision,
                image=snapshot.image,
                tag=self._declared_tag(snapshot.revision),
                by=by,
                reason=why,
                snapshot=snapshot.id,
                taken=outcome.snapshot,
                container=current_container(self.engine, self.config.environment),
                now=now,
            )
            self.store.write(status)
        return snapshot

    def _declared_tag(self, revision: str | None) -> str | None:
        """The tag the manifest declared at ``revision`` (the version people know), from the local git cache."""
        if not revision:
            return None
        try:
            data = self.source.read_file(revision, f"envs/{self.config.environment}.yaml", max_bytes=MAX_MANIFEST_BYTES)
            image = str(load_manifest(data).get("image") or "")
            return parse_image(image, repository=self.config.image.repository, environment=self.config.environment).tag
        except (ControllerError, ValueError):  # gone from the cache, or no valid manifest: the digest is the version
            return None

    def suspend(self, reason: str = "no reason given", *, by: str = "unknown") -> bool:
        """Stop acting on new revisions, recording who and why (waits for a pass in progress, like a pass does).

        False when it was suspended already: nothing is recorded, the first suspension's who and why stand.
        """
        with pass_lock(self.paths.pass_lock):
            return self._set_suspended(True, reason=reason, by=by)

    def resume(self, reason: str = "resumed by an operator", *, by: str = "unknown") -> bool:
        """Act on new revisions again, from the next pass (waits for a pass in progress); False: not suspended."""
        with pass_lock(self.paths.pass_lock):
            return self._set_suspended(False, reason=reason, by=by)

    def _restore_suspended(self, snapshot: Snapshot, *, reason: str, by: str) -> Outcome:
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
            self._record_suspension(True, reason=reason, by=by)
        return outcome

    def _set_suspended(self, suspended: bool, *, reason: str, by: str) -> bool:
        changed = self.store.place_marker(f"{by}: {reason}") if suspended else self.store.lift_marker()
        if changed:
            self._record_suspension(suspended, reason=reason, by=by)
        return changed

    def _record_suspension(self, suspended: bool, *, reason: str, by: str) -> None:
        now = self.clock()
        self.emit(AuditEvent("suspended" if suspended else "resumed", {"reason": reason, "by": by}), at=now)
        status = self.store.read()
        if status is not None:
            self.store.write(suspension(status, suspended=suspended, now=now, by=by, reason=reason))

    # -- reading -----------------------------------------------------------------------------

    def interrupted(self) -> bool:
        """A swap's journal is on the host: a swap is in flight, or a crash interrupted one (the next pass ends it)."""
        return self.paths.journal.exists()

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


@dataclass(frozen=True)
class HostStatus:
    """One environment's status as ``status --all`` finds it on the host, without its config."""

    environment: str
    status: Status | None
    problem: str | None = None  # why there is no status: no pass yet, unreadable, not this caller's to read


def host_statuses(root: Path) -> list[HostStatus]:
    """Every environment laid out under ``root`` (``<root>/<env>/deploy-agent``), with its status file.

    An environment the caller may not read is listed with its problem, so the reader knows it
    exists; one with no layout on this host is left out.
    """
    found = []
    for environment in ENVIRONMENTS:
        paths = HostPaths(root, environment)
        if not paths.status.parent.parent.is_dir():
            continue
        if not paths.status.exists():
            found.append(HostStatus(environment, None, "no pass has run yet"))
        elif not os.access(paths.status, os.R_OK):
            found.append(HostStatus(environment, None, f"cannot read {paths.status}: permission denied"))
        else:
            status = read_status(paths.status)
            found.append(HostStatus(environment, status, None if status else f"{paths.status} is not a valid status"))
    return found
