"""Step 9 of a pass, pure: (previous status, what the pass did, now) → (new status, audit events).

Kept apart from the pass and from any file so the densest rules — what a
refusal quarantines, which revision counts as applied, when a decision is
worth an audit line, which phase an environment is in — are tested by a
table of cases (``tests/unit/reconcile/test_record.py``).  The service writes what
this returns; nothing here touches a disk, a clock or an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from controller.errors import Reason
from controller.model.plan import Plan
from controller.records.status import (
    AppliedStatus,
    ApprovalsStatus,
    AttemptStatus,
    BreakGlass,
    ContainerStatus,
    ImageSource,
    Phase,
    QuarantineKey,
    Result,
    Status,
    Suspension,
    WindowStatus,
    health_of,
    sync_of,
)
from controller.untrusted import bounded

PassVerdict = Literal["applied", "unchanged", "refused", "failed", "rolled_back", "suspended", "waiting"]
# Refusals a pass retries rather than quarantines: the swarm cannot place the runtime (a node label
# fixes it), the image carries no signature yet (one may be pushed after the merge).
# An approvals folder over its limits is fixed by a later commit that does not touch the manifest.
RETRIED_REFUSALS = frozenset(
    {Reason.SWARM_PLACEMENT, Reason.IMAGE_UNSIGNED, Reason.MODE_CONFLICT, Reason.BAD_APPROVALS}
)
APPLIED_AFTER_RESTART = "the container already runs this revision (recorded after a restart)"


@dataclass(frozen=True)
class PassResult:
    """The pass's verdict, for the CLI's exit code, the scheduler's backoff and the metrics."""

    result: PassVerdict
    reason: str
    plan: Plan | None = None
    retryable: bool = False
    code: Reason = Reason.IN_SYNC
    image_signer: str | None = None  # the image's cosign signer, when a plan checked it
    approvals: str | None = None  # a held change: "1 of 2 approvals (alice)"
    repaired: Plan | None = None  # the head is held: the repair of the applied content this pass made


@dataclass(frozen=True)
class AuditEvent:
    """One line for the audit log, before it is chained and written."""

    event: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassReport:
    """What one pass did, as plain facts (the pass fills it; ``record`` judges it)."""

    result: PassResult
    container: ContainerStatus
    suspended: bool = False
    head: str | None = None  # the fetched head (None: the fetch failed or did not run)
    fetch_error: str | None = None
    target: str | None = None  # what the pass acted on: the head, or the applied revision when quarantined
    host_digest: str = ""  # trust files and .env, for the quarantine key
    content: str | None = None  # the head's desired container (content_key), when the pass got that far
    signer: str | None = None  # the verified signer of the target
    image_signer: str | None = None  # the cosign key that signed the image, when image signatures are on
    image_source: dict[str, str | None] | None = None  # repository, ref, commit its provenance names
    image: str | None = None  # the desired image
    tag: str | None = None  # the tag the manifest declared beside the digest
    snapshot: str | None = None  # the snapshot the apply wrote, or the newest one after a rollback
    logs: str | None = None  # the failed container's output
    rewrite_allowed_over: str | None = None  # the applied revision a --allow-rewrite pass went past
    recovered: dict[str, str] | None = None  # what crash recovery did before the pass, and to what (its event)
    approvals: ApprovalsStatus | None = None  # the declared content's approvals, when it needed some
    committed_at: datetime | None = None  # the applied commit's committer date, for the history's lead time
    container_revision: str | None = None  # the revision label of the runtime the pass planned against
    window: WindowStatus | None = None  # the deploy window at the pass (``waiting``: the content it holds)
    break_glass: BreakGlass | None = None  # the change applied although the window was closed: who and why


