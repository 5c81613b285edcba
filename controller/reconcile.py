"""One reconcile pass (docs/design.md §9) as a list of named steps over a context.

fetch → guard history → verify → load → validate → check quarantine → plan →
check approvals → (verify image) → apply (→ health gate, inside apply).  Each step reads the
pass context and adds to it.  Errors decide what happens next: ``Refused``
quarantines what would have run — the desired container's content, so the
same change under another commit id stays quarantined; or the head itself
when the refusal came before its content was known — until a different
change, a change of the host's trust/cosign key/.env files, or ``--force``;
``Retryable`` leaves everything running and asks for a backoff,
anything else is a bug and is re-raised.  A change that lacks approvals
(docs/design.md §15) is neither: it is held, ``waiting``, and the next pass looks again.
The pass writes nothing itself: it
ends with a ``PassReport`` that ``recording`` turns into status and audit
events, which the service writes whatever happened.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller import approvals
from controller.config import Config, KeylessIdentityConfig
from controller.containers import ContainerState
from controller.contract import (
    CONTRACT_VERSION,
    LABEL_MANIFEST,
    LABEL_REVISION,
    DesiredContainer,
    container_name,
    desired_from_bytes,
)
from controller.engine.port import RuntimeView
from controller.errors import ConfigError, ControllerError, Reason, Refused, Retryable
from controller.manifest import MAX_MANIFEST_BYTES
from controller.plan import Plan, plan
from controller.recording import PassReport, PassResult
from controller.records import audit
from controller.records.dotenv import read_dotenv
from controller.records.files import file_key, write_failure
from controller.records.snapshots import list_snapshot_files
from controller.records.status import ApprovalsStatus, ContainerStatus, Status, applied_revision, read_watermark
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


DEPLOYED_EVENTS = frozenset({"applied", "drift_repaired"})  # the events that name what runs


class HostDigests:
    """``host_digest``, kept while its files stay as they were (stat'ed before they are read) and the
    settings are the same: a no-change pass reads none of them."""

    def __init__(self) -> None:
        self._kept: tuple[object, str] | None = None

    def get(self, config: Config) -> str:
        """The host digest of ``config``'s files and settings as they are now."""
        settings, files = _host_settings(config), _HostFiles.of(config).all()
        key = (settings, tuple(file_key(Path(name)) if name else None for name in files))
        if self._kept is None or self._kept[0] != key:
            self._kept = (key, _digest(settings, files))
        return self._kept[1]


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


@dataclass(frozen=True)
class PlanAnswer:
    """``plan``'s answer: the pass's verdict, and what fetch, verify and validate learned before it ended."""

    result: PassResult
    environment: str
    branch: str
    head: str | None = None
    signer: str | None = None
    image: str | None = None
    tag: str | None = None


class Pass:
    """One pass for one environment over a world; ``run`` decides, ``report`` says what it did."""

    def __init__(self, world: PassWorld, status: Status, options: PassOptions, *, now: datetime) -> None:
        self.world = world
        self.config = world.config
        self.ctx = PassContext(options=options, status=status, now=now)
        self._running: ContainerState | None = None  # read for the history guard, used again by the plan

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
            reason = write_failure(exc, self.config.paths.state)
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
        self.check_approvals()
        tally = self.ctx.tally
        if tally is not None and not tally.enough:
            reason, code = waiting_reason(tally), Reason.AWAITING_APPROVALS
            return PassResult("waiting", reason, plan=self.ctx.plan, code=code, approvals=tally.describe())
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
        ctx.host_digest = self.world.digests.get(self.config)
        if ctx.status.quarantined is not None:  # only a quarantine an earlier release wrote needs them
            ctx.earlier_digests = earlier_host_digests(self.config)
        self._running = running_container(self.world.engine)  # the plan reuses it: one engine call per pass
        ctx.records = remembered_revisions(self.config, ctx.status, self._running, deployed=self.world.deployed)
        ctx.guard = newest_revision(ctx.records, self.world.source)
        quarantined = ctx.status.quarantined in {f"{ctx.head}:{d}" for d in (ctx.host_digest, *ctx.earlier_digests)}
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
        """Step 2: the target must descend from the applied revision, as every record of it says."""
        target = self._target()
        source = self.world.source
        behind = [
            r for r in dict.fromkeys((self.ctx.guard, *self.ctx.records)) if r and not source.is_ancestor(r, target)
        ]
        if not behind:
            return
        applied = behind[0]
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
        earlier = {content_key(self._desired(), host=d) for d in ctx.earlier_digests}
        if ctx.options.force or ctx.status.quarantined not in {f"content:{c}" for c in (ctx.content, *earlier)}:
            return
        self._fall_back_to_applied()
        self.load_manifest()
        self.validate_manifest()

    def plan_change(self) -> None:
        """Step 6: compare with the actual container (one engine call)."""
        desired = self._desired()
        running, self._running = self._running, None
        self.ctx.actual = running if running is not None else self.world.engine().current()
        deployed = self.ctx.status.applied is not None
        self.ctx.plan = plan(desired, self.ctx.actual, deployed=deployed, adopt=self.ctx.options.adopt)

    def check_approvals(self) -> None:
        """docs/design.md §15: a change to what runs needs ``approvals.threshold`` people's approvals of its content.

        The content is the manifest file's SHA-256.  Content equal to the running content needs none
        (drift repair, a re-push, the fallback to the applied revision while the head is quarantined).
        """
        config = self.config.approvals
        content = self._desired().labels[LABEL_MANIFEST]
        if config is None or content == self._running_content():
            return
        self.world.at_step("approvals")
        self.ctx.tally = count_for(
            self.config, self.world.source, revision=self._target(), content=content, now=self.ctx.now
        )

    def _running_content(self) -> str | None:
        """The manifest SHA-256 of what runs: the managed container's label, else the applied revision's file."""
        actual = self.ctx.actual
        if actual is not None and actual.managed and actual.labels.get(LABEL_MANIFEST):
            return actual.labels[LABEL_MANIFEST]
        applied = applied_revision(self.ctx.status)
        if applied is None:
            return None
        try:
            data = self.world.source.read_file(
                applied, f"envs/{self.config.environment}.yaml", max_bytes=MAX_MANIFEST_BYTES
            )
        except Refused:  # gone from the fetched history, or never a manifest: nothing runs by it
            return None
        return hashlib.sha256(data).hexdigest()

    def verify_image(self) -> None:
        """The image's own signature (docs/design.md §14), when a check is configured: before anything is pulled.

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

    def learned(self, result: PassResult) -> PlanAnswer:
        """``plan``'s answer: the verdict, and what fetch, verify and validate learned before it ended."""
        ctx, config = self.ctx, self.config
        at_head = ctx.target == ctx.head  # a held head plans the applied revision: its facts are not the head's
        desired = ctx.desired if at_head else None
        return PlanAnswer(
            result=result,
            environment=config.environment,
            branch=config.source.branch,
            head=ctx.head,
            signer=ctx.verdict.signer if ctx.verdict and at_head else None,
            image=desired.image if desired else None,
            tag=desired.tag if desired else None,
        )

    def report(self, result: PassResult, *, recovered: dict[str, str] | None = None) -> PassReport:
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
            tag=ctx.desired.tag if ctx.desired else None,
            snapshot=snapshot,
            logs=ctx.logs,
            rewrite_allowed_over=ctx.rewrite_allowed_over,
            recovered=recovered,
            approvals=approvals_view(ctx.tally) if ctx.tally else None,
        )

    def _container_view(self, result: PassResult) -> ContainerStatus:
        if result.result == "unchanged" and self.ctx.actual is not None:
            return container_view(self.ctx.actual)
        return current_container(self.world.engine, self.config.environment)


