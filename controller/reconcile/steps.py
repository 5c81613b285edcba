"""One reconcile pass (docs/design.md §9): one step shape, and ``STEPS``, the one statement of its order.

Each step takes the pass (its world and its context) and says go on (``None``) or gives the pass's
outcome (a ``PassResult``), as a step of Flux's reconcilers returns ``(Result, error)``.  The first
outcome ends the decision; the last step records it, whatever happened.  A step's expected failures
are outcomes too (``Pass.outcome_of``): ``Refused`` quarantines what would have run — the desired
container's content, so the same change under another commit id stays quarantined; or the head
itself when the refusal came before its content was known — until a different change, a change of
the host's trust/cosign key/.env files, or ``--force``; ``Retryable`` leaves everything running and
asks for a backoff; anything else is a bug and propagates.  A change that lacks approvals
(docs/design.md §15) is neither: it is held, ``waiting``, and the next pass looks again.  The steps
decide; ``reconcile.record`` turns what they did into status and audit events, and the record step
writes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.engine.port import RuntimeView
from controller.errors import ConfigError, ControllerError, Reason, Refused, Retryable
from controller.model.containers import ContainerState
from controller.model.desired import (
    LABEL_MANIFEST,
    LABEL_REVISION,
    DesiredContainer,
    container_name,
    desired_for,
)
from controller.model.manifest import manifest_sha256
from controller.model.plan import Plan, plan
from controller.model.windows import DeployWindows, WindowState
from controller.model.windows import waiting_reason as waiting_reason_for_window
from controller.reconcile.approvals import approvals_view, count_for, waiting_reason
from controller.reconcile.context import PassContext, PassOptions, PassWorld
from controller.reconcile.quarantine import content_key, earlier_host_digests, held_content, held_head, host_digest
from controller.reconcile.record import AuditEvent, PassReport, PassResult, record
from controller.reconcile.revisions import newest_revision, remembered_revisions, running_container
from controller.records.dotenv import load_dotenv
from controller.records.files import write_failure
from controller.records.snapshots import list_snapshot_files
from controller.records.status import ContainerStatus, WindowStatus, applied_revision
from controller.rollout.base import HealthGateFailed, RecoveryUnsettled
from controller.signatures.commits.verification import verify_on_host
from controller.signatures.images.verifier import ImageVerdict

STALE_AFTER_INTERVALS = 5  # the source is stale after this many intervals without a fetch
log = logging.getLogger("dreichor.pass")


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
    """One pass for one environment over a world: ``run`` goes through ``STEPS``, ``report`` says what it did."""

    def __init__(self, world: PassWorld, options: PassOptions, *, now: datetime) -> None:
        self.world = world
        self.config = world.config
        self.ctx = PassContext(options=options, now=now)
        self._running: ContainerState | None = None  # read for the history guard, used again by the plan

    def run(self) -> PassResult:
        """``STEPS`` in order until one gives an outcome; the last step records it whatever happened.

        A step's expected failures become its outcome (``outcome_of``); a bug propagates, after the
        record says the pass did not finish.  Nothing is recorded before the status file was read.
        """
        *deciding, last = STEPS
        try:
            for step in deciding:
                outcome = step.run(self) if not step.guarded else self._guarded(step)
                if outcome is not None:
                    self.ctx.result = self._while_held(outcome)
                    break
        finally:
            if self.ctx.found is not None:
                self.ctx.result = last.run(self) or self.ctx.result
        return self.ctx.result

    def _guarded(self, step: Step) -> PassResult | None:
        try:
            return step.run(self)
        except (Refused, HealthGateFailed, Retryable, OSError) as exc:
            return self.outcome_of(exc)

    def _while_held(self, outcome: PassResult) -> PassResult:
        """docs/design.md §16: a held head is a state, not an event.  Every pass while the head is held
        answers with the decision that holds it, and the applied content stays the desired one: a
        stopped, removed or drifted runtime is repaired to it, so no push switches self-repair off."""
        ctx = self.ctx
        if ctx.target is None or ctx.head is None or (ctx.options.dry_run and ctx.target == ctx.head):
            return outcome
        if ctx.target != ctx.head:  # quarantined: the applied revision was planned (and repaired) instead
            return self._held(outcome)
        if outcome.result not in ("refused", "rolled_back", "waiting"):
            return outcome
        applied = applied_revision(ctx.status)
        if applied is None or applied == ctx.target:
            return outcome
        kept = (ctx.target, ctx.desired, ctx.plan, ctx.actual, ctx.image_signer, ctx.image_source)
        try:
            repaired = self._repair_to(applied)
        except (ControllerError, HealthGateFailed, OSError) as exc:  # the next pass tries again
            log.warning("cannot repair the runtime while the head is held", extra={"error": str(exc)})
            repaired = None
        finally:
            ctx.target, ctx.desired, ctx.plan, ctx.actual, ctx.image_signer, ctx.image_source = kept
        return replace(outcome, repaired=repaired) if repaired else outcome

    def _held(self, outcome: PassResult) -> PassResult:
        """The decision that holds the head (refused or rolled back), with the repair this pass made, if any."""
        if outcome.result not in ("applied", "unchanged"):
            return outcome  # the applied revision itself failed (an engine away): that is the news
        last = self.ctx.status.last_attempt
        reason = last.reason if last and last.result in ("refused", "rolled_back") else "the head is quarantined"
        repaired = outcome.plan if outcome.result == "applied" else None
        return PassResult("refused", reason, plan=outcome.plan, code=Reason.QUARANTINED, repaired=repaired)

    def _repair_to(self, applied: str) -> Plan | None:
        """Plan the applied revision against the runtime; apply it when the runtime is not what it declares."""
        self.ctx.target = applied
        self.ctx.desired = self._desired_at(applied)
        if self.plan_change() is not None:  # nothing to do
            return None
        self.verify_image()
        self.apply_plan()
        return self.ctx.plan

    def outcome_of(self, exc: Refused | HealthGateFailed | Retryable | OSError) -> PassResult:
        """An expected failure as the pass's outcome: refused, rolled back, or failed (retried with backoff)."""
        if isinstance(exc, Refused):
            return PassResult("refused", str(exc), code=exc.code)
        if isinstance(exc, HealthGateFailed):
            self.ctx.logs = exc.logs or None
            return PassResult("rolled_back", exc.reason, code=Reason.HEALTH_GATE_FAILED)
        if isinstance(exc, Retryable):
            return PassResult("failed", exc.reason, retryable=True, code=exc.code)
        reason = write_failure(exc, self.config.paths.state)  # the state folder: read-only, full, or gone
        return PassResult("failed", reason, retryable=True, code=Reason.STATE_IO)

    # -- the steps, in the order of STEPS ----------------------------------------------------

    def recover(self) -> PassResult | None:
        """Finish or undo a swap a crash interrupted (``plan`` says so, and plans nothing past it); an
        unreachable engine is remembered."""
        if not self.config.paths.journal.exists():
            return None
        if self.ctx.options.dry_run:  # plan: the next sync's first act, said, not done
            reason = f"a swap a crash interrupted ({self.config.paths.journal}) is finished or undone first"
            return PassResult("unchanged", reason, plan=Plan("repair", reason, ("interrupted swap",)))
        try:
            self.ctx.recovered = self.world.rollout().recover()
        except Retryable as exc:  # recorded as the pass's failure, unless the status file outranks it
            self.ctx.unrecovered = exc
        except RecoveryUnsettled as exc:  # a full or read-only state folder: what was undone is still told
            self.ctx.recovered, self.ctx.unrecovered = exc.recovery, exc
        return None

    def check_status(self) -> PassResult | None:
        """A damaged status file stops every pass (kept aside, but for ``plan``); then an unfinished swap."""
        store = self.world.store
        damaged = store.damage(keep_aside=not self.ctx.options.dry_run)
        self.ctx.found = store.load()
        if damaged:
            return PassResult("refused", damaged, code=Reason.STATUS_UNREADABLE)
        exc = self.ctx.unrecovered
        if isinstance(exc, RecoveryUnsettled):
            reason = f"cannot settle the swap a crash interrupted: {write_failure(exc, self.config.paths.state)}"
            return PassResult("failed", reason, retryable=True, code=Reason.STATE_IO)
        if exc is not None:
            reason = f"cannot finish the swap a crash interrupted: {exc.reason}"
            return PassResult("failed", reason, retryable=True, code=exc.code)
        return None

    def check_suspended(self) -> PassResult | None:
        """A suspended environment is left alone, unless ``--force``; its source is still fetched, so it
        stays fresh (no stale alert), and ``plan`` goes on to say what ``resume`` would do."""
        options = self.ctx.options
        if self.config.paths.suspended_marker.exists() and not options.force and not options.dry_run:
            with contextlib.suppress(Retryable):  # a failed fetch is kept in fetch_error, as any pass keeps it
                self.fetch_source()
            reason = "the environment is suspended: run 'dreichor-controller resume'"
            return PassResult("suspended", reason, code=Reason.SUSPENDED)
        return None

    def fetch_source(self) -> PassResult | None:
        """Fetch the branch into the cache."""
        self.world.at_step("fetch")
        try:
            self.ctx.head = self.world.source.fetch()
        except Retryable as exc:
            self.ctx.fetch_error = exc.reason
            raise
        return None

    def choose_target(self) -> PassResult | None:
        """The head, unless it was refused before its content was known (then the applied revision)."""
        ctx = self.ctx
        ctx.host_digest = self.world.digests.get(self.config)
        if ctx.status.quarantined is not None:  # only a quarantine an earlier release wrote needs them
            ctx.earlier_digests = earlier_host_digests(self.config)
        self._running = running_container(self.world.engine)  # the plan reuses it: one engine call per pass
        ctx.remembered = remembered_revisions(self.config, ctx.status, self._running, deployed=self.world.deployed)
        ctx.guard = newest_revision(ctx.remembered, self.world.source)
        if (
            held_head(ctx.status.quarantined, ctx.head, (ctx.host_digest, *ctx.earlier_digests))
            and not ctx.options.force
        ):
            self._fall_back_to_applied()
        else:
            ctx.target = ctx.head
        return None

    def _fall_back_to_applied(self) -> None:
        """Keep repairing drift with the applied revision while the head is quarantined."""
        applied = applied_revision(self.ctx.status)
        if applied is None or applied == self.ctx.head:
            last = self.ctx.status.last_attempt.reason if self.ctx.status.last_attempt else None
            raise Refused(last or "the head is quarantined", code=Reason.QUARANTINED)
        self.ctx.target = applied

    def guard_history(self) -> PassResult | None:
        """The target must descend from the applied revision, as every record of it says."""
        target = self._target()
        source = self.world.source
        behind = [
            r for r in dict.fromkeys((self.ctx.guard, *self.ctx.remembered)) if r and not source.is_ancestor(r, target)
        ]
        if not behind:
            return None
        applied = behind[0]
        if not self.ctx.options.allow_rewrite:
            why = f"{target[:12]} does not descend from applied {applied[:12]}"
            if not self.world.source.has_commit(applied):
                why = f"the applied revision {applied[:12]} is not in the fetched history"
            raise Refused(f"history rewritten: {why}", code=Reason.HISTORY_REWRITTEN)
        self.ctx.rewrite_allowed_over = applied
        return None

    def verify_commits(self) -> PassResult | None:
        """Signatures, against the host's trust policy."""
        self.world.at_step("verify")
        applied = self.ctx.guard
        self.ctx.verdict = verify_on_host(
            self.config,
            self.world.source,
            applied=applied,
            head=self._target(),
            now=self.ctx.now,
            cache=self.world.cache,
        )
        return None

    def validate_manifest(self) -> PassResult | None:
        """``envs/<env>.yaml`` from the verified commit's tree, through the layout contract → the desired container."""
        self.world.at_step("validate")
        self.ctx.desired = self._desired_at(self._target())
        return None

    def _desired_at(self, revision: str) -> DesiredContainer:
        """The desired container of ``revision``'s manifest (a commit and .env already judged are reused)."""
        key = (revision, self.ctx.host_digest)
        cached = self.world.desired_cache.get(key)
        if cached is not None:
            return cached
        manifest = self.world.source.read_manifest(revision, self.config.environment)
        try:
            dotenv = load_dotenv(self.config.paths.dotenv)
        except ConfigError as exc:  # the host's file, not the commit: retried, never quarantined
            raise Retryable(str(exc), code=Reason.HOST_CONFIG) from None
        desired = desired_for(self.config, manifest, revision=revision, dotenv=dotenv)
        self.world.desired_cache.clear()
        self.world.desired_cache[key] = desired
        return desired

    def check_quarantine(self) -> PassResult | None:
        """The head's content (not its commit id) against the quarantine; quarantined: the applied revision."""
        ctx = self.ctx
        if ctx.target != ctx.head:
            return None
        ctx.content = content_key(self._desired(), host=ctx.host_digest)
        digests = (ctx.host_digest, *ctx.earlier_digests)
        if ctx.options.force or not held_content(ctx.status.quarantined, self._desired(), digests):
            return None
        self._fall_back_to_applied()
        ctx.desired = self._desired_at(self._target())
        return None

    def plan_change(self) -> PassResult | None:
        """Compare with the actual container (one engine call); nothing to do ends the pass unchanged."""
        desired = self._desired()
        running, self._running = self._running, None
        self.ctx.actual = running if running is not None else self.world.engine().current()
        deployed = self.ctx.status.applied is not None
        self.ctx.plan = plan(desired, self.ctx.actual, deployed=deployed, adopt=self.ctx.options.adopt)
        if self.ctx.plan.action == "nothing":
            return PassResult("unchanged", self.ctx.plan.reason, plan=self.ctx.plan)
        return None

    def check_approvals(self) -> PassResult | None:
        """docs/design.md §15: a change to what runs needs ``approvals.threshold`` people's approvals of its content.

        The content is the manifest file's SHA-256.  Content equal to the running content needs none
        (drift repair, a re-push, the fallback to the applied revision while the head is quarantined).
        Too few: the change is held, ``waiting``, and the next pass looks again.
        """
        config = self.config.approvals
        content = self._desired().labels[LABEL_MANIFEST]
        if config is None or content == self._running_content():
            return None
        self.world.at_step("approvals")
        tally = count_for(self.config, self.world.source, revision=self._target(), content=content, now=self.ctx.now)
        self.ctx.tally = tally
        if tally.enough:
            return None
        reason, code = waiting_reason(tally), Reason.AWAITING_APPROVALS
        return PassResult("waiting", reason, plan=self.ctx.plan, code=code, approvals=tally.describe())

    def check_window(self) -> PassResult | None:
        """docs/design.md §18: a change applies inside a deploy window; outside one it waits, never dropped.

        What is no change acts at any time: content equal to the running content (drift repair, a re-push,
        the applied revision while the head is held); the health gate's rollback and crash recovery are
        parts of apply and recover, not changes.  ``sync --break-glass`` applies now, and says who and why.
        """
        windows, ctx = self.world.windows, self.ctx
        if windows is None:
            return None
        state = self._window_state(windows)
        if state.open or self._desired().labels[LABEL_MANIFEST] == self._running_content():
            return None
        if ctx.options.break_glass is not None:
            ctx.broke_glass = ctx.options.break_glass
            return None
        ctx.window_waits = True
        reason = waiting_reason_for_window(windows.describe(state))
        return PassResult("waiting", reason, plan=ctx.plan, code=Reason.AWAITING_WINDOW)

    def _window_state(self, windows: DeployWindows) -> WindowState:
        """The deploy window at the pass's ``now`` (the decision and the record agree on one instant)."""
        if self.ctx.window is None:
            self.ctx.window = windows.state(self.ctx.now)
        return self.ctx.window

    def _window_view(self) -> WindowStatus | None:
        """The deploy window as the status file records it, with the content that waits for it."""
        windows = self.world.windows
        if windows is None:
            return None
        state = self._window_state(windows)
        waiting = self._desired().labels[LABEL_MANIFEST] if self.ctx.window_waits else None
        return WindowStatus(open=state.open, reason=windows.describe(state), next_change=state.change, waiting=waiting)

    def _running_content(self) -> str | None:
        """The manifest SHA-256 of what runs: the managed container's label, else the applied revision's file."""
        actual = self.ctx.actual
        if actual is not None and actual.managed and actual.labels.get(LABEL_MANIFEST):
            return actual.labels[LABEL_MANIFEST]
        applied = applied_revision(self.ctx.status)
        if applied is None:
            return None
        try:
            data = self.world.source.read_manifest(applied, self.config.environment)
        except Refused:  # gone from the fetched history, or never a manifest: nothing runs by it
            return None
        return manifest_sha256(data)

    def verify_image(self) -> PassResult | None:
        """The image's own signature (docs/design.md §14), when a check is configured: before anything is pulled.

        The check guards new content: the applied image, verified when it was applied, is not
        checked again (repairing a removed or stopped container must not wait for the registry).
        """
        if self.world.image_check is None:
            return None
        applied = self.ctx.status.applied
        if self._verified_image_signer() and applied is not None:
            self.ctx.image_signer = applied.image_signer
            self.ctx.image_source = applied.image_source.model_dump() if applied.image_source else None
            return None
        verdict = self.world.image_check(self._desired())
        if isinstance(verdict, ImageVerdict):
            self.ctx.image_signer = verdict.image_signer
            self.ctx.image_source = verdict.source.as_record() if verdict.source else None
        else:
            self.ctx.image_signer = verdict
        return None

    def _verified_image_signer(self) -> str | None:
        """The recorded signer of the applied image when the desired image is that image, by digest."""
        applied = self.ctx.status.applied
        if applied is None or not applied.image_signer or not self.world.image_signer_trusted(applied.image_signer):
            return None
        same = applied.image.rpartition("@")[2] == self._desired().image.rpartition("@")[2]
        return applied.image_signer if same else None

    def apply_plan(self) -> PassResult | None:
        """Pull, snapshot, swap, health gate (rollback inside); ``plan`` stops here, nothing pulled."""
        ctx = self.ctx
        assert ctx.plan is not None  # noqa: S101 set by plan_change
        if ctx.options.dry_run:  # plan: the image's signature is checked, nothing is pulled
            return PassResult("unchanged", ctx.plan.reason, plan=ctx.plan, image_signer=ctx.image_signer)
        self._progressing()
        ctx.outcome = self.world.rollout().apply(ctx.plan, self._desired())
        return PassResult("applied", ctx.plan.reason, plan=ctx.plan)

    def _progressing(self) -> None:
        """Before anything is changed: the status says Progressing, and the notice hooks hear it."""
        store, ctx = self.world.store, self.ctx
        status = store.load()
        status.phase, status.updated_at = "Progressing", self.world.clock()
        store.write(status)
        image, signer = ctx.desired.image if ctx.desired else None, ctx.verdict.signer if ctx.verdict else None
        self.world.teller.notice("progressing", revision=ctx.target, image=image, signer=signer)

    def record_outcome(self) -> PassResult | None:
        """Whatever happened (``plan`` records nothing): the audit events, the watermark, the status file.

        Returns a different outcome only when the watermark could not follow an apply, or the audit log
        took no event (held, with its time, for the next pass that can write): the pass is not done.
        """
        ctx, world = self.ctx, self.world
        if ctx.options.dry_run:
            return None
        world.at_step("record")
        previous, result = ctx.status, ctx.result
        stale_after = timedelta(seconds=STALE_AFTER_INTERVALS * self.config.source.interval)
        report = self.report(result)
        status, events = record(previous, report, now=ctx.now, stale_after=stale_after)
        try:
            world.store.remember(previous, status, guard=ctx.guard)
        except OSError as exc:  # the guard must not lag: the pass is not done
            why = f"cannot write the watermark {self.config.paths.watermark}: {exc.strerror or exc}"
            result = PassResult("failed", why, retryable=True, code=Reason.STATE_IO, plan=result.plan)
            report = self.report(result)
            status, events = record(previous, report, now=ctx.now, stale_after=stale_after)
        facts = {key: getattr(report, key) for key in ("image", "signer", "image_signer")} | {"log": report.logs}
        unwritten = self._emit(events, facts)
        if unwritten is not None and result.code != Reason.STATE_IO:
            why = f"{unwritten.strerror}; its events are kept for the next pass that can write"
            result = PassResult("failed", why, retryable=True, code=Reason.STATE_IO, plan=result.plan)
        world.store.write(status)
        if status.source.stale and not previous.source.stale:
            world.teller.notice("stale", reason=status.source.last_error or "", code=str(Reason.FETCH_FAILED))
        if result.result == "unchanged" and report.target and report.target == report.head:
            world.teller.notice("unchanged", revision=report.target, **facts)
        return result

    def _emit(self, events: list[AuditEvent], facts: dict[str, Any]) -> OSError | None:
        """Each event written, or held by the store for the next append; why the log took none, if it did not."""
        unwritten = None
        for event in events:
            recovered = self.ctx.recovered if event.event == "recovered" else None
            try:
                self.world.teller.emit(event, at=recovered.at if recovered else self.ctx.now, facts=facts)
            except OSError as exc:  # the store's StateWriteFailed
                unwritten = exc
        return unwritten

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

    def report(self, result: PassResult) -> PassReport:
        """The facts ``reconcile.record.record`` needs; reads the container once more only when something changed."""
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
            recovered=ctx.recovered.fields() if ctx.recovered else None,
            approvals=approvals_view(ctx.tally) if ctx.tally else None,
            committed_at=self._committed_at(result),
            container_revision=ctx.actual.labels.get(LABEL_REVISION) if ctx.actual else None,
            window=self._window_view(),
            break_glass=ctx.broke_glass,
        )

    def _committed_at(self, result: PassResult) -> datetime | None:
        """The applied commit's date, read only when something was applied (a no-change pass reads nothing)."""
        if result.result != "applied" or self.ctx.target is None:
            return None
        try:
            return self.world.source.committed_at(self.ctx.target)
        except Refused:
            return None

    def _container_view(self, result: PassResult) -> ContainerStatus:
        if result.result == "unchanged" and self.ctx.actual is not None:
            return container_view(self.ctx.actual)
        return current_container(self.world.engine, self.config.environment)