def record(
    previous: Status, did: PassReport, *, now: datetime, stale_after: timedelta
) -> tuple[Status, list[AuditEvent]]:
    """The new status and the audit events for one pass; ``previous`` is not changed."""
    status = own_copy(previous)
    events: list[AuditEvent] = []
    if did.recovered:
        events.append(AuditEvent("recovered", dict(did.recovered)))
    _record_source(status, did, now=now)
    if did.rewrite_allowed_over:
        events.append(AuditEvent("rewrite_allowed", {"revision": did.target, "applied": did.rewrite_allowed_over}))
    result = _as_recorded(previous, did)
    status.window = _window(previous, did, result)
    if result.result == "waiting" and result.code == Reason.AWAITING_WINDOW:
        status.approvals = None  # approved, or none needed: the window is what it waits for
        events += _record_window_wait(previous, did, result)
    elif result.result == "waiting":
        events += _record_wait(status, did, result)
    else:
        events += _record_decision(status, did, result, now=now)
    status.suspended = did.suspended
    status.suspension = status.suspension if did.suspended else None
    status.container = did.container
    status.phase = phase(result.result, status)
    fetched = status.source.fetched_at
    status.source.stale = fetched is None or now - fetched > stale_after
    status.updated_at = now
    status.sync, status.health = sync_of(status), health_of(status.container)
    if status.sync.state == "InSync" and result.result in ("applied", "unchanged") and did.target == did.head:
        status.sync.revision = did.head  # the guard advances, also past commits that leave the content as it is
    return status, events


def own_copy(status: Status) -> Status:
    """A copy ``record`` may change without touching ``status``: its own top level and ``source``.

    The only part changed in place is ``source``; every other part is replaced
    whole, so sharing it with ``status`` is safe and spares a deep copy per pass.
    """
    return status.model_copy(update={"source": status.source.model_copy()})


def held(result: PassResult) -> bool:
    """A pass that met a head already refused: the same decision again, recorded, logged and counted once."""
    return result.result == "refused" and result.code == Reason.QUARANTINED


def _record_source(status: Status, did: PassReport, *, now: datetime) -> None:
    if did.head is not None:
        status.source.head, status.source.fetched_at, status.source.last_error = did.head, now, None
    elif did.fetch_error is not None:
        status.source.last_error = did.fetch_error


def _as_recorded(previous: Status, did: PassReport) -> PassResult:
    """An unchanged pass on a verified target the status does not know as applied: a crash before the record."""
    applied = previous.applied.revision if previous.applied else None
    elsewhere = did.signer is not None and did.target is not None and did.target != applied
    # The runtime itself carries the target's revision: it was applied and the record did not follow.
    # Any other commit whose content already runs (a dev bump, an approval file) applied nothing.
    if did.result.result == "unchanged" and elsewhere and did.container_revision == did.target:
        return replace(did.result, result="applied", reason=APPLIED_AFTER_RESTART, code=Reason.APPLIED)
    return did.result


def _applied_event(did: PassReport, result: PassResult, *, revision: str | None, same: bool = True) -> AuditEvent:
    """``applied``, or ``drift_repaired`` with what differed ("pid mode host", "capabilities SYS_ADMIN");
    a repair that puts a new image in place (``same`` False: the runtime was removed meanwhile) is ``applied``."""
    fields: dict[str, Any] = {"revision": revision, "image": did.image, "signer": did.signer, "reason": result.reason}
    if did.image_signer:
        fields["image_signer"] = did.image_signer
    if did.image_source:
        fields["image_source"] = did.image_source
    if did.break_glass is not None:  # the deploy window was closed: who opened it, and why
        fields["break_glass"] = did.break_glass.model_dump()
    if result.plan is not None and result.plan.action == "repair" and same:
        return AuditEvent("drift_repaired", {**fields, "drift": list(result.plan.drift), **_placement(did)})
    when = {"committed_at": did.committed_at.isoformat()} if did.committed_at else {}
    return AuditEvent("applied", {**fields, "tag": did.tag, **when, **_placement(did)})


def _repair_event(applied: AppliedStatus | None, repaired: Plan) -> AuditEvent:
    """The repair of the applied content while the head is held: what runs again, and what differed."""
    fields: dict[str, Any] = {"revision": applied.revision if applied else None, "reason": repaired.reason}
    if applied is not None:
        fields |= {"image": applied.image, "signer": applied.signer}
        fields |= {"image_signer": applied.image_signer} if applied.image_signer else {}
    return AuditEvent("drift_repaired", {**fields, "drift": list(repaired.drift)})


