"""What one pass is given and what it learns: the options it was asked with, the world it acts
through (built by the service), and the context its steps fill in, in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.engine.port import RuntimeView
from controller.errors import Reason, Retryable
from controller.model.config import Config
from controller.model.containers import ContainerState
from controller.model.desired import DesiredContainer
from controller.model.plan import Plan
from controller.model.windows import DeployWindows, WindowState
from controller.reconcile.quarantine import HostDigests
from controller.reconcile.record import AuditEvent, PassResult
from controller.reconcile.revisions import DEPLOYED_EVENTS
from controller.records import audit
from controller.records.status import BreakGlass, Status
from controller.records.store import Store
from controller.rollout.base import Applier, Outcome, Recovery, RecoveryUnsettled, checkpoint
from controller.signatures import approvals
from controller.signatures.commits.policy import Verdict, VerifiedCache
from controller.signatures.images.verifier import ImageVerdict
from controller.source.git import GitSource

Clock = Callable[[], datetime]
INTERRUPTED = PassResult("failed", "the pass did not finish", code=Reason.INTERNAL_ERROR)  # what a bug leaves
ImageStep = Callable[[DesiredContainer], ImageVerdict | str | None]  # the image's verdict (or signer), or Refused


@dataclass
class PassOptions:
    """How the person or scheduler asked for this pass."""

    force: bool = False
    allow_rewrite: bool = False
    adopt: bool = False
    dry_run: bool = False
    break_glass: BreakGlass | None = None  # apply although the deploy window is closed: who and why (§18)


class Teller(Protocol):
    """Who hears what a pass recorded: the service, which appends to the audit log and tells its hooks."""

    def emit(self, event: AuditEvent, *, at: datetime, facts: dict[str, Any] | None = None) -> None:
        """Append ``event`` to the audit log and tell the audit hooks (with ``facts`` it does not record)."""
        ...

    def notice(self, kind: str, **fields: Any) -> None:
        """Tell the notice hooks a moment of the pass that is no audit event."""
        ...


@dataclass
class PassWorld:
    """What a pass acts through; the service builds it from what it was given, tests choose real or fake parts."""

    config: Config
    source: GitSource
    engine: Callable[[], RuntimeView]  # connected on first use
    rollout: Callable[[], Applier]
    cache: VerifiedCache
    store: Store  # the status file and the watermark
    teller: Teller
    clock: Clock
    image_check: ImageStep | None = None  # image signatures (docs/design.md §14), before the pull
    image_signer_trusted: Callable[[str], bool] = lambda signer: True  # a recorded signer is still a key
    at_step: Callable[[str], None] = checkpoint
    windows: DeployWindows | None = None  # the deploy windows (docs/design.md §18); None: always open
    desired_cache: dict[tuple[str, str], DesiredContainer] = field(default_factory=dict)
    digests: HostDigests = field(default_factory=HostDigests)
    deployed: audit.NewestEvent = field(default_factory=lambda: audit.NewestEvent(DEPLOYED_EVENTS))


@dataclass
class PassContext:
    """What the steps learn, in order."""

    options: PassOptions
    now: datetime
    found: Status | None = None  # the status file as the pass found it (set by the status step)
    result: PassResult = INTERRUPTED  # the outcome so far: the first step that gives one decides
    recovered: Recovery | None = None  # what crash recovery did before the pass, when, to what
    unrecovered: Retryable | RecoveryUnsettled | None = None  # why recovery could not finish or settle a swap
    head: str | None = None
    fetch_error: str | None = None
    target: str | None = None
    guard: str | None = None  # the newest applied revision the history must descend from
    remembered: tuple[str, ...] = ()  # every record of the applied revision; the target descends from each
    host_digest: str = ""
    earlier_digests: tuple[str, ...] = ()  # what earlier releases computed, so their quarantines hold
    content: str | None = None  # the head's desired container, as the quarantine knows it
    verdict: Verdict | None = None
    rewrite_allowed_over: str | None = None
    desired: DesiredContainer | None = None
    image_signer: str | None = None
    image_source: dict[str, str | None] | None = None  # what the image's provenance names (docs/design.md §14)
    plan: Plan | None = None
    actual: ContainerState | None = None
    outcome: Outcome | None = None
    logs: str | None = None
    tally: approvals.Tally | None = None  # the approvals of the declared content, when it needed some
    window: WindowState | None = None  # the deploy window at ``now``, once a step asked
    window_waits: bool = False  # the change waits for the window to open
    broke_glass: BreakGlass | None = None  # the change applies although the window is closed

    @property
    def status(self) -> Status:
        """The status file as the pass found it; read by the first steps, before any other step runs."""
        assert self.found is not None  # noqa: S101 set by the status step
        return self.found
