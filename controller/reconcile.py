"""One reconcile pass (DESIGN §9) as a list of named steps, with status recorded in a ``finally``.

fetch → guard history → verify → load → validate → plan → apply (→ health
gate, inside apply) → record.  Each step reads the pass context and adds to
it.  Errors decide what happens next: ``Refused`` quarantines the revision
(until the head or the host's trust/.env files change, or ``--force``),
``Retryable`` leaves everything running and asks for a backoff, anything
else is a bug and is re-raised after the status is written.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from controller import audit
from controller.config import Config
from controller.containers import ContainerState
from controller.contract import DesiredContainer, desired_from_bytes, read_dotenv
from controller.docker_engine import Engine
from controller.errors import ControllerError, Reason, Refused, Retryable
from controller.manifest import MAX_MANIFEST_BYTES
from controller.plan import Plan, plan
from controller.rollout import HealthGateFailed, Outcome, Rollout, checkpoint
from controller.signatures.policy import Verdict, VerifiedCache
from controller.snapshots import Snapshot
from controller.source import GitSource
from controller.status import (
    AppliedStatus,
    AttemptStatus,
    ContainerStatus,
    Phase,
    Result,
    SourceStatus,
    Status,
    read_status,
    write_status,
)
from controller.verification import load_policy, verify_revision

log = logging.getLogger("dreichor.reconcile")
Clock = Callable[[], datetime]
PassVerdict = Literal["applied", "unchanged", "refused", "failed", "rolled_back", "suspended"]
STALE_AFTER_INTERVALS = 5


@dataclass
class PassOptions:
    """How the person or scheduler asked for this pass."""

    force: bool = False
    allow_rewrite: bool = False
    adopt: bool = False
    dry_run: bool = False


@dataclass
class PassContext:
    """What the steps learn, in order."""

    options: PassOptions
    status: Status
    now: datetime
    head: str | None = None
    target: str | None = None
    verdict: Verdict | None = None
    manifest: bytes | None = None
    desired: DesiredContainer | None = None
    plan: Plan | None = None
    actual: ContainerState | None = None
    outcome: Outcome | None = None
    host_digest: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PassResult:
    """The pass's verdict, for the CLI's exit code and the scheduler's backoff."""

    result: PassVerdict
    reason: str
    plan: Plan | None = None
    retryable: bool = False
    code: Reason = Reason.IN_SYNC