def count_for(config: Config, source: GitSource, *, revision: str, content: str, now: datetime) -> approvals.Tally:
    """The approvals of ``content`` in ``revision``'s tree, counted against the host's approvers at ``now``."""
    assert config.approvals is not None  # noqa: S101 asked only when approvals are configured
    environment = config.environment
    files = source.read_folder(
        revision,
        approvals.folder(environment, content),
        max_entries=approvals.MAX_FILES,
        max_bytes=approvals.MAX_FILE_BYTES,
        code=Reason.BAD_APPROVALS,
    )
    return approvals.count_approvals(
        files,
        subject=approvals.Subject(config.approval_repository, environment, content),
        approvers=load_approvers(config),
        threshold=config.approvals.threshold,
        max_age=config.approvals.max_validity,
        now=now,
    )


@dataclass(frozen=True)
class HeadApprovals:
    """``approvals``' answer: the verified head and its content's tally."""

    revision: str
    tally: approvals.Tally


def head_approvals(config: Config, source: GitSource, *, applied: str | None, now: datetime) -> HeadApprovals:
    """Fetch, verify the head as a pass would, and count the approvals of its content (docs/design.md §15)."""
    if config.approvals is None:
        raise ConfigError("approvals are not configured: there is no approvals section in the config")
    head = source.fetch()
    verify_revision(source, load_policy(config), mode=config.trust.mode, applied=applied, head=head, now=now)
    data = source.read_file(head, f"envs/{config.environment}.yaml", max_bytes=MAX_MANIFEST_BYTES)
    content = hashlib.sha256(data).hexdigest()
    return HeadApprovals(head, count_for(config, source, revision=head, content=content, now=now))


