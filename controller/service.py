"""``EnvironmentService``: every operation on one environment, for the CLI, the daemon and the API alike.

sync, plan, verify, rollback, suspend, resume, recover, history and status
live here, once, so the entry points cannot drift apart (``verify`` fetches
with the same ``.env`` credentials as ``sync``; every path that recovers
from a crash records ``recovered``).  The service owns the pass lock, crash
recovery and their audit events; its world — the engine, the git source, the
clock — is passed in, so the unit tests drive it over a fake engine.

Extension points: ``audit_hooks`` are called with every audit event written
(notifications, commit statuses), with the pass's facts the event does not
record added (``image``, ``signer``, ``image_signer`` and ``log``: the failed container's
output); ``notice_hooks`` with the pass's moments that are no audit event
(``progressing`` before an apply, ``unchanged`` at the head, ``stale`` when
the source has just become stale); ``image_check`` is the pass's image
signature step (DESIGN §14).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from controller.config import DEFAULT_REPOSITORY, Config, HostPaths, load_config
from controller.contract import DesiredContainer, desired_from_bytes
from controller.engine.docker import Engine
from controller.engine.port import Runtime, RuntimeView, ServiceRuntime
from controller.engine.swarm import SwarmEngine
from controller.errors import ConfigError, Reason, Refused, Retryable
from controller.manifest import MAX_MANIFEST_BYTES
from controller.reconcile import ImageCheck, Pass, PassOptions, PassWorld, current_container, remembered_revision
from controller.recording import AuditEvent, PassResult, record, rolled_back_to, suspension
from controller.records import audit
from controller.records.dotenv import read_dotenv
from controller.records.files import create_new
from controller.records.host_init import init_layout, next_steps
from controller.records.locks import pass_lock
from controller.records.snapshots import Snapshot, find_snapshot, list_snapshots, restorable
from controller.records.status import (
    AuditAnchor,
    ContainerStatus,
    SourceStatus,
    Status,
    applied_revision,
    damaged_copies,
    keep_damaged,
    read_status,
    read_watermark,
    status_problem,
    write_status,
    write_watermark,
)
from controller.rollout.base import Applier, Outcome, Rollout, checkpoint
from controller.rollout.swarm import SwarmRollout
from controller.signatures.commits.policy import Verdict, VerifiedCache
from controller.signatures.commits.verification import load_policy, verify_revision
from controller.signatures.images.cosign import load_cosign_keys
from controller.signatures.images.verifier import ImageVerdict, registry_for, verify_image
from controller.source import GitSource
from controller.untrusted import bounded

log = logging.getLogger("dreichor.service")
Clock = Callable[[], datetime]
AuditHook = Callable[[dict[str, Any]], None]
STALE_AFTER_INTERVALS = 5

__all__ = [
    "EnvironmentService",
    "History",
    "PassOptions",
    "PassResult",
    "Verification",
    "init_layout",
    "next_steps",
    "validate_file",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Verification:
    """``verify``'s answer: the revision, and its verdict or the refusal."""

    revision: str
    verdict: Verdict | None
    refusal: Refused | None = None
    image: ImageVerdict | None = None  # the declared image's signature, when ``image.signatures`` is set


@dataclass(frozen=True)
class History:
    """``history``'s answer: snapshots (newest first), audit events (oldest first), the chain's state."""

    snapshots: list[Snapshot]
    events: list[dict[str, Any]]
    broken: str | None = None