@dataclass(frozen=True)
class Step:
    """One step of a pass: it takes the pass (its world and context) and says go on (None) or gives an outcome."""

    name: str  # its row in ARCHITECTURE.md's pass table
    run: Callable[[Pass], PassResult | None]
    guarded: bool = True  # its expected failures become an outcome; the first steps' propagate unrecorded


STEPS: tuple[Step, ...] = (
    Step("recover", Pass.recover, guarded=False),
    Step("status", Pass.check_status, guarded=False),
    Step("suspended", Pass.check_suspended),
    Step("fetch", Pass.fetch_source),
    Step("target", Pass.choose_target),
    Step("guard history", Pass.guard_history),
    Step("verify", Pass.verify_commits),
    Step("validate", Pass.validate_manifest),
    Step("quarantine", Pass.check_quarantine),
    Step("plan", Pass.plan_change),
    Step("approvals", Pass.check_approvals),
    Step("window", Pass.check_window),
    Step("image", Pass.verify_image),
    Step("apply", Pass.apply_plan),
    Step("record", Pass.record_outcome),  # the last step runs whatever happened, once the status was read
)
"""The one statement of a pass's order (ARCHITECTURE.md's pass table is tested against it)."""


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


def _newest_snapshot(folder: Path) -> str | None:
    files = list_snapshot_files(folder)
    return files[0].stem if files else None