class Reconciler:
    """Runs passes for one environment; holds what may be reused between passes."""

    def __init__(self, config: Config, *, clock: Clock = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.paths = config.paths
        self.clock = clock
        self.cache = VerifiedCache()
        self.source = GitSource(
            self.paths.repo,
            url=config.source.url,
            branch=config.source.branch,
            timeout=config.source.timeout,
            env=git_credentials(self.dotenv()),
        )
        self._engine: Engine | None = None

    # -- world -----------------------------------------------------------------------------

    def engine(self) -> Engine:
        """The Docker adapter, connected on first use and again after a failure."""
        if self._engine is None:
            self._engine = Engine(self.config.docker.url, environment=self.config.environment)
        return self._engine

    def rollout(self) -> Rollout:
        """The rollout for this environment."""
        auth = registry_auth(self.dotenv())
        return Rollout(self.engine(), paths=self.paths, health=self.config.health, clock=self.clock, auth=auth)

    def close(self) -> None:
        """Drop the engine connection."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def dotenv(self) -> dict[str, str]:
        """The environment's .env, or nothing when it cannot be read (a pass reports that itself)."""
        try:
            return read_dotenv(self.paths.dotenv)
        except (OSError, UnicodeDecodeError):
            return {}

    # -- the pass --------------------------------------------------------------------------

    def run_pass(self, options: PassOptions | None = None) -> PassResult:
        """One pass; the status file is written whatever happens."""
        options = options or PassOptions()
        ctx = PassContext(options=options, status=self.load_status(), now=self.clock())
        result = PassResult("failed", "the pass did not finish", code=Reason.INTERNAL_ERROR)
        try:
            result = self._steps(ctx)
        except Refused as exc:
            result = PassResult("refused", str(exc), code=exc.code)
        except HealthGateFailed as exc:
            result = PassResult("rolled_back", exc.reason, code=Reason.HEALTH_GATE_FAILED)
            ctx.notes.append(exc.logs)
        except Retryable as exc:
            result = PassResult("failed", exc.reason, retryable=True, code=exc.code)
            if exc.code == Reason.ENGINE_UNAVAILABLE:
                self.close()
        except OSError as exc:  # the state folder: read-only, full, or gone
            result = PassResult(
                "failed", f"cannot write state: {exc.strerror or exc}", retryable=True, code=Reason.STATE_IO
            )
        finally:
            if not options.dry_run:
                self.record(ctx, result)
        return result

    def _steps(self, ctx: PassContext) -> PassResult:
        if self.paths.suspended_marker.exists() and not ctx.options.force:
            return PassResult(
                "suspended", "the environment is suspended: run 'dreichor-controller resume'", code=Reason.SUSPENDED
            )
        self.fetch_source(ctx)
        self.choose_target(ctx)
        self.guard_history(ctx)
        self.verify_commits(ctx)
        self.load_manifest(ctx)
        self.validate_manifest(ctx)
        self.plan_change(ctx)
        if ctx.options.dry_run:
            assert ctx.plan is not None  # noqa: S101 set by plan_change
            return PassResult("unchanged", ctx.plan.reason, plan=ctx.plan)
        return self.apply_plan(ctx)

    def fetch_source(self, ctx: PassContext) -> None:
        """Step 1: fetch the branch into the cache."""
        checkpoint("fetch")
        try:
            ctx.head = self.source.fetch()
        except Retryable as exc:
            ctx.status.source.last_error = exc.reason
            raise
        ctx.status.source.head = ctx.head
        ctx.status.source.fetched_at = ctx.now
        ctx.status.source.last_error = None

    def choose_target(self, ctx: PassContext) -> None:
        """The head, unless it is quarantined (then the applied revision, to keep repairing drift)."""
        ctx.host_digest = self._host_digest()
        quarantined = ctx.status.quarantined == f"{ctx.head}:{ctx.host_digest}"
        if quarantined and not ctx.options.force and ctx.status.applied is not None:
            ctx.target = ctx.status.applied.revision
        elif quarantined and not ctx.options.force:
            raise Refused(_reason_of(ctx.status) or "the head is quarantined", code=Reason.QUARANTINED)
        else:
            ctx.target = ctx.head

    def guard_history(self, ctx: PassContext) -> None:
        """Step 2: the target must descend from the applied revision."""
        applied = ctx.status.applied.revision if ctx.status.applied else None
        assert ctx.target is not None  # noqa: S101 set by choose_target
        if applied is None or self.source.is_ancestor(applied, ctx.target):
            return
        if not ctx.options.allow_rewrite:
            raise Refused(
                f"history rewritten: {ctx.target[:12]} does not descend from applied {applied[:12]}",
                code=Reason.HISTORY_REWRITTEN,
            )
        audit.append_event(self.paths.audit, "rewrite_allowed", at=ctx.now, revision=ctx.target, applied=applied)

    def verify_commits(self, ctx: PassContext) -> None:
        """Step 3: signatures, against the host's trust policy."""
        checkpoint("verify")
        assert ctx.target is not None  # noqa: S101 set by choose_target
        applied = ctx.status.applied.revision if ctx.status.applied else None
        ctx.verdict = verify_revision(
            self.source,
            load_policy(self.config),
            mode=self.config.trust.mode,
            applied=applied,
            head=ctx.target,
            now=ctx.now,
            cache=self.cache,
        )

    def load_manifest(self, ctx: PassContext) -> None:
        """Step 4: ``envs/<env>.yaml`` from the verified commit's tree."""
        assert ctx.target is not None  # noqa: S101 set by choose_target
        ctx.manifest = self.source.read_file(
            ctx.target, f"envs/{self.config.environment}.yaml", max_bytes=MAX_MANIFEST_BYTES
        )

    def validate_manifest(self, ctx: PassContext) -> None:
        """Step 5: the layout contract → the desired container."""
        checkpoint("validate")
        assert ctx.manifest is not None and ctx.target is not None  # noqa: S101 set by earlier steps
        try:
            dotenv = read_dotenv(self.paths.dotenv)
        except (OSError, UnicodeDecodeError) as exc:
            raise Retryable(f"cannot read {self.paths.dotenv}: {exc}", code=Reason.HOST_CONFIG) from None
        ctx.desired = desired_from_bytes(
            ctx.manifest,
            environment=self.config.environment,
            repository=self.config.image.repository,
            paths=self.paths,
            dotenv=dotenv,
            revision=ctx.target,
            what=f"envs/{self.config.environment}.yaml at {ctx.target[:12]}",
        )

    def plan_change(self, ctx: PassContext) -> None:
        """Step 6: compare with the actual container."""
        assert ctx.desired is not None  # noqa: S101 set by validate_manifest
        ctx.actual = self.engine().runtime_containers().get(self.engine().canonical)
        ctx.plan = plan(ctx.desired, ctx.actual, deployed=ctx.status.applied is not None, adopt=ctx.options.adopt)

    def apply_plan(self, ctx: PassContext) -> PassResult:
        """Steps 7 and 8: pull, snapshot, swap, health gate (rollback inside)."""
        assert ctx.plan is not None and ctx.desired is not None  # noqa: S101 set by earlier steps
        if ctx.plan.action == "nothing":
            return PassResult("unchanged", ctx.plan.reason, plan=ctx.plan)
        ctx.status.phase = "Progressing"
        self._write(ctx.status, ctx.now)
        ctx.outcome = self.rollout().apply(ctx.plan, ctx.desired)
        return PassResult("applied", ctx.plan.reason, plan=ctx.plan)

    # -- record ----------------------------------------------------------------------------

    def record(self, ctx: PassContext, result: PassResult) -> None:
        """Step 9: status file and audit event, on every exit path."""
        checkpoint("record")
        status = ctx.status
        status.suspended = self.paths.suspended_marker.exists()
        try:
            self._record_attempt(ctx, result)
        except OSError as exc:
            log.error("cannot append to the audit log", extra={"error": str(exc)})
        unchanged = ctx.plan is not None and ctx.plan.action == "nothing"
        status.container = _container_view(ctx.actual) if unchanged and ctx.actual else self._container_status()
        status.phase = _phase(result, status)
        fetched = status.source.fetched_at
        status.source.stale = fetched is None or (
            ctx.now - fetched > timedelta(seconds=STALE_AFTER_INTERVALS * self.config.source.interval)
        )
        self._write(status, ctx.now)

    def _record_attempt(self, ctx: PassContext, result: PassResult) -> None:
        status, now = ctx.status, ctx.now
        target = ctx.target or ctx.head
        if result.result == "unchanged" and self._applied_elsewhere(ctx):
            result = PassResult(
                "applied", "the container already runs this revision (recorded after a restart)", plan=result.plan
            )
        if result.result == "applied" and ctx.desired is not None and ctx.verdict is not None:
            status.applied = AppliedStatus(
                revision=ctx.target or "", image=ctx.desired.image, signer=ctx.verdict.signer, applied_at=now
            )
            status.last_snapshot = ctx.outcome.snapshot if ctx.outcome else status.last_snapshot
            if ctx.target == ctx.head:
                status.quarantined = None
            drift = ctx.plan is not None and ctx.plan.action == "repair"
            event = "drift_repaired" if drift else "applied"
            audit.append_event(
                self.paths.audit,
                event,
                at=now,
                revision=target,
                image=ctx.desired.image,
                signer=ctx.verdict.signer,
                reason=result.reason,
            )
        elif result.result in ("refused", "rolled_back"):
            status.quarantined = f"{ctx.head}:{ctx.host_digest or self._host_digest()}" if ctx.head else None
            if ctx.outcome is None and result.result == "rolled_back":
                status.last_snapshot = _newest_snapshot(self.paths.snapshots) or status.last_snapshot
            already = status.last_attempt and status.last_attempt.reason == result.reason
            if not already:
                audit.append_event(self.paths.audit, result.result, at=now, revision=target, reason=result.reason)
        elif result.result == "failed" and not result.retryable:
            audit.append_event(self.paths.audit, "failed", at=now, revision=target, reason=result.reason)
        if result.result == "suspended" or (result.result == "unchanged" and ctx.target != ctx.head):
            return  # keep the last decision visible
        logs = "\n".join(n for n in ctx.notes if n) or None
        status.last_attempt = AttemptStatus(
            revision=target, result=_attempt_result(result), reason=result.reason, at=now, logs=logs
        )

    def record_rollback(self, snapshot: Snapshot, outcome: Outcome, *, now: datetime) -> None:
        """The status after a break-glass rollback: the snapshot's revision runs, suspended."""
        status = self.load_status()
        status.applied = AppliedStatus(
            revision=snapshot.revision or "",
            image=snapshot.image or "",
            signer="break-glass rollback",
            applied_at=now,
        )
        status.last_attempt = AttemptStatus(
            revision=snapshot.revision, result="applied", reason=f"restored snapshot {snapshot.id}", at=now
        )
        status.last_snapshot = outcome.snapshot or status.last_snapshot
        status.suspended = True
        status.container = self._container_status()
        status.phase = "Suspended"
        self._write(status, now)

    @staticmethod
    def _applied_elsewhere(ctx: PassContext) -> bool:
        """The container matches a target the status does not record as applied (a crash before the record)."""
        applied = ctx.status.applied.revision if ctx.status.applied else None
        return ctx.verdict is not None and ctx.target is not None and ctx.target != applied

    def _container_status(self) -> ContainerStatus:
        name = f"dreichor-runtime-{self.config.environment}"
        try:
            state = self.engine().inspect(name)
        except ControllerError:
            return ContainerStatus(name=name, state="unknown", health="unknown")
        return _container_view(state) if state else ContainerStatus(name=name)

    def _write(self, status: Status, now: datetime) -> None:
        status.updated_at = now
        try:
            write_status(self.paths.status, status)
        except OSError as exc:
            log.error("cannot write the status file", extra={"error": str(exc)})

    def load_status(self) -> Status:
        """The status file, or a fresh one."""
        status = read_status(self.paths.status)
        if status is not None and status.environment == self.config.environment:
            status.source.url, status.source.branch = self.config.source.url, self.config.source.branch
            return status
        return Status(
            environment=self.config.environment,
            updated_at=self.clock(),
            source=SourceStatus(url=self.config.source.url, branch=self.config.source.branch),
            container=ContainerStatus(name=f"dreichor-runtime-{self.config.environment}"),
        )

    def _host_digest(self) -> str:
        """SHA-256 of the host files a refusal may depend on: trust files and ``.env``."""
        digest = hashlib.sha256()
        trust = self.config.trust
        for name in (trust.allowed_signers, trust.openpgp_keys, trust.revoked_keys, str(self.paths.dotenv)):
            try:
                digest.update(Path(name).read_bytes() if name else b"")
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()[:16]


def _container_view(state: ContainerState) -> ContainerStatus:
    return ContainerStatus(
        name=state.name, id=state.id, image=state.image, state=state.status, health=state.health or "none"
    )


def _phase(result: PassResult, status: Status) -> Phase:
    if status.suspended:
        return "Suspended"
    if result.result in ("applied", "unchanged") and status.container.state == "running":
        return "InSync" if not status.quarantined else "Degraded"
    return "Degraded"


def _attempt_result(result: PassResult) -> Result:
    results: dict[str, Result] = {
        "applied": "applied",
        "refused": "refused",
        "failed": "failed",
        "rolled_back": "rolled_back",
    }
    return results.get(result.result, "unchanged")


def _reason_of(status: Status) -> str | None:
    return status.last_attempt.reason if status.last_attempt else None


def _newest_snapshot(folder: Path) -> str | None:
    files = sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []
    return files[0].stem if files else None


def git_credentials(dotenv: dict[str, str]) -> dict[str, str]:
    """Environment for git: an https token as an extra header, or an ssh key; never on the command line."""
    env: dict[str, str] = {}
    token = dotenv.get("GIT_TOKEN")
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    key = dotenv.get("GIT_SSH_KEY")
    if key:
        env["GIT_SSH_COMMAND"] = f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes"
    return env


def registry_auth(dotenv: dict[str, str]) -> dict[str, str] | None:
    """Registry credentials from ``.env`` (REGISTRY_USERNAME / REGISTRY_PASSWORD), if set."""
    user, password = dotenv.get("REGISTRY_USERNAME"), dotenv.get("REGISTRY_PASSWORD")
    return {"username": user, "password": password} if user and password else None
