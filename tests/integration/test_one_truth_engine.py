"""The state table of docs/design.md §16 on the real Docker Engine, one test per row, through the
real command line: ``sync``'s exit code, ``plan --exit-code``, ``status --check``, ``sync.state`` and
the audit log, from the pass that decided and from the passes after — and the runtime itself, which
a held head never leaves unrepaired, and which a rollback restores healthy (gated) before ``sync``
returns.  The waiting row needs approvals; it runs over the fake engine in
``tests/unit/test_approvals_pass.py``.
"""

from __future__ import annotations

import pytest

from controller.cli import main as cli_main
from testbed import ControllerHost


def answers(host: ControllerHost, *args: str) -> int:
    return cli_main([*args, "--config", str(host.configs["prod"])])


def channels(host: ControllerHost) -> tuple[int, int, int, str]:
    """``sync``, then ``plan --exit-code``, ``status --check`` and ``sync.state`` after it."""
    sync = host.sync()
    plan = answers(host, "plan", "--exit-code")
    check = answers(host, "status", "--check")
    status = host.status()
    assert status.sync is not None
    return sync, plan, check, status.sync.state


def events(host: ControllerHost) -> list[str]:
    return [str(e["event"]) for e in host.audit()]


@pytest.fixture
def host(controller_host: ControllerHost, images: dict[str, str]) -> ControllerHost:
    """prod runs healthy-a, applied and healthy."""
    assert controller_host.sync() == 0
    assert controller_host.image() == images["healthy-a"]
    return controller_host


def test_a_commit_that_leaves_prods_content_as_it_is_is_in_sync_and_applies_nothing(
    host: ControllerHost, images: dict[str, str]
) -> None:
    applied = host.status().applied
    head = host.publish("dev bump", dev=images["healthy-b"])
    assert channels(host) == (0, 0, 0, "InSync")
    status = host.status()
    assert events(host) == ["applied"]
    assert status.applied == applied and status.sync is not None and status.sync.revision == head


def test_a_change_applied_by_this_pass(host: ControllerHost, images: dict[str, str]) -> None:
    host.publish("b", prod=images["healthy-b"])
    assert answers(host, "plan", "--exit-code") == 2
    assert channels(host) == (0, 0, 0, "InSync")
    assert events(host) == ["applied", "applied"] and host.image() == images["healthy-b"]


def test_refused_then_held_and_a_stopped_runtime_is_repaired_meanwhile(
    host: ControllerHost, images: dict[str, str]
) -> None:
    host.publish("unsigned b", key=None, prod=images["healthy-b"])
    assert channels(host) == (3, 3, 3, "OutOfSync")
    host.engine.cli("stop", "--time", "1", "dreichor-runtime-prod")
    assert channels(host) == (3, 3, 3, "OutOfSync")
    assert host.running()["State"]["Running"] and host.image() == images["healthy-a"]  # type: ignore[index]
    assert events(host) == ["applied", "refused", "drift_repaired"]


def test_rolled_back_healthy_then_held_and_a_removed_runtime_is_recreated(
    host: ControllerHost, images: dict[str, str]
) -> None:
    host.publish("exits", prod=images["exits"])
    assert host.sync() == 4
    status = host.status()
    assert status.health == "Healthy", "the rollback is gated: the restored container is healthy when sync returns"
    assert answers(host, "status", "--check") == 3
    assert channels(host) == (3, 3, 3, "OutOfSync")
    host.engine.cli("rm", "--force", "dreichor-runtime-prod")
    assert channels(host) == (3, 3, 3, "OutOfSync")
    assert host.image() == images["healthy-a"] and host.status().health == "Healthy"
    assert events(host) == ["applied", "rolled_back", "drift_repaired"]


def test_suspended_answers_3_and_plan_says_what_resume_would_do(host: ControllerHost, images: dict[str, str]) -> None:
    assert answers(host, "suspend", "--reason", "exchange maintenance") == 0
    host.publish("b", prod=images["healthy-b"])
    assert channels(host) == (3, 2, 3, "Suspended")
    assert host.status().source.head == host.repo.head()  # still fetched: no stale alert while suspended
    assert answers(host, "suspend", "--reason", "again") == 0
    assert answers(host, "resume") == 0
    assert events(host) == ["applied", "suspended", "resumed"]
    assert channels(host) == (0, 0, 0, "InSync") and host.image() == images["healthy-b"]