def _record_decision(status: Status, did: PassReport, result: PassResult, *, now: datetime) -> list[AuditEvent]:
    target = did.target or did.head
    events: list[AuditEvent] = [_repair_event(status.applied, result.repaired)] if result.repaired else []
    if result.result in ("applied", "unchanged") and did.target is not None and did.target == did.head:
        status.quarantined = None  # the head itself went through: whatever was quarantined is behind us
        status.approvals = None
    if result.result in ("refused", "rolled_back"):
        status.approvals = None
    if result.result == "applied" and did.image is not None and did.signer is not None:
        same = status.applied is not None and status.applied.image.rpartition("@")[2] == did.image.rpartition("@")[2]
        status.applied = AppliedStatus(
            revision=did.target or "",
            image=did.image,
            signer=did.signer,
            image_signer=did.image_signer,
            image_source=ImageSource.model_validate(did.image_source) if did.image_source else None,
            applied_at=now,
            tag=did.tag,
            break_glass=did.break_glass,
        )
        status.last_snapshot = did.snapshot or status.last_snapshot
        events.append(_applied_event(did, result, revision=target, same=same))
    elif held(result):
        return events  # the refusal that quarantined it stays the last attempt, with its own reason and code
    elif result.result in ("refused", "rolled_back"):
        status.quarantined = quarantine_key(did)
        if result.code in RETRIED_REFUSALS:
            status.quarantined = None  # fixed outside the manifest (label, signature, mode): try again
        if result.result == "rolled_back":
            status.last_snapshot = did.snapshot or status.last_snapshot
        if not _told(status, result):
            events.append(_refusal_event(did, result, revision=target))
    elif result.result == "failed" and not result.retryable and not _told(status, result):
        events.append(AuditEvent("failed", {"revision": target, "reason": result.reason, "code": str(result.code)}))
    if result.result == "suspended" or (result.result == "unchanged" and did.target != did.head):
        return events  # keep the last decision visible
    status.last_attempt = AttemptStatus(
        revision=target,
        result=attempt_result(result.result),
        reason=result.reason,
        code=str(result.code),
        at=now,
        logs=did.logs,
    )
    return events


def _refusal_event(did: PassReport, result: PassResult, *, revision: str | None) -> AuditEvent:
    """The ``refused`` or ``rolled_back`` event: the version it was, and who broke the glass for it."""
    fields: dict[str, Any] = {"revision": revision, "reason": result.reason, "code": str(result.code)}
    if did.image is not None:  # the version it was, named where the refusal or rollback is told
        fields |= {"image": did.image, "tag": did.tag}
    if result.result == "rolled_back":
        fields |= _placement(did)
    if did.break_glass is not None:
        fields["break_glass"] = did.break_glass.model_dump()
    return AuditEvent(result.result, fields)


def _record_wait(status: Status, did: PassReport, result: PassResult) -> list[AuditEvent]:
    """A change held for approvals: no refusal, no quarantine; one audit event per content, not per poll."""
    previous, status.approvals = status.approvals, did.approvals
    events = [_repair_event(status.applied, result.repaired)] if result.repaired else []
    if did.approvals is None or (previous is not None and previous.content == did.approvals.content):
        return events
    fields = {
        "revision": did.target or did.head,
        "content": did.approvals.content,
        "have": list(did.approvals.have),
        "need": did.approvals.need,
        "missing": list(did.approvals.missing),
        "reason": result.reason,
        "code": str(result.code),
    }
    return [*events, AuditEvent("waiting_approval", fields)]


def _window(previous: Status, did: PassReport, result: PassResult) -> WindowStatus | None:
    """The window as the pass saw it; a pass that failed before the window step (a fetch, the engine) while the
    window is still closed keeps the change that waits for it: the wait is one decision, not one per pass."""
    window, before = did.window, previous.window
    if window is None or window.open or window.waiting or result.result != "failed" or before is None:
        return window
    return window.model_copy(update={"waiting": before.waiting})


