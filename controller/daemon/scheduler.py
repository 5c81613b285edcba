"""The ``run`` daemon: APScheduler interval job, lock, crash recovery, signals, backoff.

The daemon owns time; the environment service owns what a pass does.  One interval
job with jitter runs passes (``max_instances=1``, ``coalesce=True``), a
retryable failure pushes the next run out exponentially, SIGTERM lets the
pass in flight finish, SIGHUP reloads the config.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from controller import compose
from controller.api.routes import ApiContext, ApiServer, Guards
from controller.compose import Notifier
from controller.daemon import systemd as notify
from controller.daemon.metrics import Metrics
from controller.errors import ConfigError, ControllerError, Reason
from controller.model.config import Config, load_config
from controller.model.plan import Plan
from controller.service import (
    DaemonLock,
    DeliveryMemory,
    EnvironmentService,
    LockHeld,
    PassOptions,
    PassResult,
    held,
    hold_lock,
)

log = logging.getLogger("dreichor.daemon")
JOB_ID = "reconcile"
OPENING_JOB_ID = "window-opening"  # a pass when the deploy window opens for a change that waits
WATCHDOG_JOB_ID = "watchdog"
WRITABLE_JOB_ID = "writable"  # read-only: the lock tried again every interval
MAX_BACKOFF_INTERVALS = 10
HEALTHY_PASS_AGE_INTERVALS = 3
PROBLEM_RESULTS = frozenset({"refused", "failed", "rolled_back"})  # logged at warning; bugs at error
DRAIN_SECONDS = 5.0  # how long an exit waits for queued notifications
RELOAD_DRAIN_SECONDS = 1.0  # how long a reload waits for the old receivers before it lets them go


class Daemon:
    """One environment's long-running controller."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.service = compose.environment_service(self.config)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.failures = 0
        self.started_at = datetime.now(UTC)
        self.last_pass_at: datetime | None = None
        self.metrics = Metrics()
        self.deliveries = DeliveryMemory(self.config.paths.deliveries)  # read now: a replay after a restart stays one
        self.notifier = self._attach_notifier(self.service)
        self.trigger_pending = threading.Event()
        self.ready = False
        self.api: ApiServer | None = None
        self.last_plan: Plan | None = None  # the newest plan a pass made, for the status page
        self.last_wait: str | None = None  # the reason of a held change already logged at warning
        self.last_refusal: tuple[Reason, str] | None = None  # the last pass's refusal, to tell it once
        self.read_only: str | None = None  # why the state folder takes no write (no pass runs), if it does not
        self.lock = DaemonLock(None)

    def _attach_notifier(self, service: EnvironmentService) -> Notifier | None:
        return compose.notifier(
            service, on_failure=self.metrics.notifications_failed.inc, on_drop=self.metrics.notifications_dropped.inc
        )

    def _is_notifier(self, hook: object) -> bool:
        """Whether ``hook`` is the current notifier's: a reload replaces it, other hooks carry over."""
        return self.notifier is not None and getattr(hook, "__self__", None) is self.notifier

    def run(self) -> int:
        """Run until SIGTERM; return the exit code."""
        self.lock = hold_lock(self.config.paths.lock)
        self.read_only = self.lock.read_only
        try:
            self._install_signals()
            if self.read_only is None:
                self.recover()
            self.metrics.record_status(self.service.status())
            self.api = self._start_api()
            if self.read_only is None:
                self._schedule_passes()
            else:
                self._serve_read_only(self.read_only)
            watchdog = notify.watchdog_interval()
            if watchdog:
                self.scheduler.add_job(self.watchdog, "interval", seconds=watchdog, id=WATCHDOG_JOB_ID)
            self.scheduler.start()
            log.info("controller started", extra={"environment": self.config.environment, "api": self.config.listen})
            while not self.stopping.wait(0.2):
                if self.reload_requested.is_set():
                    self.reload()
            log.info("stopping: finishing the pass in flight")
            notify.stopping()
            self.scheduler.shutdown(wait=True)
            if self.api is not None:
                self.api.shutdown()
                self.api.server_close()
            self.service.close()
            if self.notifier is not None and not self.notifier.close(DRAIN_SECONDS):
                log.warning("stopped with notifications not sent", extra={"seconds": DRAIN_SECONDS})
            return 0
        finally:
            self.lock.release()

    def _schedule_passes(self) -> None:
        self.scheduler.add_job(
            self.tick,
            self._trigger(),
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )

    def _serve_read_only(self, why: str) -> None:
        """The state folder takes no write: serve ``/healthz`` (unhealthy) and the status as it is, run no
        pass, and try the lock again every interval."""
        log.error(
            "the state folder takes no write: serving the status read-only, no pass runs until it does",
            extra={"reason": why},
        )
        notify.ready()
        notify.status(f"read-only, no pass runs: {why}"[:200])
        self.scheduler.add_job(
            self._retry_writable, "interval", seconds=self.config.source.interval, id=WRITABLE_JOB_ID
        )

    def _retry_writable(self) -> None:
        """Read-only: once the lock can be taken for writing, recover and run passes as at a start."""
        self.lock.release()
        try:
            self.lock = hold_lock(self.config.paths.lock)
        except LockHeld as exc:  # another controller started meanwhile: it is the one that writes
            self.lock = DaemonLock(None, read_only=str(exc))
            log.error("stopping: another controller took the lock", extra={"reason": str(exc)})
            self.stopping.set()
            return
        if self.lock.read_only is not None:
            return
        self.read_only = None
        self.scheduler.remove_job(WRITABLE_JOB_ID)
        log.warning("the state folder takes writes again: passes resume")
        self.recover()
        self._schedule_passes()

    def _trigger(self) -> IntervalTrigger:
        interval = self.config.source.interval
        return IntervalTrigger(seconds=interval, jitter=max(1, interval // 10) if interval >= 10 else None)

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.stopping.set()

        def reload(signum: int, _frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def recover(self) -> None:
        """Finish or undo a swap a crash interrupted, before the first pass."""
        try:
            self.service.recover()
        except ControllerError as exc:
            log.warning("crash recovery postponed", extra={"reason": str(exc)})
        except OSError as exc:  # the state folder took no write: the undo is recorded by a pass that can
            log.error("crash recovery could not be recorded", extra={"reason": exc.strerror or str(exc)})

    def tick(self, options: PassOptions | None = None) -> PassResult:
        """One scheduled pass, and one more for each trigger that arrived while it ran; returns the last.

        A trigger during a pass is run here, not handed back to the scheduler: asked while this job
        still runs, the scheduler skips it as a second instance and the trigger is lost until the
        next interval (a webhook's push waited an hour).
        """
        result = self._pass(options)
        while self.trigger_pending.is_set() and not self.stopping.is_set():
            result = self._pass(None)
        return result

    def _pass(self, options: PassOptions | None) -> PassResult:
        """One pass, with backoff bookkeeping, metrics and systemd notifications."""
        self.trigger_pending.clear()
        started = datetime.now(UTC)
        try:
            result = self.service.sync(options)
        except Exception:
            log.exception("the pass failed with a bug")
            result = PassResult("failed", "internal error", retryable=True, code=Reason.INTERNAL_ERROR)
        self.last_pass_at = datetime.now(UTC)
        self.last_plan = result.plan or self.last_plan  # a pass refused before its plan leaves the last one
        # A refusal retried every pass (an image not yet signed) is the same decision as the last one:
        # held, like a quarantined head — a warning and a count once (docs/design.md §16).
        refusal = (result.code, result.reason) if result.result == "refused" else None
        repeated, self.last_refusal = refusal is not None and refusal == self.last_refusal, refusal
        again = held(result) or repeated
        level = logging.WARNING if result.result in PROBLEM_RESULTS and not again else logging.INFO
        if result.result == "waiting":  # a held change is one decision: a warning once, then info per poll
            level = logging.WARNING if result.reason != self.last_wait else logging.INFO
        self.last_wait = result.reason if result.result == "waiting" else None
        verdict = "held" if again else result.result  # the refusal was logged once, when it was made
        log.log(level, "pass", extra={"result": verdict, "code": str(result.code), "reason": result.reason})
        self._after_pass(result, verdict=verdict, seconds=(self.last_pass_at - started).total_seconds())
        self._schedule_after(result)
        self._schedule_opening(result)
        return result

    def _after_pass(self, result: PassResult, *, verdict: str, seconds: float) -> None:
        status = self.service.status()
        applied = status.applied if status else None
        self.metrics.record_status(status)
        self.metrics.record_pass(
            verdict,
            reason=result.code,
            drift_repaired=result.plan is not None and result.plan.action == "repair",
            seconds=seconds,
            revision=applied.revision if applied else None,
            image=applied.image if applied else None,
            version=applied.version() if applied else None,
        )
        glance = f"{status.sync.state}, {status.health}" if status and status.sync else "no status"
        notify.status(f"{glance}: {verdict}: {result.reason}"[:200])
        if not self.ready:
            self.ready = True
            notify.ready()

    def healthy(self) -> bool:
        """The scheduler runs and the last pass is recent (``GET /healthz``)."""
        if not self.scheduler.running or self.stopping.is_set() or self.read_only is not None:
            return False
        limit = timedelta(seconds=HEALTHY_PASS_AGE_INTERVALS * self.config.source.interval)
        limit = max(limit, timedelta(seconds=self.config.health.timeout * 2))
        last = self.last_pass_at or self.started_at
        return datetime.now(UTC) - last <= limit

    def watchdog(self) -> None:
        """Sent from the scheduler's own loop: a hung scheduler or pass stops the pings."""
        if self.healthy() or (self.read_only is not None and self.scheduler.running):
            notify.watchdog()  # read-only: alive and serving, and a restart would not make the folder writable

    def _start_api(self) -> ApiServer:
        ctx = ApiContext(
            status_json=self._status_json,
            healthy=self.healthy,
            trigger=self.trigger,
            metrics=self.metrics,
            guards=self._api_guards(),
            status=lambda: self.service.status(),  # noqa: PLW0108 the service is replaced on reload
            history=lambda: self.service.history(verify=True),
            last_plan=lambda: self.last_plan,
        )
        try:
            server = ApiServer(self.config.listen, ctx)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.config.listen}: {exc.strerror}") from None
        server.start()
        return server

    def _api_guards(self) -> Guards:
        """The API's Access verifier and webhook secret, as the config and the ``.env`` say now."""
        return compose.api_guards(self.config, self.deliveries)

    def _status_json(self) -> bytes | None:
        try:
            return self.config.paths.status.read_bytes()
        except OSError:
            return None

    def _schedule_after(self, result: PassResult) -> None:
        if not result.retryable:
            self.failures = 0
            return
        self.failures += 1
        interval = self.config.source.interval
        delay = min(interval * 2 ** (self.failures - 1), interval * MAX_BACKOFF_INTERVALS)
        if self.stopping.is_set():
            return
        try:
            self.scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC) + timedelta(seconds=delay))
        except Exception:
            return
        log.warning("backing off", extra={"seconds": delay, "failures": self.failures})

    def _schedule_opening(self, result: PassResult) -> None:
        """A change waits for the deploy window: a pass at its opening, not only at the next poll (§18)."""
        if result.code != Reason.AWAITING_WINDOW or self.stopping.is_set():
            return
        status = self.service.status()
        opens = status.window.next_change if status is not None and status.window is not None else None
        if opens is None:
            return
        try:
            self.scheduler.add_job(
                self._run_soon,
                "date",
                run_date=opens,
                id=OPENING_JOB_ID,
                replace_existing=True,
                misfire_grace_time=None,
            )
        except Exception:  # the scheduler is shutting down: the next poll looks again
            log.debug("opening pass not scheduled: the scheduler is not running")

    def trigger(self, source: str = "manual") -> None:
        """Run a pass as soon as possible; a burst of triggers coalesces into one."""
        log.info("pass requested", extra={"by": source})
        self.trigger_pending.set()
        self._run_soon()

    def _run_soon(self) -> None:
        try:
            self.scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))
        except Exception:
            log.debug("trigger ignored: the scheduler is not running")

    def reload(self) -> None:
        """SIGHUP: reload the config; keep the old one when the new one is invalid."""
        self.reload_requested.clear()
        try:
            config = load_config(self.config_path)
        except ControllerError as exc:
            log.error("config reload refused; keeping the running config", extra={"reason": str(exc)})
            return
        if config.environment != self.config.environment:
            log.error("config reload refused: the environment cannot change")
            return
        if config.listen != self.config.listen:
            log.error("config reload refused: api.listen changed; restart the controller to move the API")
            return
        # Everything the config and .env define is built anew: the image check (its keys), the notifier
        # (receivers, events, GitHub statuses, ${NAME} values), then access and the webhook secret.
        service = compose.environment_service(config)
        service.audit_hooks = [h for h in self.service.audit_hooks if not self._is_notifier(h)]
        service.notice_hooks = [h for h in self.service.notice_hooks if not self._is_notifier(h)]
        try:
            notifier = self._attach_notifier(service)
        except ControllerError as exc:
            service.close()
            log.error("config reload refused; keeping the running config", extra={"reason": str(exc)})
            return
        old_service, old_notifier = self.service, self.notifier
        self.config, self.service, self.notifier = config, service, notifier
        old_service.close()
        if old_notifier is not None and not old_notifier.close(RELOAD_DRAIN_SECONDS):
            log.warning("reload: the old receivers' notifications not sent", extra={"seconds": RELOAD_DRAIN_SECONDS})
        if self.api is not None:
            self.api.ctx.apply(self._api_guards())  # api.access, allowed_emails, the webhook secret: now
        self.scheduler.reschedule_job(JOB_ID, trigger=self._trigger())
        log.info("config reloaded")
