"""The ``run`` daemon: APScheduler interval job, lock, crash recovery, signals, backoff.

The daemon owns time; the reconciler owns what a pass does.  One interval
job with jitter runs passes (``max_instances=1``, ``coalesce=True``), a
retryable failure pushes the next run out exponentially, SIGTERM lets the
pass in flight finish, SIGHUP reloads the config.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from controller import audit
from controller.config import Config, load_config
from controller.errors import ControllerError
from controller.locks import hold_lock, pass_lock
from controller.reconcile import PassOptions, PassResult, Reconciler

log = logging.getLogger("dreichor.daemon")
JOB_ID = "reconcile"
MAX_BACKOFF_INTERVALS = 10


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald."""

    _SKIP = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """The record and its ``extra`` fields as JSON."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging() -> None:
    """JSON lines on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Daemon:
    """One environment's long-running controller."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.reconciler = Reconciler(self.config)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.failures = 0
        self.last_pass_at: datetime | None = None
        self.last_result: PassResult | None = None

    def run(self) -> int:
        """Run until SIGTERM; return the exit code."""
        lock_fd = hold_lock(self.config.paths.lock)
        try:
            self._install_signals()
            self.recover()
            self.scheduler.add_job(
                self.tick,
                self._trigger(),
                id=JOB_ID,
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
                misfire_grace_time=None,
            )
            self.scheduler.start()
            log.info("controller started", extra={"environment": self.config.environment})
            while not self.stopping.wait(0.2):
                if self.reload_requested.is_set():
                    self.reload()
            log.info("stopping: finishing the pass in flight")
            self.scheduler.shutdown(wait=True)
            self.reconciler.close()
            return 0
        finally:
            os.close(lock_fd)

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
            with pass_lock(self.config.paths.pass_lock):
                done = self.reconciler.rollout().recover()
        except ControllerError as exc:
            log.warning("crash recovery postponed", extra={"reason": str(exc)})
            return
        if done:
            audit.append_event(self.config.paths.audit, "recovered", at=datetime.now(UTC), reason=done)
            log.warning("recovered from an interrupted run", extra={"done": done})

    def tick(self, options: PassOptions | None = None) -> PassResult:
        """One scheduled pass, with backoff bookkeeping."""
        try:
            with pass_lock(self.config.paths.pass_lock):
                if self.config.paths.journal.exists():
                    self.recover_in_pass()
                result = self.reconciler.run_pass(options)
        except Exception:
            log.exception("the pass failed with a bug")
            result = PassResult("failed", "internal error", retryable=True)
        self.last_pass_at = datetime.now(UTC)
        self.last_result = result
        log.info("pass", extra={"result": result.result, "reason": result.reason})
        self._schedule_after(result)
        return result

    def recover_in_pass(self) -> None:
        """A journal left behind means an interrupted swap: converge first."""
        done = self.reconciler.rollout().recover()
        if done:
            audit.append_event(self.config.paths.audit, "recovered", at=datetime.now(UTC), reason=done)

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

    def trigger(self) -> None:
        """Run a pass as soon as possible; a burst of triggers coalesces into one."""
        self.scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))

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
        self.config = config
        self.reconciler.close()
        self.reconciler = Reconciler(config)
        self.scheduler.reschedule_job(JOB_ID, trigger=self._trigger())
        log.info("config reloaded")
