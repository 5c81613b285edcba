"""Approvals (docs/design.md §15) through the real service.

Real git, real ``ssh-keygen -Y sign`` approvals, a fake engine.

One manifest repository per test, the host's approvers in ``trust/approvers``,
the controller's clock passed in (never a sleep).  The verdicts the issue's
"Must hold" list names run here as one table; ``tests/integration/test_approvals.py``
repeats the main path over the real engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest

from controller import cli, compose
from controller.model.config import Config, WithdrawnApproval, parse_config
from controller.records.audit import read_events
from controller.records.host_init import init_layout
from controller.records.status import Status
from controller.service import EnvironmentService, PassOptions
from controller.signatures.approvals import NAMESPACE, Statement, folder
from testbed import ManifestRepo, SshKey, make_ssh_key, manifest_text, ssh_sign
from tests.unit.fake_engine import FakeEngine

REPOSITORY = "registry.test/dreichor/runtime"
GOOD_A = f"{REPOSITORY}@sha256:{'a' * 64}"
GOOD_B = f"{REPOSITORY}@sha256:{'b' * 64}"
START = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Keys:
    """The people: the committer, three approvers (alice with two keys), an outsider and a revoked approver."""

    committer: SshKey
    alice: SshKey
    alice_laptop: SshKey
    bob: SshKey
    carol: SshKey
    mallory: SshKey
    dave: SshKey


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder_ = tmp_path_factory.mktemp("keys")
    names = ("committer", "alice", "alice_laptop", "bob", "carol", "mallory", "dave")
    return Keys(*(make_ssh_key(folder_, name=name) for name in names))


def approvers_file(keys: Keys) -> str:
    """alice (two keys), bob, carol and dave approve; mallory does not."""
    people = [("alice", keys.alice), ("alice", keys.alice_laptop), ("bob", keys.bob), ("carol", keys.carol)]
    people.append(("dave", keys.dave))
    return "".join(f'{name} namespaces="{NAMESPACE}" {key.public}\n' for name, key in people)


@dataclass
class Host:
    """prod on one host: the manifest repository, the config and a fake engine; the clock is ``now``."""

    repo: ManifestRepo
    keys: Keys
    config: Config
    engine: FakeEngine
    now: datetime = START
    audit_hooks: list[dict[str, object]] = field(default_factory=list)
    ticks: float = 0.0  # monotonic time: the health gate's waits pass at once

    def sleep(self, seconds: float) -> None:
        self.ticks += seconds

    def service(self) -> EnvironmentService:
        service = compose.environment_service(
            self.config,
            engine=lambda: self.engine,
            clock=lambda: self.now,
            sleep=self.sleep,
            monotonic=lambda: self.ticks,
        )
        service.audit_hooks.append(self.audit_hooks.append)
        return service

    def sync(self) -> str:
        return self.service().sync(PassOptions()).result

    def content(self, image: str, environment: str = "prod") -> str:
        return hashlib.sha256(manifest_text(environment, image).encode()).hexdigest()

    def statement(self, image: str, **changes: object) -> Statement:
        """A statement of ``image``'s prod manifest as the host computes it, with ``changes``."""
        fields: dict[str, object] = {
            "repository": self.config.approval_repository,
            "environment": "prod",
            "path": "envs/prod.yaml",
            "sha256": self.content(image),
            "created": self.now - timedelta(hours=1),
            "expires": self.now + timedelta(days=7),
        }
        return Statement(**{**fields, **changes})  # type: ignore[arg-type]

    def approval(self, key: SshKey, statement: Statement, *, namespace: str = NAMESPACE) -> bytes:
        signed = statement.to_bytes()
        return signed + ssh_sign(key, signed, namespace=namespace)

    def add(self, image: str, name: str, data: bytes, *, sha: str | None = None) -> None:
        """Stage an approval file in the folder of ``image``'s content (or ``sha``'s)."""
        path = self.repo.work / folder("prod", sha or self.content(image)) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.repo.git("add", "-A")

    def approve(self, image: str, *people: SshKey, **changes: object) -> None:
        for key in people:
            self.add(image, f"{key.path.name}.approval", self.approval(key, self.statement(image, **changes)))

    def publish(self, image: str, message: str = "") -> str:
        self.repo.write("envs/prod.yaml", manifest_text("prod", image))
        sha = self.repo.commit(message or f"run {image[-6:]}", key=self.keys.committer)
        self.repo.push()
        return sha

    def status(self) -> Status:
        status = self.service().status()
        assert status is not None
        return status

    def image(self) -> str | None:
        running = self.engine.running()
        return running.image if running else None

    def events(self) -> list[str]:
        return [str(e["event"]) for e in read_events(self.config.paths.audit)]

    def cli(self, *args: str) -> int:
        """``dreichor-controller ARGS`` through the real command line over this host's service; its exit code."""
        with (
            mock.patch.object(compose, "service_from_file", lambda path: self.service()),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            return cli.main([*args, "--config", str(self.config.paths.config)])


def make_host(tmp_path: Path, keys: Keys, *, approvals: dict[str, object] | None) -> Host:
    repo = ManifestRepo(tmp_path / "manifests")
    init_layout(tmp_path / "opt", "prod")
    agent = tmp_path / "opt" / "prod" / "deploy-agent"
    (agent / "trust" / "allowed_signers").write_text(keys.committer.allowed_signers_line + "\n")
    (agent / "trust" / "approvers").write_text(approvers_file(keys))
    (agent / "trust" / "revoked_keys").write_text(keys.dave.public + "\n")
    (agent / ".env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    raw: dict[str, object] = {
        "environment": "prod",
        "root": str(tmp_path / "opt"),
        "source": {"url": repo.url, "interval": 60},
        "trust": {"allowed_signers": "trust/allowed_signers", "revoked_keys": "trust/revoked_keys"},
        "image": {"repository": REPOSITORY},
        "health": {"timeout": 5, "stable": 1},
    }
    if approvals is not None:
        raw["approvals"] = approvals
    config = parse_config(raw, base=agent)
    # on disk too: ``status`` reads the file without the service (JSON is YAML)
    (agent / "controller.yaml").write_text(json.dumps(raw))
    return Host(repo=repo, keys=keys, config=config, engine=FakeEngine("prod", registry={GOOD_A, GOOD_B}))


TWO_OF_THREE = {"threshold": 2, "approvers": "trust/approvers", "max_age": "14d"}


@pytest.fixture
def host(tmp_path: Path, keys: Keys) -> Iterator[Host]:
    """prod running image A, which alice and bob approved."""
    host = make_host(tmp_path, keys, approvals=TWO_OF_THREE)
    host.approve(GOOD_A, keys.alice, keys.bob)
    host.publish(GOOD_A)
    assert host.sync() == "applied" and host.image() == GOOD_A
    yield host


# -- the verdict table: image B is published with these approvals; does it run? -------------------

Case = Callable[[Host], None]


def _none(h: Host) -> None:
    pass


def _alice(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)


def _alice_and_bob(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice, h.keys.bob)


def _alice_with_two_keys(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice, h.keys.alice_laptop)


def _outsider(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice, h.keys.mallory)


def _git_namespace(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    h.add(GOOD_B, "bob.approval", h.approval(h.keys.bob, h.statement(GOOD_B), namespace="git"))


def _dev_copied_to_prod(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    dev = h.statement(GOOD_B, environment="dev", path="envs/dev.yaml", sha256=h.content(GOOD_B, "dev"))
    h.add(GOOD_B, "bob.approval", h.approval(h.keys.bob, dev))


def _other_repository(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    h.approve(GOOD_B, h.keys.bob, repository="github.com/someone/else")


def _expired(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    h.approve(GOOD_B, h.keys.bob, created=h.now - timedelta(days=3), expires=h.now - timedelta(seconds=1))


def _longer_than_max_age(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    h.approve(GOOD_B, h.keys.bob, created=h.now, expires=h.now + timedelta(days=14, seconds=1))


def _created_in_the_future(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    h.approve(GOOD_B, h.keys.bob, created=h.now + timedelta(minutes=6), expires=h.now + timedelta(days=1))


def _statement_changed(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    signed = h.approval(h.keys.bob, h.statement(GOOD_B))
    longer = format_time_of(h.now + timedelta(days=7)), format_time_of(h.now + timedelta(days=8))
    h.add(GOOD_B, "bob.approval", signed.replace(longer[0].encode(), longer[1].encode(), 1))


def _signature_changed(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    statement, _, signature = h.approval(h.keys.bob, h.statement(GOOD_B)).partition(b"-----BEGIN")
    lines = signature.split(b"\n")
    lines[3] = lines[3][:10] + (b"A" if lines[3][10:11] != b"A" else b"B") + lines[3][11:]
    h.add(GOOD_B, "bob.approval", statement + b"-----BEGIN" + b"\n".join(lines))


def _revoked_approver(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice, h.keys.dave)


def _not_utf8(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice)
    h.add(GOOD_B, "bob.approval", b"\xff\xfe" + h.approval(h.keys.bob, h.statement(GOOD_B)))


def _alice_bob_and_noise(h: Host) -> None:
    h.approve(GOOD_B, h.keys.alice, h.keys.bob)
    h.add(GOOD_B, "README", b"notes\n")
    h.approve(GOOD_B, h.keys.mallory)


def format_time_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


CASES = [
    # (id, staged approvals, verdict, who counts, a reason a file did not count)
    ("no approvals", _none, "waiting", [], None),
    ("one approval", _alice, "waiting", ["alice"], None),
    ("two distinct people", _alice_and_bob, "applied", ["alice", "bob"], None),
    ("one person with two keys", _alice_with_two_keys, "waiting", ["alice"], None),
    ("a signer not in approvers", _outsider, "waiting", ["alice"], "is not in approvals.approvers"),
    ("signed in the git namespace", _git_namespace, "waiting", ["alice"], "namespace 'git', not 'dreichor-approval'"),
    ("a dev approval copied into prod", _dev_copied_to_prod, "waiting", ["alice"], "environment 'dev', not 'prod'"),
    ("a statement for another repository", _other_repository, "waiting", ["alice"], "repository 'github.com/someone"),
    ("an expired approval", _expired, "waiting", ["alice"], "expired at"),
    ("longer than max_age", _longer_than_max_age, "waiting", ["alice"], "more than max_age"),
    ("created in the future", _created_in_the_future, "waiting", ["alice"], "in the future"),
    ("a changed statement", _statement_changed, "waiting", ["alice"], "does not match the statement"),
    ("a changed signature", _signature_changed, "waiting", ["alice"], "bob.approval is not counted"),
    ("a revoked approver key", _revoked_approver, "waiting", ["alice"], "is listed in revoked_keys"),
    ("a file that is not UTF-8", _not_utf8, "waiting", ["alice"], "not ASCII text"),
    ("enough, beside noise", _alice_bob_and_noise, "applied", ["alice", "bob"], "is not named *.approval"),
]


@pytest.mark.parametrize(("stage", "verdict", "have", "not_counted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_change_runs_only_with_two_distinct_approvers(
    host: Host, stage: Case, verdict: str, have: list[str], not_counted: str | None
) -> None:
    stage(host)
    host.publish(GOOD_B)
    tally = host.service().approvals().tally
    assert tally.have == have
    if not_counted:
        assert any(not_counted in r.reason for r in tally.rejected), tally.rejected
    assert host.sync() == verdict
    status = host.status()
    if verdict == "applied":
        assert host.image() == GOOD_B and status.approvals is None and status.sync is not None
        assert status.sync.state == "InSync"
        return
    assert host.image() == GOOD_A  # held: the running container is untouched
    assert status.sync is not None and status.sync.state == "Waiting"
    assert status.approvals is not None
    assert (status.approvals.content, status.approvals.have, status.approvals.need) == (host.content(GOOD_B), have, 2)
    assert status.quarantined is None and status.last_attempt is not None
    assert status.last_attempt.result == "applied"  # a held change is no refusal: the last decision stays


def test_a_held_change_is_one_decision_and_applies_when_approvals_arrive_later(host: Host) -> None:
    host.approve(GOOD_B, host.keys.alice)
    host.publish(GOOD_B)
    for _ in range(3):
        assert host.sync() == "waiting"
    assert host.events() == ["applied", "waiting_approval"]
    told = [e for e in host.audit_hooks if e["event"] == "waiting_approval"]
    assert len(told) == 1 and told[0]["have"] == ["alice"] and told[0]["missing"] == ["bob", "carol", "dave"]
    status = host.status()
    assert status.sync is not None and status.sync.reason == "waiting for approvals (1 of 2: alice)"
    assert status.phase == "Degraded"  # held, not on its way: Progressing only while a pass changes the runtime
    host.approve(GOOD_B, host.keys.carol)  # a later commit that does not touch the manifest
    host.repo.commit("carol approves", key=host.keys.committer)
    host.repo.push()
    assert host.sync() == "applied" and host.image() == GOOD_B
    assert host.events() == ["applied", "waiting_approval", "applied"]


def test_plan_says_it_would_wait_and_changes_nothing(host: Host) -> None:
    host.approve(GOOD_B, host.keys.bob)
    host.publish(GOOD_B)
    result = host.service().plan()
    assert (result.result, result.reason) == ("waiting", "waiting for approvals (1 of 2: bob)")
    assert result.approvals == "1 of 2 approvals (bob)"
    assert result.plan is not None and result.plan.action == "replace"
    assert host.events() == ["applied"] and host.image() == GOOD_A


def test_a_revert_to_approved_unexpired_content_applies_and_after_expiry_waits(host: Host) -> None:
    host.approve(GOOD_B, host.keys.alice, host.keys.bob)
    host.publish(GOOD_B)
    assert host.sync() == "applied"
    host.publish(GOOD_A, "revert to A")  # A's approvals (made at START, for 7 days) are still in the tree
    assert host.sync() == "applied" and host.image() == GOOD_A
    host.publish(GOOD_B, "B again")
    host.now = START + timedelta(days=8)  # B's approvals have expired
    assert host.sync() == "waiting" and host.image() == GOOD_A
    assert host.status().approvals is not None
    assert all("expired at" in reason for reason in host.status().approvals.not_counted)  # type: ignore[union-attr]


def test_content_equal_to_what_runs_needs_no_approvals(host: Host) -> None:
    host.engine.containers.clear()  # the container was removed: repairing it is no change
    assert host.sync() == "applied" and host.image() == GOOD_A
    host.repo.commit("an empty commit re-pushes the same content", key=host.keys.committer)
    host.repo.push()
    assert host.sync() == "unchanged"


def test_break_glass_rollback_needs_no_approvals(host: Host) -> None:
    host.approve(GOOD_B, host.keys.alice, host.keys.bob)
    host.publish(GOOD_B)
    assert host.sync() == "applied"
    snapshot = host.service().rollback()
    assert host.image() == GOOD_A and snapshot.image == GOOD_A


def test_an_environment_without_approvals_config_deploys_as_before(tmp_path: Path, keys: Keys) -> None:
    host = make_host(tmp_path, keys, approvals=None)
    host.publish(GOOD_A)
    assert host.sync() == "applied"
    host.publish(GOOD_B)
    assert host.sync() == "applied" and host.image() == GOOD_B
    assert host.status().approvals is None and "waiting_approval" not in host.events()


def test_thirty_three_files_are_refused_with_a_sentence_and_a_later_fix_applies(host: Host) -> None:
    host.approve(GOOD_B, host.keys.alice, host.keys.bob)
    for number in range(31):
        host.add(GOOD_B, f"junk-{number}.approval", b"junk\n")
    host.publish(GOOD_B)
    assert host.sync() == "refused" and host.image() == GOOD_A
    status = host.status()
    assert status.last_attempt is not None and status.last_attempt.code == "BadApprovals"
    assert "holds 33 entries, more than the limit of 32" in status.last_attempt.reason
    assert status.quarantined is None  # fixed by a commit that does not touch the manifest
    host.repo.git("rm", "-q", "-r", str(Path(folder("prod", host.content(GOOD_B))) / "junk-*"))
    host.repo.commit("drop the junk", key=host.keys.committer)
    host.repo.push()
    assert host.sync() == "applied" and host.image() == GOOD_B


def _huge(h: Host) -> None:
    h.add(GOOD_B, "huge.approval", b"x" * (16 * 1024 + 1))


def _symlink(h: Host) -> None:
    target = h.repo.work / folder("prod", h.content(GOOD_B))
    target.mkdir(parents=True, exist_ok=True)
    (target / "link.approval").symlink_to("/etc/passwd")
    h.repo.git("add", "-A")


def _deep(h: Host) -> None:
    h.add(GOOD_B, "a/b/c/d/e/f/deep.approval", b"deep\n")


def _folder_is_a_symlink(h: Host) -> None:
    h.repo.git("rm", "-q", "-r", "--cached", folder("prod", h.content(GOOD_B)))
    target = h.repo.work / folder("prod", h.content(GOOD_B))
    for file in target.iterdir():
        file.unlink()
    target.rmdir()
    target.symlink_to("/")
    h.repo.git("add", "-A")


def _name_not_utf8(h: Host) -> None:
    target = h.repo.work / folder("prod", h.content(GOOD_B))
    target.mkdir(parents=True, exist_ok=True)
    (target / os.fsdecode(b"\xff\xfe.approval")).write_bytes(b"x\n")
    h.repo.git("add", "-A")


@pytest.mark.parametrize(
    ("stage", "words"),
    [
        (_huge, "more than the limit of 16384 bytes"),
        (_symlink, "is a symlink, not a regular file"),
        (_deep, "is a folder, not a regular file"),
        (_folder_is_a_symlink, "is a symlink, not a folder"),
        (_name_not_utf8, "whose name is not UTF-8"),
    ],
    ids=["huge", "symlink", "deep", "folder-symlink", "name-not-utf8"],
)
def test_a_hostile_approvals_folder_is_refused_cleanly_and_changes_nothing(host: Host, stage: Case, words: str) -> None:
    host.approve(GOOD_B, host.keys.alice, host.keys.bob)
    stage(host)
    host.publish(GOOD_B)
    assert host.sync() == "refused" and host.image() == GOOD_A
    status = host.status()
    assert status.last_attempt is not None and words in status.last_attempt.reason
    assert status.last_attempt.code == "BadApprovals"
    assert host.events() == ["applied", "refused"]


def test_a_revoked_keys_file_that_went_missing_holds_the_pass_naming_it(host: Host) -> None:
    """N8: dave's key is revoked; without the file it would count (and sign) again: the pass holds instead."""
    revoked = Path(str(host.config.trust.revoked_keys))
    kept = revoked.read_bytes()
    revoked.unlink()
    host.approve(GOOD_B, host.keys.alice, host.keys.dave)
    host.publish(GOOD_B)
    assert host.sync() == "refused" and host.image() == GOOD_A
    status = host.status()
    assert status.last_attempt is not None
    assert f"revoked_keys file {revoked} is missing" in status.last_attempt.reason
    revoked.write_bytes(kept)  # the file back: dave's approval does not count, the change waits for a second person
    assert host.sync() == "waiting" and host.image() == GOOD_A
    assert host.service().approvals().tally.have == ["alice"]


# -- N6: withdrawal, on the host ------------------------------------------------------------------


def _with_withdrawn(host: Host, *entries: dict[str, object]) -> None:
    """The host's approvals section with ``withdrawn`` entries (the config the operator edits)."""
    assert host.config.approvals is not None
    withdrawn = [WithdrawnApproval.model_validate(entry) for entry in entries]
    approvals_ = host.config.approvals.model_copy(update={"withdrawn": withdrawn})
    host.config = host.config.model_copy(update={"approvals": approvals_})


def test_an_approval_restored_from_history_counts_until_the_host_withdraws_it(host: Host) -> None:
    """Bob deletes his approval; anyone who can merge restores it from history: only the host can void it."""
    host.approve(GOOD_B, host.keys.alice, host.keys.bob)
    bob_file = host.repo.work / folder("prod", host.content(GOOD_B)) / f"{host.keys.bob.path.name}.approval"
    restored = bob_file.read_bytes()  # what `git checkout <old> -- approvals/` brings back, byte for byte
    host.publish(GOOD_B)
    tally = host.service().approvals().tally
    assert tally.have == ["alice", "bob"]
    bob = next(a for a in tally.counted if a.person == "bob")
    assert bob.sha256 == hashlib.sha256(restored).hexdigest()
    _with_withdrawn(host, {"sha256": bob.sha256})
    assert host.sync() == "waiting" and host.image() == GOOD_A
    tally = host.service().approvals().tally
    assert tally.have == ["alice"]
    assert any(
        f"is withdrawn on this host (approvals.withdrawn names sha256 {bob.sha256})" in r.reason for r in tally.rejected
    )


def test_a_person_withdrawn_before_a_time_counts_only_with_approvals_made_after_it(host: Host) -> None:
    host.approve(GOOD_B, host.keys.alice, host.keys.bob)  # created an hour before now
    host.publish(GOOD_B)
    _with_withdrawn(host, {"person": "bob", "not_before": "2026-12-02T10:00:00Z"})
    assert host.sync() == "waiting" and host.image() == GOOD_A
    rejected = host.service().approvals().tally.rejected
    assert any("bob's approvals created before 2026-12-02T10:00:00Z do not count" in r.reason for r in rejected)
    host.approve(GOOD_B, host.keys.bob, created=host.now, expires=host.now + timedelta(days=1))  # bob signs anew
    host.repo.commit("bob approves again", key=host.keys.committer)
    host.repo.push()
    assert host.sync() == "applied" and host.image() == GOOD_B


def test_a_previous_release_approvals_section_upgrades_in_place(tmp_path: Path, keys: Keys) -> None:
    """The previous release's section (no max_age, withdrawn or openpgp_approvers) loads unchanged, and
    approvals as its ``approve`` wrote them (valid 7 days) still count under the new 7d default."""
    host = make_host(tmp_path, keys, approvals={"threshold": 2, "approvers": "trust/approvers"})
    created = host.now - timedelta(hours=1)
    host.approve(GOOD_A, keys.alice, keys.bob, created=created, expires=created + timedelta(days=7))
    host.publish(GOOD_A)
    assert host.sync() == "applied" and host.image() == GOOD_A


def test_waiting_answers_5_from_every_pass_and_the_runtime_is_still_repaired(host: Host) -> None:
    """docs/design.md §16, the waiting row: sync 5, plan --exit-code 5, status --check 3, told once per content."""
    host.now = datetime.now(UTC)  # status --check judges the status file's age by the real clock
    host.approve(GOOD_B, host.keys.alice)
    host.publish(GOOD_B)
    for damage in (None, "stop", "remove"):
        runtime = host.engine.current()
        assert runtime is not None
        if damage == "stop":
            host.engine.stop(runtime.id)
        elif damage == "remove":
            host.engine.remove(runtime.id)
        assert (host.cli("sync"), host.cli("plan", "--exit-code"), host.cli("status", "--check")) == (5, 5, 3)
        assert host.image() == GOOD_A  # the applied content runs, repaired while the change waits
        status = host.status()
        assert status.sync is not None and status.sync.state == "Waiting" and status.phase == "Degraded"
    assert host.events() == ["applied", "waiting_approval", "drift_repaired", "drift_repaired"]
