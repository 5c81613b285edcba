"""Two people for prod (docs/design.md §15) over the real engine.

Real dockerd, registry, git and ``ssh-keygen`` approvals.

The approvals are written the way approvers write them, with the controller's own
``approve`` command in the manifest repository's clone; the host runs ``sync``,
``plan`` and ``approvals`` as an operator would.  The many verdicts (which files
count and which do not) run over a fake engine in ``tests/unit/test_approvals_pass.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import compose
from controller.cli import main
from controller.model.config import load_config
from controller.service import PassOptions
from testbed import ControllerHost, SshKey, make_ssh_key

WAITING = 5


@pytest.fixture
def host(controller_host: ControllerHost, tmp_path: Path) -> tuple[ControllerHost, dict[str, SshKey]]:
    """prod running healthy-a, then two of alice, bob and carol required for prod; dev as it was."""
    assert controller_host.sync("prod") == 0
    people = {name: make_ssh_key(tmp_path / "approvers", name=name) for name in ("alice", "bob", "carol")}
    agent = controller_host.configs["prod"].parent
    lines = "".join(f'{name} namespaces="dreichor-approval" {key.public}\n' for name, key in people.items())
    (agent / "trust" / "approvers").write_text(lines)
    with controller_host.configs["prod"].open("a") as config:
        config.write("approvals: {threshold: 2, approvers: trust/approvers, max_age: 14d}\n")
    return controller_host, people


def _approve(host: ControllerHost, key: SshKey, env: str = "prod") -> None:
    """An approver's flow: ``approve`` in the clone, then a signed commit that adds the file, pushed."""
    assert main(["approve", str(host.repo.work / f"envs/{env}.yaml"), "--key", str(key.path)]) == 0
    host.repo.git("add", "approvals")
    host.repo.commit(f"approve {env} as {key.path.name}", key=host.key)
    host.repo.push()


def test_prod_waits_for_two_named_approvers_while_dev_deploys_as_before(
    host: tuple[ControllerHost, dict[str, SshKey]], images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    bed, people = host
    bed.publish("both: healthy-b", dev=images["healthy-b"], prod=images["healthy-b"])
    assert bed.sync("dev") == 0 and bed.image("dev") == images["healthy-b"]  # dev has no approvals: as today
    capsys.readouterr()
    assert main(["plan", "--config", str(bed.configs["prod"])]) == 0
    assert "would wait: 0 of 2 approvals" in capsys.readouterr().out
    assert bed.sync("prod") == WAITING
    assert bed.image("prod") == images["healthy-a"]  # held: the running container is untouched
    _approve(bed, people["alice"])
    assert bed.sync("prod") == WAITING and bed.sync("prod") == WAITING
    status = bed.status("prod")
    assert status.sync is not None and status.sync.state == "Waiting"
    assert status.sync.reason == "waiting for approvals (1 of 2: alice)"
    assert status.approvals is not None and (status.approvals.have, status.approvals.need) == (["alice"], 2)
    assert status.quarantined is None
    waits = [e for e in bed.audit("prod") if e["event"] == "waiting_approval"]
    assert len(waits) == 1  # one decision per content, not one per poll
    capsys.readouterr()
    assert main(["approvals", "--json", "--config", str(bed.configs["prod"])]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["have"] == ["alice"] and listed["missing"] == ["bob", "carol"] and not listed["enough"]
    _approve(bed, people["carol"])  # the manifest is not touched: the next pass applies
    assert bed.sync("prod") == 0
    assert bed.image("prod") == images["healthy-b"]
    final = bed.status("prod")
    assert final.approvals is None and final.sync is not None and final.sync.state == "InSync"


def test_a_revert_runs_on_unexpired_approvals_and_waits_once_they_expired(
    host: tuple[ControllerHost, dict[str, SshKey]], images: dict[str, str]
) -> None:
    bed, people = host
    _approve(bed, people["alice"])  # healthy-a's content, approved now for 7 days
    _approve(bed, people["bob"])
    bed.publish("prod: healthy-b", prod=images["healthy-b"])
    _approve(bed, people["alice"])
    _approve(bed, people["bob"])
    now = datetime.now(UTC)

    def sync(at: datetime) -> str:
        service = compose.environment_service(load_config(bed.configs["prod"]), clock=lambda: at)
        try:
            return service.sync(PassOptions()).result
        finally:
            service.close()

    assert sync(now) == "applied" and bed.image("prod") == images["healthy-b"]
    bed.publish("revert to healthy-a", prod=images["healthy-a"])
    assert sync(now) == "applied" and bed.image("prod") == images["healthy-a"]
    bed.publish("healthy-b again", prod=images["healthy-b"])
    assert sync(now + timedelta(days=8)) == "waiting"  # its approvals expired: held
    assert bed.image("prod") == images["healthy-a"]