def _record_window_wait(previous: Status, did: PassReport, result: PassResult) -> list[AuditEvent]:
    """A change held for the deploy window: no refusal, no quarantine; one audit event per content, not per poll."""
    told = previous.window.waiting if previous.window is not None else None
    content = did.window.waiting if did.window is not None else None
    if content is None or content == told:
        return []
    assert did.window is not None  # noqa: S101 content comes from it
    fields = {
        "revision": did.target or did.head,
        "content": content,
        "opens": did.window.next_change.isoformat() if did.window.next_change else None,
        "reason": result.reason,
        "code": str(result.code),
    }
    return [AuditEvent("waiting_window", fields)]


def _placement(did: PassReport) -> dict[str, str]:
    """Swarm mode: the node and task the runtime runs as after the pass (nothing in container mode)."""
    container = did.container
    return {k: v for k, v in (("node", container.node), ("task", container.task)) if v}


def quarantine_key(did: PassReport) -> str | None:
    """What a refusal or rollback quarantines: the content that would have run, else the head commit."""
    if did.content is not None:
        return str(QuarantineKey.of_content(did.content))
    return str(QuarantineKey.of_head(did.head, did.host_digest)) if did.head else None


def _told(status: Status, result: PassResult) -> bool:
    """The last attempt already recorded this very decision (one audit line per decision, not per poll)."""
    last = status.last_attempt
    return last is not None and last.result == result.result and last.reason == bounded(result.reason)


def phase(result: PassVerdict, status: Status) -> Phase:
    """Suspended wins; in sync only when the pass succeeded, the container runs and nothing is quarantined.

    ``Progressing`` is said only while a pass changes the runtime (the service's progress hook); a
    change waiting for approvals is held, like a refusal: Degraded (docs/design.md §16).
    """
    if status.suspended:
        return "Suspended"
    if result in ("applied", "unchanged") and status.container.state == "running":
        return "InSync" if not status.quarantined else "Degraded"
    return "Degraded"


def settled_phase(status: Status) -> Phase:
    """The phase from what is recorded, with no pass running (after ``resume``): never Progressing."""
    if status.suspended:
        return "Suspended"
    healthy = health_of(status.container) == "Healthy"
    return "InSync" if sync_of(status).state == "InSync" and healthy else "Degraded"


def attempt_result(result: PassVerdict) -> Result:
    """The status file's word for a pass verdict (suspended and waiting passes record no attempt)."""
    if result == "suspended" or result == "waiting":  # noqa: PLR1714 narrows the Literal for mypy
        return "unchanged"
    return result


def rolled_back_to(
    status: Status,
    *,
    revision: str | None,
    image: str | None,
    snapshot: str,
    taken: str | None,
    tag: str | None = None,
    by: str = "unknown",
    reason: str = "",
    container: ContainerStatus,
    now: datetime,
) -> Status:
    """After a break-glass rollback to ``snapshot`` (``taken``: the snapshot of what it replaced): suspended."""
    new = status.model_copy(deep=True)
    new.last_snapshot, new.container = taken or new.last_snapshot, container
    new.applied = AppliedStatus(
        revision=revision or "", image=image or "", signer="break-glass rollback", applied_at=now, tag=tag
    )
    new.last_attempt = AttemptStatus(
        revision=revision, result="applied", reason=f"restored snapshot {snapshot}", code=str(Reason.APPLIED), at=now
    )
    new.suspended, new.phase, new.updated_at = True, "Suspended", now
    new.suspension = Suspension(by=by, reason=reason or f"break-glass rollback to snapshot {snapshot}", at=now)
    new.sync, new.health = sync_of(new), health_of(container)
    return new


def suspension(status: Status, *, suspended: bool, now: datetime, by: str = "", reason: str = "") -> Status:
    """The status after ``suspend`` (who and why) or ``resume`` (what was true before the suspension)."""
    new = status.model_copy(deep=True)
    new.suspended, new.updated_at = suspended, now
    new.suspension = Suspension(by=by or "unknown", reason=reason or "no reason given", at=now) if suspended else None
    new.phase = settled_phase(new)
    new.sync, new.health = sync_of(new), health_of(new.container)
    return new