def load_approvers(config: Config) -> approvals.Approvers:
    """The host's approvers (``approvals.approvers``, ``approvals.openpgp_keys``) and the trust's revoked keys."""
    assert config.approvals is not None  # noqa: S101 asked only when approvals are configured
    return approvals.load_approvers(
        Path(config.approvals.approvers),
        openpgp_keys=Path(config.approvals.openpgp_keys) if config.approvals.openpgp_keys else None,
        revoked_keys=Path(config.trust.revoked_keys) if config.trust.revoked_keys else None,
    )


def waiting_reason(tally: approvals.Tally) -> str:
    """``waiting for approvals (1 of 2: alice)``: the held change, in the status, page and logs."""
    names = f": {', '.join(tally.have)}" if tally.counted else ""
    return f"waiting for approvals ({len(tally.counted)} of {tally.need}{names})"


def approvals_view(tally: approvals.Tally) -> ApprovalsStatus:
    """A tally as the status file records it."""
    return ApprovalsStatus(
        content=tally.content,
        have=tally.have,
        need=tally.need,
        missing=tally.missing,
        expires={a.person: a.expires for a in tally.counted},
        not_counted=[r.reason for r in tally.rejected][:8],
    )


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


def running_container(engine: Callable[[], RuntimeView]) -> ContainerState | None:
    """The runtime container, or None when there is none or the engine cannot be asked (the guard's view)."""
    try:
        return engine().current()
    except ControllerError:
        return None


def remembered_revisions(
    config: Config, status: Status, running: ContainerState | None, *, deployed: audit.NewestEvent | None = None
) -> tuple[str, ...]:
    """Every record of the applied revision, each once: the watermark, the status file, the running
    container's revision label, the audit log's newest applied event.  Empty only on a host that never deployed."""
    paths = config.paths
    label = running.labels.get(LABEL_REVISION) if running is not None else None
    applied = (deployed or audit.NewestEvent(DEPLOYED_EVENTS)).get(paths.audit)
    logged = str(applied.get("revision") or "") if applied else None
    found = (read_watermark(paths.watermark), applied_revision(status), label, logged)
    return tuple(dict.fromkeys(revision for revision in found if revision))


def newest_revision(records: tuple[str, ...], source: GitSource) -> str | None:
    """The record every other record is an ancestor of: one record that lags (a failed write, a restored
    backup) never makes an older revision the guard.  Without such a record (the records diverge, or one
    is not in the fetched history) the first is returned, and the guard holds the target to all of them."""
    for candidate in records:
        if all(source.is_ancestor(other, candidate) for other in records):
            return candidate
    return records[0] if records else None


def remembered_revision(
    config: Config, status: Status, engine: Callable[[], RuntimeView], source: GitSource
) -> str | None:
    """The newest applied revision the records agree on by ancestry; None only on a host that never deployed."""
    return newest_revision(remembered_revisions(config, status, running_container(engine)), source)


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


