"""What to tell about a decision, and when to stay quiet: pure, so it can be tested by equality.

A decision (applied, refused, rolled back, ...) becomes at most a few outgoing
items: a message for people (Apprise) and a commit status for the manifest
repository (GitHub).  The hard part is *not* telling: a refusal repeats on every
pass until someone pushes a fix, and a chat channel that hears it every minute
is muted by lunchtime.  So an unresolved problem is told once, again only after
``repeat`` seconds, and its resolution is told once.  That memory is a small
record (``Memory``) that the sender keeps in ``state/notifications.json`` so a
restart does not tell everything again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field

from controller.model.config import NotifyEvent
from controller.untrusted import bounded, bounded_lines

Severity = Literal["success", "info", "warning", "failure"]
StatusState = Literal["pending", "success", "failure", "error"]
Topic = Literal["deploy", "source"]

MAX_PROBLEMS = 20
MAX_STATUSES = 32
MAX_DESCRIPTION = 140  # GitHub's limit for a commit status description
MAX_REASON = 300
LOG_LINES = 20
LOG_LINE_CHARS = 240
LOG_CHARS = 2000
_LINK = re.compile(r"\]\s*\(")  # "[text](url)": a Markdown link (or image) that hides where it goes
_MENTION = re.compile(r"@(?=(?:everyone|here|channel|all)\b)", re.IGNORECASE)

SEVERITY: dict[str, Severity] = {
    "applied": "success",
    "unchanged": "success",
    "progressing": "info",
    "refused": "failure",
    "rolled_back": "failure",
    "failed": "failure",
    "recovered": "warning",
    "drift_repaired": "warning",
    "stale": "warning",
    "suspended": "info",
    "resumed": "info",
    "waiting_approval": "info",
    "waiting_window": "info",
}
# What the title says happened; {sha} is the short revision.
VERBS: dict[str, str] = {
    "applied": "applied {sha}",
    "unchanged": "runs {sha}",
    "progressing": "deploying {sha}",
    "refused": "refused {sha}",
    "rolled_back": "rolled back {sha}",
    "failed": "failed at {sha}",
    "recovered": "recovered after an interruption",
    "drift_repaired": "drift repaired at {sha}",
    "stale": "cannot reach its source",
    "suspended": "suspended",
    "resumed": "resumed",
    "waiting_approval": "{sha} waits for approvals",
    "waiting_window": "{sha} waits for the deploy window",
}
# Problems repeat on every pass until resolved: these are deduplicated.
PROBLEMS: dict[str, Topic] = {"refused": "deploy", "rolled_back": "deploy", "failed": "deploy", "stale": "source"}
# Which problems an event ends: the head running ends everything; any pass past the fetch ends "stale".
RESOLVES: dict[str, tuple[Topic, ...]] = {
    "applied": ("deploy", "source"),
    "unchanged": ("deploy", "source"),
    "progressing": ("source",),
    "refused": ("source",),
    "rolled_back": ("source",),
    "drift_repaired": ("source",),
    "waiting_approval": ("source",),
    "waiting_window": ("source",),
}
STATUS_STATES: dict[str, StatusState] = {
    "progressing": "pending",
    "applied": "success",
    "unchanged": "success",
    "refused": "failure",
    "rolled_back": "failure",
    "failed": "error",
    "waiting_approval": "pending",
    "waiting_window": "pending",
}
LOG_KINDS = frozenset({"rolled_back", "failed"})


@dataclass(frozen=True)
class Decision:
    """One decision of the controller, as plain data (what the audit event says, plus a log excerpt).

    ``code`` is the reason constant: two refusals worded differently but with the
    same code for the same revision are the same problem.
    """

    kind: NotifyEvent
    environment: str
    revision: str | None = None
    image: str | None = None
    signer: str | None = None
    image_signer: str | None = None  # the cosign key's fingerprint or keyless identity, when image signatures are on
    image_source: str | None = None  # "repository@ref (commit)" from the image's provenance, when required
    reason: str = ""
    code: str = ""
    log: str | None = None
    node: str | None = None  # Swarm mode: the node the runtime's task runs on after the decision
    task: str | None = None  # Swarm mode: that task's id
    approvals: str | None = None  # a held change: "1 of 2 approvals (alice)"
    missing: str | None = None  # a held change: the approvers who have not approved, comma-separated
    break_glass: str | None = None  # applied although the deploy window was closed: "by alice: why"


@dataclass(frozen=True)
class Message:
    """A message for people: Apprise title, body and notify type."""

    title: str
    body: str
    severity: Severity


@dataclass(frozen=True)
class CommitStatus:
    """A commit status for the manifest repository's commit ``sha``."""

    sha: str
    state: StatusState
    description: str
    context: str


@dataclass(frozen=True)
class Policy:
    """What the configuration asks: which kinds are told, how often a problem repeats, statuses or not."""

    events: frozenset[str]
    repeat: int
    statuses: bool = False


