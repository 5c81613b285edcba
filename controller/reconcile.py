"""One reconcile pass (DESIGN §9) as a list of named steps over a context.

fetch → guard history → verify → load → validate → check quarantine → plan →
(verify image) → apply (→ health gate, inside apply).  Each step reads the
pass context and adds to it.  Errors decide what happens next: ``Refused``
quarantines what would have run — the desired container's content, so the
same change under another commit id stays quarantined; or the head itself
when the refusal came before its content was known — until a different
change, a change of the host's trust/cosign key/.env files, or ``--force``;
``Retryable`` leaves everything running and asks for a backoff,
anything else is a bug and is re-raised.  The pass writes nothing itself: it
ends with a ``PassReport`` that ``recording`` turns into status and audit
events, which the service writes whatever happened.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from controller.config import Config
from controller.containers import ContainerState
from controller.contract import CONTRACT_VERSION, LABEL_REVISION, DesiredContainer, container_name, desired_from_bytes
from controller.engine.port import RuntimeView
from controller.errors import ControllerError, Reason, Refused, Retryable
from controller.manifest import MAX_MANIFEST_BYTES
from controller.plan import Plan, plan
from controller.recording import PassReport, PassResult
from controller.records import audit
from controller.records.dotenv import read_dotenv
from controller.records.snapshots import list_snapshot_files
from controller.records.status import ContainerStatus, Status, applied_revision, read_watermark
from controller.rollout.base import Applier, HealthGateFailed, Outcome, checkpoint
from controller.signatures.commits.policy import Verdict, VerifiedCache
from controller.signatures.commits.verification import load_policy, verify_revision
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
    image_check: ImageCheck | None = None  # image signatures (DESIGN §14), before the pull
    image_signer_trusted: Callable[[str], bool] = lambda signer: True  # a recorded signer is still a key
    at_step: Callable[[str], None] = checkpoint
    desired_cache: dict[tuple[str, str], DesiredContainer] = field(default_factory=dict)


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
    host_digest: str = ""
    content: str | None = None  # the head's desired container, as the quarantine knows it
    verdict: Verdict | None = None
    rewrite_allowed_over: str | None = None
    manifest: bytes | None = None
    desired: DesiredContainer | None = None
    image_signer: str | None = None
    image_source: dict[str, str | None] | None = None  # what the image's provenance names (DESIGN §14)
    plan: Plan | None = None
    actual: ContainerState | None = None
    outcome: Outcome | None = None
    logs: str | None = None


class Pass:
    """One pass for one environment over a world; ``run`` decides, ``report`` says what it did."""

    def __init__(self, world: PassWorld, status: Status, options: PassOptions, *, now: datetime) -> None:
        self.world = world
        self.config = world.config
        self.ctx = PassContext(options=options, status=status, now=now)

    def run(self) -> PassResult:
        """The steps; expected failures become a result, bugs propagate."""
        try:
            return self._steps()
        except Refused as exc:
            return PassResult("refused", str(exc), code=exc.code)
        except HealthGateFailed as exc:
            self.ctx.logs = exc.logs or None
            return PassResult("rolled_back", exc.reason, code=Reason.HEALTH_GATE_FAILED)
        except Retryable as exc:
            return PassResult("failed", exc.reason, retryable=True, code=exc.code)
        except OSError as exc:  # the state folder: read-only, full, or gone
            reason = f"cannot write state: {exc.strerror or exc}"
            return PassResult("failed", reason, retryable=True, code=Reason.STATE_IO)

    def _steps(self) -> PassResult:
        if self.config.paths.suspended_marker.exists() and not self.ctx.options.force:
            reason = "the environment is suspended: run 'dreichor-controller resume'"
            return PassResult("suspended", reason, code=Reason.SUSPENDED)
        self.fetch_source()
        self.choose_target()
        self.guard_history()
        self.verify_commits()
        self.load_manifest()
        self.validate_manifest()
        self.check_quarantine()
        self.plan_change()
        assert self.ctx.plan is not None  # noqa: S101 set by plan_change
        if self.ctx.plan.action == "nothing":
            return PassResult("unchanged", self.ctx.plan.reason, plan=self.ctx.plan)
        self.verify_image()
        if self.ctx.options.dry_run:  # plan: the image's signature is checked, nothing is pulled
            return PassResult("unchanged", self.ctx.plan.reason, plan=self.ctx.plan, image_signer=self.ctx.image_signer)
        return self.apply_plan()

    def fetch_source(self) -> None:
        """Step 1: fetch the branch into the cache."""
        self.world.at_step("fetch")
        try:
            self.ctx.head = self.world.source.fetch()
        except Retryable as exc:
            self.ctx.fetch_error = exc.reason
            raise

    def choose_target(self) -> None:
        """The head, unless it was refused before its content was known (then the applied revision)."""
        ctx = self.ctx
        ctx.host_digest = host_digest(self.config)
        ctx.guard = remembered_revision(self.config, ctx.status, self.world.engine)
        quarantined = ctx.status.quarantined == f"{ctx.head}:{ctx.host_digest}"
        if quarantined and not ctx.options.force:
            self._fall_back_to_applied()
        else:
            ctx.target = ctx.head

    def _fall_back_to_applied(self) -> None:
        """Keep repairing drift with the applied revision while the head is quarantined."""
        applied = applied_revision(self.ctx.status)
        if applied is None or applied == self.ctx.head:
            last = self.ctx.status.last_attempt.reason if self.ctx.status.last_attempt else None
            raise Refused(last or "the head is quarantined", code=Reason.QUARANTINED)
        self.ctx.target = applied

    def guard_history(self) -> None:
        """Step 2: the target must descend from the newest applied revision (the watermark)."""
        applied = self.ctx.guard
        target = self._target()
        if applied is None or applied == target or self.world.source.is_ancestor(applied, target):
            return
        if not self.ctx.options.allow_rewrite:
            why = f"{target[:12]} does not descend from applied {applied[:12]}"
            if not self.world.source.has_commit(applied):
                why = f"the applied revision {applied[:12]} is not in the fetched history"
            raise Refused(f"history rewritten: {why}", code=Reason.HISTORY_REWRITTEN)
        self.ctx.rewrite_allowed_over = applied

    def verify_commits(self) -> None:
        """Step 3: signatures, against the host's trust policy."""
        self.world.at_step("verify")
        applied = self.ctx.guard
        self.ctx.verdict = verify_revision(
            self.world.source,
            load_policy(self.config),
            mode=self.config.trust.mode,
            applied=applied,
            head=self._target(),
            now=self.ctx.now,
            cache=self.world.cache,
        )

    def load_manifest(self) -> None:
        """Step 4: ``envs/<env>.yaml`` from the verified commit's tree (skipped when validated before)."""
        if (self._target(), self.ctx.host_digest) in self.world.desired_cache:
            return
        path = f"envs/{self.config.environment}.yaml"
        self.ctx.manifest = self.world.source.read_file(self._target(), path, max_bytes=MAX_MANIFEST_BYTES)

    def validate_manifest(self) -> None:
        """Step 5: the layout contract → the desired container (a commit and .env already judged are reused)."""
        self.world.at_step("validate")
        key = (self._target(), self.ctx.host_digest)
        cached = self.world.desired_cache.get(key)
        if cached is not None:
            self.ctx.desired = cached
            return
        assert self.ctx.manifest is not None  # noqa: S101 set by load_manifest
        paths = self.config.paths
        try:
            dotenv = read_dotenv(paths.dotenv)
        except (OSError, UnicodeDecodeError) as exc:
            raise Retryable(f"cannot read {paths.dotenv}: {exc}", code=Reason.HOST_CONFIG) from None
        self.ctx.desired = desired_from_bytes(
            self.ctx.manifest,
            environment=self.config.environment,
            repository=self.config.image.repository,
            paths=paths,
            dotenv=dotenv,
            revision=self._target(),
            what=f"envs/{self.config.environment}.yaml at {self._target()[:12]}",
        )
        self.world.desired_cache.clear()
        self.world.desired_cache[key] = self.ctx.desired

    def check_quarantine(self) -> None:
        """The head's content (not its commit id) against the quarantine; quarantined: the applied revision."""
        ctx = self.ctx
        if ctx.target != ctx.head:
            return
        ctx.content = content_key(self._desired(), host=ctx.host_digest)
        if ctx.options.force or ctx.status.quarantined != f"content:{ctx.content}":
            return
        self._fall_back_to_applied()
        self.load_manifest()
        self.validate_manifest()

    def plan_change(self) -> None:
        """Step 6: compare with the actual container (one engine call)."""
        desired = self._desired()
        self.ctx.actual = self.world.engine().current()
        deployed = self.ctx.status.applied is not None
        self.ctx.plan = plan(desired, self.ctx.actual, deployed=deployed, adopt=self.ctx.options.adopt)

    def verify_image(self) -> None:
        """The image's own signature (DESIGN §14), when a check is configured: before anything is pulled.

        The check guards new content: the applied image, verified when it was applied, is not
        checked again (repairing a removed or stopped container must not wait for the registry).
        """
        if self.world.image_check is None:
            return
        applied = self.ctx.status.applied
        if self._verified_image_signer() and applied is not None:
            self.ctx.image_signer = applied.image_signer
            self.ctx.image_source = applied.image_source.model_dump() if applied.image_source else None
            return
        verdict = self.world.image_check(self._desired())
        if isinstance(verdict, ImageVerdict):
            self.ctx.image_signer = verdict.image_signer
            self.ctx.image_source = verdict.source.as_record() if verdict.source else None
        else:
            self.ctx.image_signer = verdict

    def _verified_image_signer(self) -> str | None:
        """The recorded signer of the applied image when the desired image is that image, by digest."""
        applied = self.ctx.status.applied
        if applied is None or not applied.image_signer or not self.world.image_signer_trusted(applied.image_signer):
            return None
        same = applied.image.rpartition("@")[2] == self._desired().image.rpartition("@")[2]
        return applied.image_signer if same else None

    def apply_plan(self) -> PassResult:
        """Steps 7 and 8: pull, snapshot, swap, health gate (rollback inside)."""
        assert self.ctx.plan is not None  # noqa: S101 set by plan_change
        self.world.progress(self.ctx)
        self.ctx.outcome = self.world.rollout().apply(self.ctx.plan, self._desired())
        return PassResult("applied", self.ctx.plan.reason, plan=self.ctx.plan)

    def _target(self) -> str:
        assert self.ctx.target is not None  # noqa: S101 set by choose_target
        return self.ctx.target

    def _desired(self) -> DesiredContainer:
        assert self.ctx.desired is not None  # noqa: S101 set by validate_manifest
        return self.ctx.desired

    # -- what the pass did -----------------------------------------------------------------

    def report(self, result: PassResult, *, recovered: str | None = None) -> PassReport:
        """The facts ``recording.record`` needs; reads the container once more only when something changed."""
        ctx = self.ctx
        snapshot = ctx.outcome.snapshot if ctx.outcome else None
        if result.result == "rolled_back" and snapshot is None:
            snapshot = _newest_snapshot(self.config.paths.snapshots)
        return PassReport(
            result=result,
            container=self._container_view(result),
            suspended=self.config.paths.suspended_marker.exists(),
            head=ctx.head,
            fetch_error=ctx.fetch_error,
            target=ctx.target,
            host_digest=ctx.host_digest or (host_digest(self.config) if ctx.head else ""),
            content=ctx.content,
            signer=ctx.verdict.signer if ctx.verdict else None,
            image_signer=ctx.image_signer,
            image_source=ctx.image_source,
            image=ctx.desired.image if ctx.desired else None,
            snapshot=snapshot,
            logs=ctx.logs,
            rewrite_allowed_over=ctx.rewrite_allowed_over,
            recovered=recovered,
        )

    def _container_view(self, result: PassResult) -> ContainerStatus:
        if result.result == "unchanged" and self.ctx.actual is not None:
            return container_view(self.ctx.actual)
        return current_container(self.world.engine, self.config.environment)


