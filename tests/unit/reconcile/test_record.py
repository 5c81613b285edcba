"""``recording.record``: what a pass's outcome does to the status file and the audit log, case by case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.errors import Reason
from controller.model.plan import Plan
from controller.reconcile.record import PassReport, PassResult, record
from controller.records.status import AppliedStatus, AttemptStatus, ContainerStatus, Phase, SourceStatus, Status

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OLD, NEW = "a" * 40, "b" * 40
IMAGE = "registry.test/runtime@sha256:" + "1" * 64
RUNNING = ContainerStatus(name="dreichor-runtime-prod", id="c1", image=IMAGE, state="running")
EXITED = ContainerStatus(name="dreichor-runtime-prod", id="c1", image=IMAGE, state="exited")
STALE_AFTER = timedelta(minutes=5)


def previous(*, quarantined: str | None = None, last: str | None = None) -> Status:
    return Status(
        environment="prod",
        phase="InSync",
        updated_at=NOW - timedelta(minutes=1),
        source=SourceStatus(url="file:///m", branch="main", head=OLD, fetched_at=NOW - timedelta(minutes=1)),
        applied=AppliedStatus(revision=OLD, image=IMAGE, signer="alice", applied_at=NOW - timedelta(days=1)),
        last_attempt=AttemptStatus(revision=OLD, result="refused", reason=last, at=NOW) if last else None,
        container=RUNNING,
        quarantined=quarantined,
    )


def did(result: str, reason: str = "because", **fields: Any) -> PassReport:
    code = fields.pop("code", Reason.IN_SYNC)
    plan = fields.pop("plan", None)
    retryable = fields.pop("retryable", False)
    fields.setdefault("container", RUNNING)
    return PassReport(result=PassResult(result, reason, plan=plan, retryable=retryable, code=code), **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    """One row: what the pass did, and what the record must say."""

    name: str
    report: PassReport
    events: list[str]
    phase: Phase
    applied: str | None = OLD
    attempt: str | None = None  # the last attempt's result, None: unchanged from before
    quarantined: bool = False
    before: Status | None = None


VERIFIED = {"head": NEW, "target": NEW, "signer": "alice", "image": IMAGE, "host_digest": "h"}
CASES = [
    Case(
        "applied", did("applied", plan=Plan("replace", "deploying"), **VERIFIED), ["applied"], "InSync", NEW, "applied"
    ),
    Case(
        "unchanged",
        did("unchanged", head=OLD, target=OLD, signer="alice", image=IMAGE),
        [],
        "InSync",
        attempt="unchanged",
    ),
    Case(
        "refused",
        did("refused", "unsigned", code=Reason.UNSIGNED, head=NEW, target=NEW, host_digest="h"),
        ["refused"],
        "Degraded",
        attempt="refused",
        quarantined=True,
    ),
    Case(
        "refused again for the same reason",
        did("refused", "unsigned", code=Reason.UNSIGNED, head=NEW, target=NEW, host_digest="h"),
        [],
        "Degraded",
        attempt="refused",
        quarantined=True,
        before=previous(last="unsigned"),
    ),
    Case(
        "rolled back",
        did("rolled_back", "unhealthy", code=Reason.HEALTH_GATE_FAILED, logs="boom", snapshot="s1", **VERIFIED),
        ["rolled_back"],
        "Degraded",
        attempt="rolled_back",
        quarantined=True,
    ),
    Case(
        "failed, not retryable",
        did("failed", "bug", code=Reason.INTERNAL_ERROR, head=NEW, target=NEW),
        ["failed"],
        "Degraded",
        attempt="failed",
    ),
    Case(
        "failed, retryable: no audit line",
        did("failed", "git down", code=Reason.FETCH_FAILED, retryable=True, fetch_error="git down", container=RUNNING),
        [],
        "Degraded",
        attempt="failed",
    ),
    Case(
        "drift repaired",
        did(
            "applied",
            "removed",
            plan=Plan("repair", "removed", ("removed",)),
            **{**VERIFIED, "head": OLD, "target": OLD},
        ),
        ["drift_repaired"],
        "InSync",
        attempt="applied",
    ),
    Case(
        "quarantined head, the applied revision kept",
        did("unchanged", head=NEW, target=OLD, signer="alice", image=IMAGE),
        [],
        "Degraded",
        quarantined=True,
        before=previous(quarantined=f"{NEW}:h"),
    ),
    Case(
        "recovered after a crash: the running target is recorded as applied",
        did("unchanged", recovered={"reason": "undid an interrupted swap"}, container_revision=NEW, **VERIFIED),
        ["recovered", "applied"],
        "InSync",
        NEW,
        "applied",
    ),
    Case(
        "suspended: the last decision stays visible",
        did("suspended", code=Reason.SUSPENDED, suspended=True),
        [],
        "Suspended",
    ),
    Case(
        "rolled back: the content is quarantined",
        did("rolled_back", "unhealthy", code=Reason.HEALTH_GATE_FAILED, content="c1", **VERIFIED),
        ["rolled_back"],
        "Degraded",
        attempt="rolled_back",
        quarantined=True,
    ),
    Case(
        "the same content under a new commit id: the applied revision kept, no new line",
        did("unchanged", head=NEW, target=OLD, signer="alice", image=IMAGE),
        [],
        "Degraded",
        quarantined=True,
        before=previous(quarantined="content:c1", last="unhealthy"),
    ),
    Case(
        "a forced retry of the quarantined change applies: the quarantine is lifted",
        did("applied", plan=Plan("replace", "deploying"), content="c1", **VERIFIED),
        ["applied"],
        "InSync",
        NEW,
        "applied",
        before=previous(quarantined="content:c1"),
    ),
    Case(
        "a different change at the head that needs nothing: the quarantine is lifted",
        did("unchanged", head=NEW, target=NEW, signer="alice", image=IMAGE, content="c2", container_revision=NEW),
        ["applied"],
        "InSync",
        NEW,
        "applied",
        before=previous(quarantined="content:c1"),
    ),
    Case(
        "a commit that leaves the content as it is: no applied event, applied still names the old change",
        did("unchanged", head=NEW, target=NEW, signer="alice", image=IMAGE, container_revision=OLD),
        [],
        "InSync",
        OLD,
        "unchanged",
    ),
    Case(
        "failed again for the same reason: no second line",
        did("failed", "bug", code=Reason.INTERNAL_ERROR, head=NEW, target=NEW),
        [],
        "Degraded",
        attempt="failed",
        before=previous().model_copy(
            update={"last_attempt": AttemptStatus(revision=NEW, result="failed", reason="bug", at=NOW)}
        ),
    ),
    Case(
        "an unreadable status file: refused before the fetch, nothing quarantined",
        did("refused", "status.json is not valid JSON", code=Reason.STATUS_UNREADABLE),
        ["refused"],
        "Degraded",
        attempt="refused",
    ),
    Case(
        "after a rollback to a snapshot without a revision, a pass applies again",
        did("applied", plan=Plan("repair", "unmanaged", ("unmanaged",)), **{**VERIFIED, "head": OLD, "target": OLD}),
        ["drift_repaired"],
        "InSync",
        OLD,
        "applied",
        before=previous().model_copy(
            update={"applied": AppliedStatus(revision="", image=IMAGE, signer="break-glass rollback", applied_at=NOW)}
        ),
    ),
    Case(
        "the container is not running",
        did("unchanged", head=OLD, target=OLD, signer="alice", image=IMAGE, container=EXITED),
        [],
        "Degraded",
        attempt="unchanged",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_record(case: Case) -> None:
    before = case.before or previous()
    snapshot = before.model_dump()
    status, events = record(before, case.report, now=NOW, stale_after=STALE_AFTER)
    assert [e.event for e in events] == case.events
    assert status.phase == case.phase
    assert (status.applied.revision if status.applied else None) == case.applied
    expected_attempt = case.attempt or (before.last_attempt.result if before.last_attempt else None)
    assert (status.last_attempt.result if status.last_attempt else None) == expected_attempt
    assert bool(status.quarantined) == case.quarantined
    assert status.updated_at == NOW
    assert before.model_dump() == snapshot  # the previous status is not changed


def test_a_refusal_quarantines_the_head_with_the_host_files_digest() -> None:
    report = did("refused", "unsigned", code=Reason.UNSIGNED, head=NEW, target=NEW, host_digest="d1")
    status, events = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert status.quarantined == f"{NEW}:d1"
    assert events[0].fields["code"] == "Unsigned"
    assert status.last_attempt is not None and status.last_attempt.code == "Unsigned"


def test_a_failed_fetch_keeps_the_old_head_and_turns_stale_after_the_limit() -> None:
    report = did("failed", "git down", code=Reason.FETCH_FAILED, retryable=True, fetch_error="git down")
    status, _ = record(previous(), report, now=NOW + STALE_AFTER * 2, stale_after=STALE_AFTER)
    assert status.source.head == OLD and status.source.last_error == "git down" and status.source.stale


def test_a_successful_fetch_clears_the_error_and_the_staleness() -> None:
    before = previous()
    before.source.last_error, before.source.stale = "git down", True
    status, _ = record(before, did("unchanged", head=OLD, target=OLD), now=NOW, stale_after=STALE_AFTER)
    assert status.source.fetched_at == NOW and status.source.last_error is None and not status.source.stale


def test_an_allowed_rewrite_is_audited_before_the_decision() -> None:
    report = did("applied", plan=Plan("replace", "deploying"), rewrite_allowed_over=OLD, **VERIFIED)
    _, events = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert [e.event for e in events] == ["rewrite_allowed", "applied"]
    assert events[0].fields == {"revision": NEW, "applied": OLD}


def test_a_rollback_quarantines_the_content_not_the_commit() -> None:
    report = did("rolled_back", "unhealthy", code=Reason.HEALTH_GATE_FAILED, content="c1", **VERIFIED)
    status, _ = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert status.quarantined == "content:c1"


def test_the_image_signer_is_recorded_next_to_the_commit_signer() -> None:
    report = did("applied", plan=Plan("replace", "deploying"), image_signer="SHA256:abc", **VERIFIED)
    status, events = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert status.applied is not None and status.applied.image_signer == "SHA256:abc"
    assert events[0].fields["image_signer"] == "SHA256:abc"


def test_the_image_source_is_recorded_in_the_status_and_the_audit_when_provenance_gave_one() -> None:
    source = {
        "repository": "https://github.com/o/r",
        "ref": "refs/heads/main",
        "commit": "c" * 40,
        "build_signer": "https://github.com/o/r/.github/workflows/release.yml@refs/heads/main",
    }
    report = did("applied", plan=Plan("replace", "deploying"), image_signer="wf (gh)", image_source=source, **VERIFIED)
    status, events = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert status.applied is not None and status.applied.image_source is not None
    assert status.applied.image_source.model_dump() == source and events[0].fields["image_source"] == source
    plain, events = record(
        previous(), did("applied", plan=Plan("replace", "d"), **VERIFIED), now=NOW, stale_after=STALE_AFTER
    )
    assert plain.applied is not None and plain.applied.image_source is None and "image_source" not in events[0].fields


def test_in_swarm_mode_the_decision_names_the_node_and_task_the_runtime_runs_as() -> None:
    swarm = ContainerStatus(name="dreichor-runtime-prod", id="c1", image=IMAGE, state="running", node="p1", task="t1")
    report = did("applied", plan=Plan("repair", "drift in placement"), container=swarm, **VERIFIED)
    _, events = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert (events[0].event, events[0].fields["node"], events[0].fields["task"]) == ("drift_repaired", "p1", "t1")
    container_mode = did("applied", plan=Plan("replace", "deploying"), **VERIFIED)
    _, events = record(previous(), container_mode, now=NOW, stale_after=STALE_AFTER)
    assert "node" not in events[0].fields and "task" not in events[0].fields


def test_untrusted_text_is_bounded_and_escaped_in_the_status() -> None:
    reason = "namespace '\x1b]0;owned\x07" + "N" * 100_000 + "'"
    logs = "\n".join(f"\x1b[31mline {n}" + "x" * 1000 for n in range(500))
    report = did("rolled_back", reason, code=Reason.BAD_SIGNATURE, logs=logs, **VERIFIED)
    status, _ = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    attempt = status.last_attempt
    assert attempt is not None and attempt.logs is not None
    assert len(attempt.reason) <= 300 and "\x1b" not in attempt.reason and attempt.reason.startswith("namespace")
    assert len(attempt.logs.splitlines()) == 50 and all(len(line) <= 300 for line in attempt.logs.splitlines())
    assert "\x1b" not in attempt.logs and attempt.logs.splitlines()[-1].startswith("\\x1b[31mline 499")


def test_a_no_change_pass_after_a_fetch_error_clears_it_in_the_new_status_only() -> None:
    before = previous()
    before.source.last_error, before.source.fetched_at = "fetching main failed: timeout", NOW - timedelta(hours=1)
    before.source.stale = True
    status, _ = record(
        before, did("unchanged", head=OLD, target=OLD, signer="alice", image=IMAGE), now=NOW, stale_after=STALE_AFTER
    )
    assert (status.source.last_error, status.source.fetched_at, status.source.stale) == (None, NOW, False)
    assert before.source.last_error == "fetching main failed: timeout" and before.source.stale  # its own source
    assert status.source is not before.source


def test_a_no_change_pass_records_a_new_head_it_did_not_act_on() -> None:
    before = previous(quarantined=f"{NEW}:h")  # the new head is held: the pass repairs with the applied revision
    report = did("unchanged", head=NEW, target=OLD, signer="alice", image=IMAGE)
    status, _ = record(before, report, now=NOW, stale_after=STALE_AFTER)
    assert (status.source.head, before.source.head) == (NEW, OLD)
    assert status.updated_at == NOW and before.updated_at == NOW - timedelta(minutes=1)


def test_a_content_neutral_commit_moves_the_guard_to_the_head() -> None:
    report = did("unchanged", head=NEW, target=NEW, signer="alice", image=IMAGE, container_revision=OLD)
    status, _ = record(previous(), report, now=NOW, stale_after=STALE_AFTER)
    assert status.sync is not None and status.sync.state == "InSync" and status.sync.revision == NEW
    assert status.applied is not None and status.applied.revision == OLD
