"""What one pass is given and what it learns: the options it was asked with, the world it acts
through (built by the service), and the context its steps fill in, in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from controller import approvals
from controller.config import Config
from controller.containers import ContainerState
from controller.contract import DesiredContainer
from controller.engine.port import RuntimeView
from controller.plan import Plan
from controller.reconcile.quarantine import HostDigests
from controller.reconcile.revisions import DEPLOYED_EVENTS
from controller.records import audit
from controller.records.status import Status
from controller.rollout.base import Applier, Outcome, checkpoint
from controller.signatures.commits.policy import Verdict, VerifiedCache
from controller.signatures.images.verifier import ImageVerdict
from controller.source import GitSource

Clock = Callable[[], datetime]
ImageCheck = Callable[[DesiredContainer], ImageVerdict | str | None]  # the image's verdict (or signer), or Refused


@dataclass
class PassOptions:
    """How the person or scheduler asked for this pass."""

    force: bool = False
    allow_rewrite: bool = False
    adopt: bool = False
    dry_run: bool = False


@dataclass
class PassWorld:
    """What a pass acts through; the service builds it, tests choose real or fake parts."""

    config: Config
    source: GitSource
    engine: Callable[[], RuntimeView]  # connected on first use
    rollout: Callable[[], Applier]
    cache: VerifiedCache
    progress: Callable[[PassContext], None]  # the status says Progressing before anything is changed
    image_check: ImageCheck | None = None  # image signatures (docs/design.md §14), before the pull
    image_signer_trusted: Callable[[str], bool] = lambda signer: True  # a recorded signer is still a key
    at_step: Callable[[str], None] = checkpoint
    desired_cache: dict[tuple[str, str], DesiredContainer] = field(default_factory=dict)
    digests: HostDigests = field(default_factory=HostDigests)
    deployed: audit.NewestEvent = field(default_factory=lambda: audit.NewestEvent(DEPLOYED_EVENTS))


@dataclass
class PassContext:
    """What the steps learn, in order."""

    options: PassOptions
    status: Status
    now: datetime
    head: str | None = None
    fetch_error: str | None = None
    target: str | None = None
    guard: str | None = None  # the newest applied revision the history must descend from
    records: tuple[str, ...] = ()  # every record of the applied revision; the target descends from each
    host_digest: str = ""
    earlier_digests: tuple[str, ...] = ()  # what earlier releases computed, so their quarantines hold
    content: str | None = None  # the head's desired container, as the quarantine knows it
    verdict: Verdict | None = None
    rewrite_allowed_over: str | None = None
    manifest: bytes | None = None
    desired: DesiredContainer | None = None
    image_signer: str | None = None
    image_source: dict[str, str | None] | None = None  # what the image's provenance names (docs/design.md §14)
    plan: Plan | None = None
    actual: ContainerState | None = None
    outcome: Outcome | None = None
    logs: str | None = None
    tally: approvals.Tally | None = None  # the approvals of the declared content, when it needed some
