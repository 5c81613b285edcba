"""Prometheus metrics of one controller, in a registry of its own.

Counters are named for what an operator alerts on: passes by result,
rollbacks, drift repairs, fetch failures, refusals by reason and refused
API calls; plus the applied revision as an info metric and the time of the
last successful pass.  Gauges say the state to alert on: sync and health
apart (docs/design.md §16), the phase (one series per state, 1 for the current one), suspended,
source stale, quarantined, approvals a held change still needs, and the build's version.  In Swarm
mode an info metric names
the node the runtime's task runs on (one series at a time: the task id, new
at every deploy, stays in the status file, out of the labels).
"""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from controller import __version__
from controller.errors import Reason
from controller.service import HEALTHS, SYNC_STATES, Status

PHASES = ("InSync", "Progressing", "Degraded", "Suspended")
# A ``_created`` series per counter doubles the exposition and means nothing to an alert.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated


class Metrics:
    """The controller's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter("dreichor_passes_total", "Reconcile passes by result.", ["result"], registry=r)
        self.duration = Histogram(
            "dreichor_pass_duration_seconds",
            "Duration of a reconcile pass.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.applied = Info("dreichor_applied", "The applied revision and image.", registry=r)
        self.last_success = Gauge(
            "dreichor_last_success_timestamp_seconds", "When a pass last ended applied or unchanged.", registry=r
        )
        self.rollbacks = Counter(
            "dreichor_rollbacks_total", "Automatic rollbacks after a failed health gate.", registry=r
        )
        self.drift_repairs = Counter("dreichor_drift_repairs_total", "Drift repaired.", registry=r)
        self.fetch_failures = Counter(
            "dreichor_fetch_failures_total", "Failed fetches of the manifest repo.", registry=r
        )
        self.refusals = Counter("dreichor_refusals_total", "Refused revisions by reason.", ["reason"], registry=r)
        self.auth_failures = Counter(
            "dreichor_api_auth_failures_total", "Refused API calls.", ["endpoint", "reason"], registry=r
        )
        self.phase = Gauge("dreichor_phase", "1 for the environment's current phase, else 0.", ["phase"], registry=r)
        self.sync = Gauge(
            "dreichor_sync",
            "1 for whether the head's content runs (docs/design.md §16), else 0.",
            ["state"],
            registry=r,
        )
        self.health = Gauge("dreichor_health", "1 for the runtime container's health, else 0.", ["state"], registry=r)
        self.suspended = Gauge("dreichor_suspended", "1 while the environment is suspended.", registry=r)
        self.source_stale = Gauge("dreichor_source_stale", "1 while the manifest repo cannot be fetched.", registry=r)
        self.quarantined = Gauge("dreichor_quarantined", "1 while the branch head is quarantined.", registry=r)
        self.approvals_missing = Gauge(
            "dreichor_approvals_missing", "Approvals the held change still needs (0: none is held).", registry=r
        )
        self.window_open = Gauge(
            "dreichor_window_open",
            "1 while the deploy window is open, 0 while it is closed (only on a host with windows).",
            ["environment"],
            registry=r,
        )
        self.build_info = Gauge("dreichor_build_info", "The controller's version (always 1).", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.runtime_node = Info("dreichor_runtime", "Swarm mode: the node the runtime's task runs on.", registry=r)
        self.notifications_dropped = Counter(
            "dreichor_notifications_dropped_total",
            "Notifications dropped because their receiver's queue was full.",
            registry=r,
        )
        self.notifications_failed = Counter(
            "dreichor_notifications_failed_total", "Notifications that could not be sent.", registry=r
        )

    def record_pass(
        self,
        result: str,
        *,
        reason: str,
        drift_repaired: bool,
        seconds: float,
        revision: str | None,
        image: str | None,
        version: str | None = None,
    ) -> None:
        """Count one pass: its result (applied, refused, ...), its reason code, and what runs now.

        A pass that meets a head already refused (``Quarantined``) is counted as ``held``: the refusal
        was counted once, when it was made, not once per poll.
        """
        if result == "refused" and reason == Reason.QUARANTINED:
            result = "held"
        self.passes.labels(result).inc()
        self.duration.observe(seconds)
        if result in ("applied", "unchanged"):
            self.last_success.set(time.time())
        if result == "rolled_back":
            self.rollbacks.inc()
        if result == "refused":
            self.refusals.labels(reason).inc()
        if reason == Reason.FETCH_FAILED:
            self.fetch_failures.inc()
        if drift_repaired and result == "applied":
            self.drift_repairs.inc()
        if revision and image:
            self.applied.info({"revision": revision, "image": image, "version": version or ""})

    def record_status(self, status: Status | None) -> None:
        """Set the gauges from the status file (None: before the first pass, every phase 0)."""
        for phase in PHASES:
            self.phase.labels(phase).set(1 if status is not None and status.phase == phase else 0)
        self.suspended.set(1 if status is not None and status.suspended else 0)
        self.source_stale.set(1 if status is not None and status.source.stale else 0)
        self.quarantined.set(1 if status is not None and status.quarantined else 0)
        held = status.approvals if status is not None else None
        self.approvals_missing.set(max(held.need - len(held.have), 0) if held is not None else 0)
        sync = status.sync.state if status is not None and status.sync else None
        for state in SYNC_STATES:
            self.sync.labels(state).set(1 if state == sync else 0)
        for health in HEALTHS:
            self.health.labels(health).set(1 if status is not None and status.health == health else 0)
        self.window_open.clear()  # a host without windows (or after they were removed) has no series
        if status is not None and status.window is not None:
            self.window_open.labels(status.environment).set(1 if status.window.open else 0)
        if status is not None and status.container.node:
            self.runtime_node.info({"node": status.container.node})

    def auth_failed(self, endpoint: str, reason: str) -> None:
        """Count one refused API call."""
        self.auth_failures.labels(endpoint, reason).inc()

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``."""
        return generate_latest(self.registry)
