"""A host the previous release ran upgrades in place: its status file, audit log, watermark and a held
quarantine, as commit 45269f2 wrote them (``tests/data/upgrade-45269f2``, made by ``make.py.txt`` there).

That release deployed A (tag 1.4.2), rolled back a sick C (1.4.3) and held it once more — reporting
that held pass as ``unchanged``.  This release reads the same files, keeps the hold, says so on every
channel, verifies the audit chain across the upgrade, and deploys the next signed change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from controller.model.desired import container_name, desired_from_bytes
from controller.records.dotenv import read_dotenv
from testbed import SshKey, manifest_text
from tests.unit.cli_host import Host

DATA = Path(__file__).parent.parent / "data" / "upgrade-45269f2"
REPOSITORY = "registry.test/dreichor/runtime"
A = f"{REPOSITORY}@sha256:{'a' * 64}"
B = f"{REPOSITORY}:1.4.4@sha256:{'b' * 64}"
C = f"{REPOSITORY}@sha256:{'c' * 64}"


@pytest.fixture
def upgraded(tmp_path: Path) -> Host:
    """The previous release's host: its records, its manifest repository, and its runtime running A."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    for name in ("alice", "alice.pub"):
        shutil.copy(DATA / name, key_dir / name)
    (key_dir / "alice").chmod(0o600)
    line = (DATA / "allowed_signers").read_text().strip()
    key = SshKey(path=key_dir / "alice", public=(key_dir / "alice.pub").read_text().strip(), principal=line.split()[0])
    host = Host(tmp_path, key)
    (host.agent / "trust" / "allowed_signers").write_text((DATA / "allowed_signers").read_text())
    shutil.rmtree(host.repo.bare)
    subprocess.run(["git", "clone", "-q", "--bare", str(DATA / "manifests.bundle"), str(host.repo.bare)], check=True)
    host.repo.git("fetch", "-q", "origin")
    host.repo.git("reset", "-q", "--hard", "origin/main")
    state = host.config.paths.state
    for name in ("status.json", "audit.jsonl", "watermark"):
        shutil.copy(DATA / name, state / name)
    text = (state / "status.json").read_text()  # the host was left a day ago: no controller writes it since
    updated = json.loads(text)["updated_at"]
    (state / "status.json").write_text(
        text.replace(f'"updated_at": "{updated}"', '"updated_at": "2026-12-07T04:07:36Z"')
    )
    (state / "audit.jsonl").chmod(0o600)
    host.engine.registry |= {A, C, B.replace(":1.4.4", "")}
    host.engine.crashing = frozenset({C})
    applied = host.status()["applied"]["revision"]
    manifest = subprocess.run(
        ["git", "-C", str(host.repo.bare), "show", f"{applied}:envs/prod.yaml"], check=True, capture_output=True
    ).stdout
    desired = desired_from_bytes(
        manifest,
        environment="prod",
        repository=REPOSITORY,
        paths=host.config.paths,
        dotenv=read_dotenv(host.config.paths.dotenv),
        revision=applied,
        what="the previous release's runtime",
    )
    host.engine.start(host.engine.create(desired, name=container_name("prod")))
    return host


def test_the_previous_releases_held_quarantine_holds_and_every_channel_says_so(upgraded: Host) -> None:
    before = upgraded.events()
    status = upgraded.status()
    assert status["quarantined"].startswith("content:") and status["applied"]["tag"] == "1.4.2"
    code, out = upgraded.cli("status", "--check")
    assert code == 4 and "unknown: no controller has written the status for" in out  # that release is gone
    assert upgraded.cli("plan", "--exit-code")[0] == 3
    code, out = upgraded.cli("sync")
    assert (code, out.split(":")[0]) == (3, "held")
    assert upgraded.cli("status", "--check")[0] == 3
    after = upgraded.status()
    assert after["quarantined"] == status["quarantined"] and after["sync"]["state"] == "OutOfSync"
    assert after["applied"] == status["applied"]  # the tag and the change that made the container
    assert upgraded.events() == before  # the decision was told by the previous release: not again
    assert upgraded.engine.running().image == A  # type: ignore[union-attr]
    assert upgraded.cli("history", "--verify")[0] == 0


def test_the_next_signed_change_deploys_on_the_upgraded_host(upgraded: Host) -> None:
    upgraded.repo.write("envs/prod.yaml", manifest_text("prod", B))
    upgraded.repo.commit("run 1.4.4", key=upgraded.key)
    upgraded.repo.push()
    assert upgraded.cli("sync")[0] == 0
    status = upgraded.status()
    assert status["applied"]["tag"] == "1.4.4" and status["quarantined"] is None
    assert [e["event"] for e in upgraded.events()][-1] == "applied"
    assert upgraded.cli("history", "--verify")[0] == 0
    assert upgraded.cli("status", "--check")[0] == 0