@dataclass(frozen=True)
class _HostFiles:
    """The files a refusal may depend on, in the groups earlier releases hashed in different orders."""

    keys: tuple[str | None, ...]  # allowed_signers, OpenPGP keys, revoked keys, cosign keys
    approvers: tuple[str | None, ...]
    root: tuple[str, ...]  # the keyless trusted root
    dotenv: str

    @classmethod
    def of(cls, config: Config) -> _HostFiles:
        trust, signatures, approvals = config.trust, config.image.signatures, config.approvals
        return cls(
            keys=(
                trust.allowed_signers,
                trust.openpgp_keys,
                trust.revoked_keys,
                *(signatures.keys if signatures else ()),
            ),
            approvers=(approvals.approvers, approvals.openpgp_keys) if approvals else (),
            root=(signatures.keyless.trusted_root,) if signatures and signatures.keyless else (),
            dotenv=str(config.paths.dotenv),
        )

    def all(self) -> tuple[str | None, ...]:
        """Every file, in the order this release hashes them."""
        return (*self.keys, *self.approvers, self.dotenv, *self.root)


def _host_settings(config: Config) -> bytes:
    """The settings a verdict depends on: the image repository, the trust mode, keyless identities, provenance.

    Named field by field, so a setting added to the config later changes no digest (and lifts no quarantine).
    """
    signatures, provenance = config.image.signatures, config.image.provenance
    settings: dict[str, object] = {"repository": config.image.repository, "trust_mode": config.trust.mode}
    if signatures and signatures.keyless:
        settings["keyless"] = _identities(signatures.keyless.identities)
    if provenance:
        source = [provenance.source_repository, provenance.source_ref]
        settings["provenance"] = [*source, _identities(provenance.identities)]
    return json.dumps(settings, sort_keys=True).encode()


def _identities(identities: list[KeylessIdentityConfig]) -> list[list[str | None]]:
    return [[i.issuer, i.subject, i.subject_regexp] for i in identities]


def host_digest(config: Config) -> str:
    """SHA-256 of what on the host a refusal may depend on: its files (``_HostFiles``) and settings
    (``_host_settings``).  A change to either lifts a quarantine: the release is judged again."""
    return _digest(_host_settings(config), _HostFiles.of(config).all())


def _file_bytes(name: str | None) -> bytes:
    try:
        return Path(name).read_bytes() if name else b""
    except OSError:
        return b"\0missing"


def _digest(settings: bytes, files: Iterable[str | None], read: Callable[[str | None], bytes] = _file_bytes) -> str:
    digest = hashlib.sha256(settings)
    for name in files:
        digest.update(read(name))
    return digest.hexdigest()[:16]


_IDENTITY = {"issuer": True, "subject": True, "subject_regexp": True}
_IMAGE_73B9BD7: dict[str, Any] = {  # the image settings as that release had them, and no field added since
    "repository": True,
    "signatures": {"keys": True, "keyless": {"trusted_root": True, "identities": {"__all__": _IDENTITY}}},
    "provenance": {"source_repository": True, "source_ref": True, "identities": {"__all__": _IDENTITY}},
}
_APPROVALS_73B9BD7 = {"threshold", "approvers", "openpgp_keys", "repository", "max_age"}


def earlier_host_digests(config: Config) -> tuple[str, ...]:
    """The host digest as earlier releases computed it, so a quarantine one of them wrote still holds:
    cd76640 and before hashed the files only (no trusted root); 73b9bd7 hashed the whole ``image`` and
    ``approvals`` settings first, and the trusted root before the approvers.  Each file is read once."""
    files = _HostFiles.of(config)
    read = functools.cache(_file_bytes)
    files_only = _digest(b"", (*files.keys, *files.approvers, files.dotenv), read)
    settings = config.image.model_dump_json(include=_IMAGE_73B9BD7).encode()
    if config.approvals:
        settings += config.approvals.model_dump_json(include=_APPROVALS_73B9BD7).encode()
    settings_first = _digest(settings, (*files.keys, *files.root, *files.approvers, files.dotenv), read)
    return (files_only, settings_first)


def _newest_snapshot(folder: Path) -> str | None:
    files = list_snapshot_files(folder)
    return files[0].stem if files else None