class EnvironmentService:
    """The one object per environment that every entry point calls."""

    def __init__(
        self,
        config: Config,
        *,
        engine: Callable[[], RuntimeView] | None = None,
        source: GitSource | None = None,
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
        self._connect = engine or self._docker
        self._engine: RuntimeView | None = None
        self.source = source or GitSource(
            self.paths.repo,
            url=config.source.url,
            branch=config.source.branch,
            timeout=config.source.timeout,
            env=git_credentials(self.dotenv()),
        )
        self.world = PassWorld(
            config=config,
            source=self.source,
            engine=self.engine,
            rollout=self.rollout,
            cache=VerifiedCache(),
            progress=self._progress,
            at_step=at_step,
        )
        if config.image.signatures is not None:
            self.world.image_check = self._check_image
            self.world.image_signer_trusted = self._trusted_image_signer
        self.audit_hooks: list[AuditHook] = []
        self._anchor: audit.Anchor | None = None  # the audit log's tail after this operation's appends
        self.notice_hooks: list[AuditHook] = []
        self._run: Pass | None = None

    @classmethod
    def from_file(cls, config_file: Path) -> EnvironmentService:
        """The service for the environment a ``controller.yaml`` describes."""
        return cls(load_config(config_file))

    # -- the world ---------------------------------------------------------------------------

    def _docker(self) -> RuntimeView:
        docker = self.config.docker
        if docker.mode == "swarm":
            return SwarmEngine(docker.url, environment=self.config.environment, monitor=self.config.health.stable)
        return Engine(docker.url, environment=self.config.environment)

    def engine(self) -> RuntimeView:
        """The engine, connected on first use and again after a failure."""
        if self._engine is None:
            self._engine = self._connect()
        return self._engine

    def rollout(self) -> Applier:
        """The rollout for this environment and its ``docker.mode``, with the registry credentials from ``.env``."""
        world: dict[str, Any] = {
            "paths": self.paths,
            "health": self.config.health,
            "clock": self.clock,
            "sleep": self.sleep,
            "monotonic": self.monotonic,
            "auth": registry_auth(self.dotenv()),
            "at_step": self.at_step,
        }
        if self.config.docker.mode == "swarm":
            return SwarmRollout(cast(ServiceRuntime, self.engine()), **world)
        return Rollout(cast(Runtime, self.engine()), **world)

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

    @property
    def image_check(self) -> ImageCheck | None:
        """The image signature step of the pass (None: not configured)."""
        return self.world.image_check

    @image_check.setter
    def image_check(self, check: ImageCheck | None) -> None:
        self.world.image_check = check

    # -- passes ------------------------------------------------------------------------------

    def sync(self, options: PassOptions | None = None) -> PassResult:
        """One pass under the pass lock, after finishing a swap a crash interrupted."""
        with pass_lock(self.paths.pass_lock):
            try:
                recovered = self.rollout().recover() if self.paths.journal.exists() else None
            except Retryable as exc:  # an engine that cannot be reached to finish the swap: recorded, retried
                return self._pass(options or PassOptions(), unrecovered=exc)
            return self._pass(options or PassOptions(), recovered=recovered)

    def plan(self) -> PassResult:
        """What the next sync would do: every step up to the plan, nothing changed or recorded."""
        return self._pass(PassOptions(dry_run=True))

    def _pass(
        self, options: PassOptions, *, recovered: str | None = None, unrecovered: Retryable | None = None
    ) -> PassResult:
        damaged = self.status_damage(keep_aside=not options.dry_run)
        previous = self.load_status()
        run = self._run = Pass(self.world, previous, options, now=self.clock())
        result = PassResult("failed", "the pass did not finish", code=Reason.INTERNAL_ERROR)
        try:
            if damaged:
                result = PassResult("refused", damaged, code=Reason.STATUS_UNREADABLE)
            elif unrecovered is not None:
                reason = f"cannot finish the swap a crash interrupted: {unrecovered.reason}"
                result = PassResult("failed", reason, retryable=True, code=unrecovered.code)
            else:
                result = run.run()
        finally:
            if not options.dry_run:
                self._record(previous, run, result, recovered=recovered)
            if result.code == Reason.ENGINE_UNAVAILABLE:
                self.close()
        return result

    def _record(self, previous: Status, run: Pass, result: PassResult, *, recovered: str | None) -> None:
        self.at_step("record")
        stale_after = timedelta(seconds=STALE_AFTER_INTERVALS * self.config.source.interval)
        report = run.report(result, recovered=recovered)
        status, events = record(previous, report, now=run.ctx.now, stale_after=stale_after)
        facts = {
            "image": report.image,
            "signer": report.signer,
            "image_signer": report.image_signer,
            "log": report.logs,
        }
        for event in events:
            self.emit(event, at=run.ctx.now, facts=facts)
        self._remember(previous, status, guard=run.ctx.guard)
        self._write(status)
        if status.source.stale and not previous.source.stale:
            self._notice("stale", reason=status.source.last_error or "", code=str(Reason.FETCH_FAILED))
        if result.result == "unchanged" and report.target and report.target == report.head:
            self._notice("unchanged", revision=report.target, **facts)

    def _remember(self, previous: Status, status: Status, *, guard: str | None) -> None:
        """Move the watermark to a newly applied revision (or set it on a host that has none yet)."""
        applied = applied_revision(status)
        missing = read_watermark(self.paths.watermark) is None
        revision = applied if applied and (applied != applied_revision(previous) or missing) else None
        revision = revision or (guard if missing else None)
        if revision is None:
            return
        try:
            write_watermark(self.paths.watermark, revision)
        except OSError as exc:
            log.error("cannot write the watermark", extra={"error": str(exc)})

    def status_damage(self, *, keep_aside: bool = False) -> str | None:
        """Why passes are stopped by a damaged status file (None: they are not); ``keep_aside`` moves it."""
        path = self.paths.status
        problem = status_problem(path)
        if problem is not None and keep_aside:
            keep_damaged(path, now=self.clock())
            problem = None
        copies = damaged_copies(path)
        if copies:
            why = status_problem(copies[-1]) or f"{copies[-1].name} was kept aside"
            return (
                f"{why}; nothing is deployed until a person moves it back repaired or deletes it (docs/operations.md)"
            )
        if problem is not None:
            return f"{problem}; the next sync keeps it aside and deploys nothing until a person repairs it"
        return None

    def _progress(self) -> None:
        status = self.load_status()
        status.phase, status.updated_at = "Progressing", self.clock()
        self._write(status)
        ctx = self._run.ctx if self._run else None
        if ctx is not None:
            image, signer = ctx.desired.image if ctx.desired else None, ctx.verdict.signer if ctx.verdict else None
            self._notice("progressing", revision=ctx.target, image=image, signer=signer)

    def _notice(self, kind: str, **fields: Any) -> None:
        """Tell the notice hooks a moment of the pass that is no audit event."""
        self._tell(self.notice_hooks, {"event": kind, **fields})

    # -- crash recovery ----------------------------------------------------------------------

    def recover(self) -> str | None:
        """Finish or undo a swap a crash interrupted (at the daemon's start); say what was done."""
        with pass_lock(self.paths.pass_lock):  # the record too: a sync waiting for it must not be overwritten
            done = self.rollout().recover()
            if done:
                self.emit(AuditEvent("recovered", {"reason": done}), at=self.clock())
                status = read_status(self.paths.status)
                if status is not None:
                    self._write(status)  # the audit anchor follows every append
                log.warning("recovered from an interrupted run", extra={"done": done})
        return done

    # -- verification ------------------------------------------------------------------------

    def verify(self, rev: str | None = None) -> Verification:
        """Fetch (with the same credentials as a pass), then verify ``rev`` or the head."""
        head = self.source.fetch()
        revision = self.source.resolve(rev) if rev else head
        applied = remembered_revision(self.config, self.load_status(), self.engine)
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
            image = self._verify_declared_image(revision)
        except Refused as exc:
            return Verification(revision, verdict, exc)
        return Verification(revision, verdict, image=image)

    def _verify_declared_image(self, revision: str) -> ImageVerdict | None:
        """With ``image.signatures`` set, the signature of the image ``revision``'s manifest declares.

        The manifest is judged offline, as ``validate`` does: ``.env`` is the pass's business, not ``verify``'s.
        """
        if self.config.image.signatures is None:
            return None
        path = f"envs/{self.config.environment}.yaml"
        desired = desired_from_bytes(
            self.source.read_file(revision, path, max_bytes=MAX_MANIFEST_BYTES),
            environment=self.config.environment,
            repository=self.config.image.repository,
            paths=self.config.paths,
            dotenv=None,
            revision=revision,
            what=f"{path} at {revision[:12]}",
        )
        return self.verify_image(desired.image)

    def verify_image(self, reference: str) -> ImageVerdict:
        """The cosign signature of ``reference`` (``repo@sha256:…``) against ``image.signatures.keys``."""
        signatures = self.config.image.signatures
        if signatures is None:
            raise ConfigError("image.signatures.keys is not set in the config: there is no key to verify against")
        keys = load_cosign_keys(signatures.keys)
        registry = registry_for(reference, credentials=registry_auth(self.dotenv()))
        return verify_image(reference, keys=keys, registry=registry)

    def _check_image(self, desired: DesiredContainer) -> str:
        """The pass's image step: the image's signer, or ``Refused`` before anything is pulled."""
        try:
            return self.verify_image(desired.image).image_signer
        except ConfigError as exc:
            raise Retryable(str(exc), code=Reason.HOST_CONFIG) from None

    def _trusted_image_signer(self, signer: str) -> bool:
        """Whether a recorded image signer is still one of ``image.signatures.keys`` (a rotated key is not)."""
        signatures = self.config.image.signatures
        try:
            keys = load_cosign_keys(signatures.keys) if signatures else ()
        except ConfigError:
            return False  # the check itself says what is wrong with the keys
        return any(key.fingerprint == signer for key in keys)

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
                self.load_status(),
                revision=snapshot.revision,
                image=snapshot.image,
                snapshot=snapshot.id,
                taken=outcome.snapshot,
                container=current_container(self.engine, self.config.environment),
                now=now,
            )
            self._write(status)
        return snapshot

    def suspend(self, reason: str = "suspended by an operator") -> None:
        """Stop acting on new revisions (waits for a pass in progress, like a pass does)."""
        with pass_lock(self.paths.pass_lock):
            self._set_suspended(True, reason=reason)

    def resume(self, reason: str = "resumed by an operator") -> None:
        """Act on new revisions again, from the next pass (waits for a pass in progress)."""
        with pass_lock(self.paths.pass_lock):
            self._set_suspended(False, reason=reason)

    def _restore_suspended(self, snapshot: Snapshot, *, reason: str) -> Outcome:
        """Restore with the marker down, so a crash mid-restore leaves the environment suspended;
        a restore that fails takes the marker away again, and only a done one is recorded as suspended."""
        marker = self.paths.suspended_marker
        placed = not marker.exists()
        if placed:
            create_new(marker, f"{reason}\n".encode(), mode=0o600)
        try:
            outcome = self.rollout().restore(snapshot)
        except Exception:
            if placed:
                marker.unlink(missing_ok=True)
            raise
        if placed:
            self._record_suspension(True, reason=reason)
        return outcome

    def _set_suspended(self, suspended: bool, *, reason: str) -> None:
        marker = self.paths.suspended_marker
        if suspended == marker.exists():
            return
        if suspended:
            create_new(marker, f"{reason}\n".encode(), mode=0o600)
        else:
            marker.unlink()
        self._record_suspension(suspended, reason=reason)

    def _record_suspension(self, suspended: bool, *, reason: str) -> None:
        now = self.clock()
        self.emit(AuditEvent("suspended" if suspended else "resumed", {"reason": reason}), at=now)
        status = read_status(self.paths.status)
        if status is not None:
            self._write(suspension(status, suspended=suspended, now=now))

    # -- reading -----------------------------------------------------------------------------

    def status(self) -> Status | None:
        """The status file, or None when there is none (yet) or it cannot be read."""
        return read_status(self.paths.status)

    def history(self, *, verify: bool = False) -> History:
        """Snapshots and audit events; with ``verify``, whether the chain holds and reaches its anchor."""
        status = read_status(self.paths.status)
        anchor = status.audit if status is not None else None
        recorded = audit.Anchor(anchor.events, anchor.head) if anchor is not None else None
        broken = audit.verify_chain(self.paths.audit, recorded) if verify else None
        events = [
            {k: bounded(v) if isinstance(v, str) else v for k, v in e.items()}
            for e in audit.read_events(self.paths.audit)
        ]
        return History(list_snapshots(self.paths.snapshots), events, broken)

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

    # -- writing -----------------------------------------------------------------------------

    def emit(self, event: AuditEvent, *, at: datetime, facts: dict[str, Any] | None = None) -> None:
        """Append an audit event, then tell the hooks (with ``facts`` the event does not record, if given);
        neither a full disk nor a hook fails the caller."""
        try:
            written = audit.append_event(self.paths.audit, event.event, at=at, **event.fields)
            self._anchor = audit.anchor(self.paths.audit)
        except OSError as exc:
            log.error("cannot append to the audit log", extra={"error": str(exc)})
            return
        self._tell(self.audit_hooks, {**(facts or {}), **written})

    def _tell(self, hooks: list[AuditHook], event: dict[str, Any]) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                log.exception("an audit hook failed", extra={"event": event.get("event")})

    def _write(self, status: Status) -> None:
        """Write the status with the audit anchor: after this operation's appends, else as recorded."""
        try:
            anchor = self._anchor or (None if status.audit else audit.anchor(self.paths.audit))
            if anchor is not None:
                status.audit = AuditAnchor(events=anchor.events, head=anchor.head)
            write_status(self.paths.status, status)
        except OSError as exc:
            log.error("cannot write the status file", extra={"error": str(exc)})
        finally:
            self._anchor = None


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
        try:
            dotenv = read_dotenv(config.paths.dotenv)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {config.paths.dotenv}: {exc}") from None
    return desired_from_bytes(
        data,
        environment=environment,
        repository=config.image.repository if config else DEFAULT_REPOSITORY,
        paths=config.paths if config else HostPaths(Path("/opt/dreichor"), environment),
        dotenv=dotenv,
        what=str(file),
    )


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
