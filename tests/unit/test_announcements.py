"""What a decision tells, and when the controller stays quiet: one behaviour per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.model.config import DEFAULT_NOTIFY_EVENTS
from controller.notifications.announcements import (
    LOG_CHARS,
    CommitStatus,
    Decision,
    Memory,
    Outcome,
    Policy,
    compose,
    decide,
    decision_from_event,
    excerpt,
)

SHA_B = "b" * 40
SHA_A = "1a2b3c4" + "d" * 33
IMAGE = "ghcr.io/ceerkle/dreichor-trading/runtime@sha256:" + "e" * 64
T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = Policy(events=frozenset(DEFAULT_NOTIFY_EVENTS), repeat=3600, statuses=True)


def refused(revision: str = SHA_B, reason: str = "the commit is not signed by a trusted key") -> Decision:
    return Decision("refused", "prod", revision=revision, reason=reason, code="Unsigned")


def applied(revision: str = SHA_A) -> Decision:
    return Decision("applied", "prod", revision=revision, image=IMAGE, signer="deploy@example", reason="applied")


def run(decisions: list[tuple[Decision, datetime]], policy: Policy = POLICY) -> list[Outcome]:
    memory, outcomes = Memory(), []
    for decision, now in decisions:
        outcome = decide(memory, decision, now=now, policy=policy)
        memory = outcome.memory
        outcomes.append(outcome)
    return outcomes


def titles(outcomes: list[Outcome]) -> list[list[str]]:
    return [[m.title for m in o.messages] for o in outcomes]


def test_an_applied_revision_names_environment_short_sha_digest_and_signer() -> None:
    (outcome,) = run([(applied(), T0)])
    (message,) = outcome.messages
    assert message.title == "prod: applied 1a2b3c4"
    assert message.severity == "success"
    assert f"Digest: sha256:{'e' * 64}" in message.body
    assert "Signer: deploy@example" in message.body
    assert "Environment: prod" in message.body


def test_in_swarm_mode_the_message_names_the_node_and_task() -> None:
    event = {"event": "applied", "revision": SHA_A, "image": IMAGE, "node": "p1", "task": "x1y2z3a4b5c6d7e8"}
    decision = decision_from_event("prod", event)
    assert decision is not None
    assert "Node: p1 (task x1y2z3a4b5c6)" in compose(decision).body
    assert "Node:" not in compose(applied()).body


def test_an_applied_image_names_its_cosign_signer_next_to_the_commit_signer() -> None:
    decision = Decision(
        "applied", "prod", revision=SHA_A, image=IMAGE, signer="deploy@example", image_signer="SHA256:k"
    )
    (message,) = decide(Memory(), decision, now=T0, policy=POLICY).messages
    lines = message.body.splitlines()
    assert lines[lines.index("Signer: deploy@example") + 1] == "Image signer: SHA256:k"
    (plain,) = run([(applied(), T0)])[0].messages
    assert "Image signer" not in plain.body


def test_an_applied_image_names_the_source_its_provenance_gives() -> None:
    source = {"repository": "https://github.com/o/r", "ref": "refs/heads/main", "commit": "c" * 40}
    event = {"event": "applied", "revision": SHA_A, "signer": "s", "image_signer": "wf (gh)", "image_source": source}
    decision = decision_from_event("prod", event)
    assert decision is not None and decision.image_source == f"https://github.com/o/r@refs/heads/main ({'c' * 40})"
    (message,) = decide(Memory(), decision, now=T0, policy=POLICY).messages
    lines = message.body.splitlines()
    assert lines[lines.index("Image signer: wf (gh)") + 1] == f"Built from: {decision.image_source}"
    assert "Built from" not in run([(applied(), T0)])[0].messages[0].body


def test_a_mention_in_the_workflow_ref_of_a_keyless_signer_and_its_source_pings_nobody() -> None:
    ref = "refs/heads/x@channel"  # a branch name git allows, quoted by the certificate and the provenance
    source = {"repository": "https://github.com/o/r", "ref": ref, "commit": "c" * 40}
    signer = f"https://github.com/o/r/.github/workflows/release.yml@{ref} (token.actions.githubusercontent.com)"
    event = {"event": "applied", "revision": SHA_A, "signer": "s", "image_signer": signer, "image_source": source}
    decision = decision_from_event("prod", event)
    assert decision is not None
    (message,) = decide(Memory(), decision, now=T0, policy=POLICY).messages
    assert "@channel" not in message.body
    assert "refs/heads/x@\u200bchannel (token" in message.body and "refs/heads/x@\u200bchannel (cccc" in message.body


def test_the_same_refusal_over_several_passes_is_told_once() -> None:
    passes = [(refused(), T0 + timedelta(minutes=i)) for i in range(5)]
    assert titles(run(passes)) == [["prod: refused bbbbbbb"], [], [], [], []]


def test_an_unresolved_problem_is_told_again_after_repeat_seconds() -> None:
    passes = [(refused(), T0), (refused(), T0 + timedelta(seconds=3599)), (refused(), T0 + timedelta(seconds=3600))]
    outcomes = run(passes)
    assert titles(outcomes) == [["prod: refused bbbbbbb"], [], ["prod: still refused bbbbbbb"]]
    assert f"Unresolved since: {T0.isoformat()}" in outcomes[2].messages[0].body


def test_a_resolution_is_told_once_as_prod_runs_the_revision_again() -> None:
    passes = [(refused(), T0), (applied(), T0 + timedelta(minutes=1)), (applied(), T0 + timedelta(minutes=2))]
    outcomes = run(passes)
    assert titles(outcomes) == [["prod: refused bbbbbbb"], ["prod runs 1a2b3c4 again"], ["prod: applied 1a2b3c4"]]
    resolved = outcomes[1].messages[0]
    assert resolved.severity == "success"
    assert "Resolved: refused bbbbbbb: the commit is not signed by a trusted key" in resolved.body


def test_an_unchanged_pass_is_silent_unless_it_resolves_a_problem() -> None:
    unchanged = Decision("unchanged", "prod", revision=SHA_A)
    outcomes = run([(unchanged, T0), (refused(), T0), (unchanged, T0), (unchanged, T0)])
    assert titles(outcomes) == [[], ["prod: refused bbbbbbb"], ["prod runs 1a2b3c4 again"], []]


def test_a_different_refusal_is_a_new_problem() -> None:
    other = refused(revision="c" * 40)
    assert titles(run([(refused(), T0), (other, T0)])) == [["prod: refused bbbbbbb"], ["prod: refused ccccccc"]]


def test_a_stale_source_ends_when_a_pass_gets_past_the_fetch() -> None:
    stale = Decision("stale", "prod", revision=SHA_A, reason="git fetch timed out", code="FetchFailed")
    outcomes = run([(stale, T0), (stale, T0), (refused(), T0)])
    assert titles(outcomes) == [
        ["prod: cannot reach its source"],
        [],
        ["prod reaches its source again", "prod: refused bbbbbbb"],
    ]


@pytest.mark.parametrize(
    ("kind", "severity"),
    [
        ("applied", "success"),
        ("refused", "failure"),
        ("rolled_back", "failure"),
        ("failed", "failure"),
        ("recovered", "warning"),
        ("drift_repaired", "warning"),
        ("stale", "warning"),
        ("suspended", "info"),
        ("resumed", "info"),
    ],
)
def test_the_apprise_type_says_how_bad_it_is(kind: str, severity: str) -> None:
    (outcome,) = run([(Decision(kind, "dev", revision=SHA_A), T0)])  # type: ignore[arg-type]
    assert [m.severity for m in outcome.messages] == [severity]


def test_kinds_left_out_of_notify_events_are_not_told() -> None:
    policy = Policy(events=frozenset({"rolled_back"}), repeat=3600)
    assert titles(run([(applied(), T0), (refused(), T0)], policy)) == [[], []]


def test_a_rollback_carries_the_last_lines_of_the_failed_container_log() -> None:
    log = "\n".join(f"line {i}" for i in range(100))
    decision = Decision("rolled_back", "prod", revision=SHA_B, reason="not healthy within 60 s", log=log)
    (outcome,) = run([(decision, T0)])
    body = outcome.messages[0].body
    assert "line 99" in body
    assert "line 79" not in body
    assert "Reason: not healthy within 60 s" in body


def test_terminal_escapes_in_a_container_log_reach_the_message_escaped() -> None:
    log = "starting\n\x1b]0;pwned\x07\x1b[31mred\x00"
    decision = Decision("rolled_back", "prod", revision=SHA_B, reason="crashed \x1b[2J", log=log)
    (outcome,) = run([(decision, T0)])
    body = outcome.messages[0].body
    assert "\\x1b]0;pwned\\x07\\x1b[31mred\\x00" in body
    assert "Reason: crashed \\x1b[2J" in body
    assert not any(ord(c) < 0x20 and c != "\n" for c in body)


def test_a_log_excerpt_is_bounded_however_long_its_lines() -> None:
    text = excerpt("x" * 100_000 + "\n" + "y" * 100_000)
    assert len(text) <= LOG_CHARS


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        ("progressing", "pending"),
        ("applied", "success"),
        ("unchanged", "success"),
        ("refused", "failure"),
        ("rolled_back", "failure"),
        ("failed", "error"),
    ],
)
def test_commit_status_states_follow_the_decision(kind: str, state: str) -> None:
    (outcome,) = run([(Decision(kind, "prod", revision=SHA_B, reason="r"), T0)])  # type: ignore[arg-type]
    assert [(s.sha, s.state, s.context) for s in outcome.statuses] == [(SHA_B, state, "dreichor/prod")]


def test_a_commit_status_is_posted_once_per_revision_and_state() -> None:
    outcomes = run([(refused(), T0), (refused(), T0), (applied(SHA_B), T0)])
    assert [[s.state for s in o.statuses] for o in outcomes] == [["failure"], [], ["success"]]


def test_a_commit_status_description_fits_githubs_140_characters() -> None:
    (outcome,) = run([(refused(reason="a very long reason " * 40), T0)])
    (status,) = outcome.statuses
    assert isinstance(status, CommitStatus)
    assert len(status.description) <= 140
    assert status.description.startswith("prod refused: a very long reason")


def test_no_commit_status_without_github_or_without_a_full_sha() -> None:
    no_github = Policy(events=POLICY.events, repeat=3600, statuses=False)
    assert run([(applied(), T0)], no_github)[0].statuses == ()
    assert run([(applied("main"), T0)])[0].statuses == ()


def test_the_memory_survives_a_round_trip_through_json() -> None:
    (outcome,) = run([(refused(), T0)])
    again = Memory.model_validate_json(outcome.memory.model_dump_json())
    assert again == outcome.memory
    assert decide(again, refused(), now=T0 + timedelta(minutes=5), policy=POLICY).messages == ()


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"event": "rolled_back", "revision": SHA_B, "reason": "sick", "code": "HealthGateFailed", "log": "x"},
            Decision("rolled_back", "prod", revision=SHA_B, reason="sick", code="HealthGateFailed", log="x"),
        ),
        (
            {"event": "applied", "revision": SHA_A, "image": IMAGE, "signer": "s", "log": None, "prev": "0"},
            Decision("applied", "prod", revision=SHA_A, image=IMAGE, signer="s"),
        ),
        (
            {"event": "applied", "revision": SHA_A, "signer": "s", "image_signer": "SHA256:k"},
            Decision("applied", "prod", revision=SHA_A, signer="s", image_signer="SHA256:k"),
        ),
        ({"event": "suspended", "reason": "by hand"}, Decision("suspended", "prod", reason="by hand")),
        ({"event": "rollback", "snapshot": "s1"}, None),
        ({"event": "rewrite_allowed", "revision": SHA_A}, None),
    ],
)
def test_an_audit_event_becomes_the_decision_it_stands_for(event: dict[str, object], expected: Decision) -> None:
    assert decision_from_event("prod", event) == expected