class Problem(BaseModel):
    """An unresolved problem that was told, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    topic: Topic
    kind: str
    revision: str | None = None
    reason: str = ""
    since: datetime
    told_at: datetime


class Memory(BaseModel):
    """What was told: open problems and the last commit status posted per revision (persisted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    problems: tuple[Problem, ...] = ()
    statuses: tuple[tuple[str, StatusState], ...] = Field(default=(), description="(sha, state), newest last.")


@dataclass(frozen=True)
class Outcome:
    """What to send for one decision, and the memory after it."""

    memory: Memory
    messages: tuple[Message, ...] = ()
    statuses: tuple[CommitStatus, ...] = ()


def decide(memory: Memory, decision: Decision, *, now: datetime, policy: Policy) -> Outcome:
    """Turn a decision into messages and commit statuses, remembering what was told."""
    memory, messages = _tell(memory, decision, now=now, policy=policy)
    memory, statuses = _post(memory, decision, policy=policy)
    return Outcome(memory=memory, messages=messages, statuses=statuses)


def _tell(memory: Memory, decision: Decision, *, now: datetime, policy: Policy) -> tuple[Memory, tuple[Message, ...]]:
    topics = RESOLVES.get(decision.kind, ())
    cleared = tuple(p for p in memory.problems if p.topic in topics)
    memory = memory.model_copy(update={"problems": tuple(p for p in memory.problems if p.topic not in topics)})
    messages: list[Message] = [resolution(decision, cleared)] if cleared else []
    merged = bool(cleared) and decision.kind in ("applied", "unchanged")
    if decision.kind not in policy.events or merged:
        return memory, tuple(messages)
    if decision.kind not in PROBLEMS:
        return memory, (*messages, compose(decision))
    key = problem_key(decision)
    known = next((p for p in memory.problems if p.key == key), None)
    if known is not None and (now - known.told_at).total_seconds() < policy.repeat:
        return memory, tuple(messages)
    problem = Problem(
        key=key,
        topic=PROBLEMS[decision.kind],
        kind=decision.kind,
        revision=decision.revision,
        reason=one_sentence(decision.reason),
        since=known.since if known else now,
        told_at=now,
    )
    others = tuple(p for p in memory.problems if p.key != key)
    memory = memory.model_copy(update={"problems": (*others, problem)[-MAX_PROBLEMS:]})
    return memory, (*messages, compose(decision, since=known.since if known else None))


def _post(memory: Memory, decision: Decision, *, policy: Policy) -> tuple[Memory, tuple[CommitStatus, ...]]:
    state = STATUS_STATES.get(decision.kind)
    sha = decision.revision
    if not policy.statuses or state is None or not sha or not is_sha(sha):
        return memory, ()
    if dict(memory.statuses).get(sha) == state:
        return memory, ()
    others = tuple(entry for entry in memory.statuses if entry[0] != sha)
    memory = memory.model_copy(update={"statuses": (*others, (sha, state))[-MAX_STATUSES:]})
    return memory, (commit_status(decision, state),)


KINDS: frozenset[str] = frozenset(get_args(NotifyEvent))


def decision_from_event(environment: str, event: Mapping[str, Any]) -> Decision | None:
    """The decision an audit event (or a pass moment the service tells its hooks) stands for; None: not told.

    The service's hooks hear ``event``, ``revision``, ``image``, ``signer``,
    ``image_signer``, ``reason``, ``code``, for a rollback ``log``, and in Swarm
    mode ``node`` and ``task``; break-glass ``rollback``
    and ``rewrite_allowed`` are audit-only.
    """
    kind = event.get("event")
    if kind not in KINDS:
        return None

    def text(name: str) -> str | None:
        value = event.get(name)
        return str(value) if value else None

    return Decision(
        kind=cast(NotifyEvent, kind),
        environment=environment,
        revision=text("revision"),
        image=text("image"),
        signer=text("signer"),
        image_signer=text("image_signer"),
        image_source=_source(event.get("image_source")),
        reason=text("reason") or "",
        code=text("code") or "",
        log=text("log"),
        node=text("node"),
        task=text("task"),
        approvals=_tally(event),
        missing=", ".join(str(p) for p in event.get("missing") or []) or None,
        break_glass=_break_glass(event.get("break_glass")),
    )


def _break_glass(value: object) -> str | None:
    """An event's ``break_glass`` (who and why the deploy window was broken) as ``by alice: why``."""
    if not isinstance(value, Mapping) or not value.get("by"):
        return None
    return f"by {value['by']}: {value.get('reason') or 'no reason given'}"


def _tally(event: Mapping[str, Any]) -> str | None:
    """``1 of 2 approvals (alice)`` from a ``waiting_approval`` event's ``have`` and ``need``."""
    if event.get("event") != "waiting_approval":
        return None
    have = [str(p) for p in event.get("have") or []]
    return f"{len(have)} of {event.get('need')} approvals" + (f" ({', '.join(have)})" if have else "")


def problem_key(decision: Decision) -> str:
    """The identity of a problem: its kind, revision and reason code (else its reason)."""
    return f"{decision.kind}|{decision.revision or '-'}|{decision.code or one_sentence(decision.reason)}"


def compose(decision: Decision, *, since: datetime | None = None) -> Message:
    """The message for one decision; ``since`` marks a problem told again."""
    verb = VERBS[decision.kind].format(sha=short(decision.revision))
    title = f"{decision.environment}: {'still ' if since else ''}{verb}"
    lines = _details(decision)
    if since is not None:
        lines.append(f"Unresolved since: {since.isoformat()}")
    if decision.log and decision.kind in LOG_KINDS:
        lines += ["", f"Log (last {LOG_LINES} lines of the failed container):", excerpt(decision.log)]
    return Message(title=title, body="\n".join(lines), severity=SEVERITY[decision.kind])


def resolution(decision: Decision, cleared: tuple[Problem, ...]) -> Message:
    """The one message that says the problems are over: "prod runs 1a2b3c4 again"."""
    if any(p.topic == "deploy" for p in cleared):
        title = f"{decision.environment} runs {short(decision.revision)} again"
    else:
        title = f"{decision.environment} reaches its source again"
    resolved = [f"Resolved: {p.kind.replace('_', ' ')} {short(p.revision)}: {inert(p.reason)}" for p in cleared[-5:]]
    return Message(title=title, body="\n".join([*_details(decision), *resolved]), severity="success")


def commit_status(decision: Decision, state: StatusState) -> CommitStatus:
    """The commit status for a decision: context ``dreichor/<env>``, description of at most 140 characters."""
    verb = VERBS[decision.kind].format(sha="").strip()
    text = f"{decision.environment} {verb}"
    if decision.approvals:  # GitHub shows it beside the pull request's checks: who signed, how many are needed
        text = decision.approvals
    elif decision.reason:
        text += f": {one_sentence(decision.reason)}"
    return CommitStatus(
        sha=decision.revision or "",
        state=state,
        description=bounded(text, limit=MAX_DESCRIPTION),
        context=f"dreichor/{decision.environment}",
    )


def _source(value: object) -> str | None:
    """``applied.image_source`` as one line: ``repository@ref (commit)``."""
    if not isinstance(value, Mapping) or not value.get("repository"):
        return None
    ref, commit = value.get("ref"), value.get("commit")
    return f"{value['repository']}" + (f"@{ref}" if ref else "") + (f" ({commit})" if commit else "")


def _details(decision: Decision) -> list[str]:
    lines = [f"Environment: {decision.environment}"]
    if decision.revision:
        lines.append(f"Revision: {short(decision.revision)} ({decision.revision})")
    if decision.image:
        lines.append(f"Digest: {digest(decision.image)}")
    if decision.signer:
        lines.append(f"Signer: {decision.signer}")
    if decision.image_signer:  # a keyless identity quotes the workflow's ref, which a pusher names
        lines.append(f"Image signer: {inert(decision.image_signer)}")
    if decision.image_source:
        lines.append(f"Built from: {inert(decision.image_source)}")
    if decision.node:
        lines.append(f"Node: {decision.node}" + (f" (task {decision.task[:12]})" if decision.task else ""))
    if decision.break_glass:  # the operator's words: shown, never a link or a mention
        lines.append(f"Break-glass (the deploy window was closed): {inert(decision.break_glass)}")
    if decision.approvals:
        lines.append(f"Approvals: {decision.approvals}" + (f"; missing {decision.missing}" if decision.missing else ""))
    if decision.reason:
        lines.append(f"Reason: {inert(one_sentence(decision.reason))}")
    return lines


def short(revision: str | None) -> str:
    """A revision as people quote it: seven characters."""
    return revision[:7] if revision else "(no revision)"


def is_sha(text: str) -> bool:
    """Whether ``text`` is a full git object id (SHA-1 or SHA-256)."""
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def digest(image: str) -> str:
    """The digest of a pinned image reference (``repo@sha256:...``), else the reference."""
    return image.rpartition("@")[2] if "@" in image else image


def one_sentence(reason: str) -> str:
    """The reason's first line, bounded: a message is not the place for a stack of errors."""
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    return bounded(first, limit=MAX_REASON)


def excerpt(log: str) -> str:
    """The last lines of a container log, each line bounded and escaped, and the whole bounded."""
    text = inert(bounded_lines(log.rstrip(), lines=LOG_LINES, width=LOG_LINE_CHARS))
    return text if len(text) <= LOG_CHARS else "…" + text[-(LOG_CHARS - 1) :]


def inert(text: str) -> str:
    """Untrusted text that stays text where a target renders Markdown though Apprise sends it as plain text.

    Apprise escapes text for targets that declare markup (e-mail HTML, Slack, Markdown targets), but
    some chats declare plain text and still render Markdown links and mentions (Mattermost, Rocket.Chat):
    "[text](url)" loses its link, "@channel" its ping, and both still read the same to a person.
    """
    return _MENTION.sub("@\u200b", _LINK.sub("] (", text))