def current_container(engine: Callable[[], RuntimeView], environment: str) -> ContainerStatus:
    """The runtime container as the status file shows it; ``unknown`` when the engine cannot say."""
    name = container_name(environment)
    try:
        state = engine().current()
    except ControllerError:
        return ContainerStatus(name=name, state="unknown", health="unknown")
    return container_view(state) if state else ContainerStatus(name=name)


def container_view(state: ContainerState) -> ContainerStatus:
    """A container's state as the status file records it."""
    return ContainerStatus(
        name=state.name,
        id=state.id,
        image=state.image,
        state=state.status,
        health=state.health or "none",
        node=state.node,
        task=state.task,
    )


def remembered_revision(config: Config, status: Status, engine: Callable[[], RuntimeView]) -> str | None:
    """The newest applied revision: the watermark, else the status file, the running container's
    revision label, the audit log's newest applied event.  None only on a host that never deployed."""
    paths = config.paths
    found = read_watermark(paths.watermark) or applied_revision(status)
    if found is None:
        try:
            state = engine().current()
        except ControllerError:
            state = None
        found = (state.labels.get(LABEL_REVISION) or None) if state is not None else None
    if found is None:
        applied = [e for e in audit.read_events(paths.audit) if e.get("event") in ("applied", "drift_repaired")]
        found = str(applied[-1].get("revision") or "") or None if applied else None
    return found


def content_key(desired: DesiredContainer, *, host: str) -> str:
    """What would run, as the quarantine remembers it: image digest, settings, contract version, host files.

    Secret values (from ``.env``) stay out: the host digest already covers that file.
    """
    content = {
        "contract": CONTRACT_VERSION,
        "image": desired.image.rpartition("@")[2],
        "env": {k: v for k, v in desired.env.items() if k not in desired.secret_env},
        "host": host,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def host_digest(config: Config) -> str:
    """SHA-256 of the host files a refusal may depend on: trust files, cosign keys and ``.env``."""
    digest = hashlib.sha256()
    trust = config.trust
    cosign = config.image.signatures.keys if config.image.signatures else []
    for name in (trust.allowed_signers, trust.openpgp_keys, trust.revoked_keys, *cosign, str(config.paths.dotenv)):
        try:
            digest.update(Path(name).read_bytes() if name else b"")
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()[:16]


def _newest_snapshot(folder: Path) -> str | None:
    files = list_snapshot_files(folder)
    return files[0].stem if files else None
