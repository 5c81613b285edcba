"""Printing for people and scripts: the status, what a plan learned, ages, a desired container, JSON, stderr."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from controller.cli.exits import EXIT_OK, EXIT_OUT_OF_SYNC, EXIT_UNHEALTHY, STATUS_SILENT_INTERVALS

if TYPE_CHECKING:  # types only: printing a status must not load the service and the pass behind it
    from controller.service import HostStatus, PlanAnswer, Snapshot, Status

LOG_LINES = 5  # the rollback log's first lines in ``status``


def print_learned(answer: PlanAnswer) -> None:
    """The steps a plan got through: fetched, verified, validated."""
    from controller.model.manifest import manifest_path

    if answer.head:
        print(f"fetched:   {answer.branch} at {answer.head[:12]}")
    if answer.signer:
        print(f"verified:  signed by {answer.signer}")
    if answer.image:
        print(
            f"valid:     {manifest_path(answer.environment)} runs {answer.image}"
            + (f" (tag {answer.tag})" if answer.tag else "")
        )


def check_code(status: Status, *, now: datetime, interval: int, pass_may_take: int = 0) -> int:
    """``status --check``: a status no controller is writing (4, unknown), a down container (4), a held change (3)."""
    silent = now - status.updated_at
    # A pass in flight writes nothing while its health gate waits: that long is no silence.
    if silent.total_seconds() > STATUS_SILENT_INTERVALS * interval + pass_may_take:
        fail(f"unknown: no controller has written the status for {int(silent.total_seconds() // 60)} min")
        return EXIT_UNHEALTHY
    if status.health != "Healthy":
        return EXIT_UNHEALTHY
    return EXIT_OK if status.synced().state == "InSync" else EXIT_OUT_OF_SYNC


def status_lines(status: Status, *, now: datetime, colour: bool = False) -> list[str]:
    """The status for people, within 80 columns: sync and health first, then what runs, what was decided
    last, what holds it, and where it comes from; ``colour`` paints sync and health (a terminal only)."""
    applied, attempt, source, container = status.applied, status.last_attempt, status.source, status.container
    version, sync = applied.version() if applied else "-", status.synced()
    paint = _painter(colour)
    lines = [
        f"{status.environment}   sync: {paint(sync.state)}   health: {paint(status.health or 'Unknown')}   "
        f"version: {version}",
    ]
    if sync.state != "InSync":
        lines += field("why:", sync.reason or "")
    if status.window is not None:
        window = status.window.reason if status.window.open else f"closed, {status.window.reason}"
        lines += field("window:", window)
    lines += field("container:", f"{container.name} {container.state} (health {container.health})")
    if container.task:  # Swarm mode: the service's running task
        lines += field("task:", f"{container.task} on node {container.node}")
    if applied:
        lines += field("applied:", f"{version} ({applied.revision[:12] or '-'}), {age(applied.applied_at, now)}")
        lines += field("image:", _short_image(applied.image))
        lines += field("signed by:", applied.signer)
        if applied.image_signer:
            lines += field("image by:", applied.image_signer)
        if applied.break_glass:
            lines += field("break-glass:", f"by {applied.break_glass.by}: {applied.break_glass.reason}")
    lines += _last_decision(status, now=now)
    if status.quarantined:
        lines += field("quarantine:", status.quarantine_text() or "")
    if status.suspension:
        suspension = status.suspension
        lines += field("suspended:", f"by {suspension.by}, {age(suspension.at, now)}: {suspension.reason}")
    if status.approvals is not None:
        held = status.approvals
        missing = f", missing {', '.join(held.missing)}" if held.missing else ""
        lines += field(
            "approvals:", f"{len(held.have)} of {held.need}: {', '.join(held.have) or 'no one yet'}{missing}"
        )
    stale = ", STALE" if source.stale else ""
    fetched = age(source.fetched_at, now) if source.fetched_at else "never"
    lines += field("source:", f"{source.branch} head {(source.head or '-')[:12]}, fetched {fetched}{stale}")
    lines += field("", source.url)
    if source.last_error:
        lines += field("fetch error:", source.last_error)
    if attempt and attempt.logs:
        logs = attempt.logs.splitlines()
        lines.append(f"container log before the rollback (first {min(len(logs), LOG_LINES)} of {len(logs)} lines):")
        lines += [f"  | {line}"[:WIDTH] for line in logs[:LOG_LINES]]
    lines += field("updated:", f"{ago(status.updated_at, now)}, phase {status.phase}")
    return lines


def _last_decision(status: Status, *, now: datetime) -> list[str]:
    """``last:`` the last decision: the last attempt, or — when the passes since found nothing to do —
    the change that was applied, with its age."""
    attempt, applied = status.last_attempt, status.applied
    if attempt is None:
        return []
    if attempt.result == "unchanged" and applied is not None:
        return field("last:", f"applied {applied.version()} ({applied.revision[:12]}), {age(applied.applied_at, now)}")
    code = f" [{attempt.code}]" if attempt.code else ""
    said = f"{attempt.result}{code} ({(attempt.revision or '-')[:12]}), {age(attempt.at, now)}: {attempt.reason}"
    return field("last:", said)


LABEL = 13  # the glance's label column: "fetch error: " is the longest
WIDTH = 80


def field(label: str, text: str) -> list[str]:
    """``label`` and ``text`` wrapped to 80 columns under the label column (a longer word, a URL, stays whole)."""
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=label.ljust(LABEL),
        subsequent_indent=" " * LABEL,
        break_long_words=False,
        break_on_hyphens=False,  # a URL or a path stays whole, to be copied
    ) or [label]


def _short_image(image: str) -> str:
    """A pinned reference with the digest cut to 12 hex digits, for the glance (``--json`` has it whole)."""
    name, _, digest = image.partition("@sha256:")
    return f"{name}@sha256:{digest[:12]}" if digest else image


# Tones for the terminal, by the words sync and health use (docs/design.md §16).
_TONES = {"InSync": 32, "Healthy": 32, "OutOfSync": 31, "Unhealthy": 31, "Missing": 31, "Waiting": 33}
_TONES |= {"Suspended": 33, "Unknown": 33}


def _painter(colour: bool) -> Callable[[str], str]:
    if not colour:
        return lambda word: word
    return lambda word: f"\033[1;{_TONES[word]}m{word}\033[0m" if word in _TONES else word


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (no-color.org) or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def age(moment: datetime, now: datetime) -> str:
    """'3 min ago': the age alone, for the glance."""
    return ago(moment, now).partition(" (")[0]


def ago(moment: datetime, now: datetime) -> str:
    """'3 min ago (2026-12-05 13:04:17 UTC)': the age first, for the glance, then the time to the second."""
    seconds = int((now - moment).total_seconds())
    when = f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if seconds < -5:
        return f"{when} (ahead of this host's clock)"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago ({when})"
    return f"{max(seconds, 0)} s ago ({when})"


def describe_container(view: dict[str, Any]) -> str:
    """The desired container ``validate`` prints, one setting a line."""
    lines = [
        f"  container:  {view['name']}",
        f"  image:      {view['image']}" + (f"  (tag {view['tag']})" if view["tag"] else ""),
        *(f"  mount:      {m['source']} -> {m['target']}" for m in view["mounts"]),
        *(f"  env:        {k}={v}" for k, v in view["env"].items()),
        f"  restart:    {view['restart_policy']}, init, network {view['network_mode']}, no ports",
    ]
    return "\n".join(lines)


def print_json(data: Any) -> None:
    """``--json``: one indented object, keys sorted."""
    print(json.dumps(data, indent=2, sort_keys=True))


def fail(message: str) -> None:
    """A sentence for people on stderr (a refusal, an error, a warning)."""
    print(message, file=sys.stderr)


# ``status --all``: columns that fit 80 with the reason cut to the rest.
ALL_COLUMNS = (("ENV", 6), ("SYNC", 11), ("HEALTH", 11), ("VERSION", 15))


def all_lines(rows: list[HostStatus]) -> list[str]:
    """One line per environment — sync, health, version, why — in at most 80 columns."""
    header = "".join(name.ljust(width) for name, width in ALL_COLUMNS) + "WHY"
    return [header, *(_all_line(row) for row in rows)]


def _all_line(row: HostStatus) -> str:
    cells = [row.environment, "-", "-", "-"]
    why = row.problem or ""
    if row.status is not None:
        sync = row.status.synced()
        version = row.status.applied.version() if row.status.applied else "-"
        cells = [row.environment, sync.state, row.status.health or "Unknown", version]
        why = sync.reason or ("suspended" if row.status.suspended else "")
    line = "".join(_cut(text, width - 1).ljust(width) for text, (_, width) in zip(cells, ALL_COLUMNS, strict=True))
    return line + _cut(why, WIDTH - len(line))


def all_json(rows: list[HostStatus]) -> list[dict[str, Any]]:
    """``status --all --json``: a list, one object per environment."""
    return [
        {
            "environment": row.environment,
            "sync": row.status.synced().state if row.status else None,
            "health": row.status.health if row.status else None,
            "version": row.status.applied.version() if row.status and row.status.applied else None,
            "reason": (row.status.synced().reason if row.status else row.problem) or None,
            "phase": row.status.phase if row.status else None,
        }
        for row in rows
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def image_version(image: str | None) -> str:
    """The version a pinned reference names: its tag, else ``sha256:`` and the digest's first 12 hex digits."""
    if not image:
        return "-"
    name, _, digest = image.partition("@sha256:")
    tag = name.rpartition("/")[2].partition(":")[2]
    return tag or (f"sha256:{digest[:12]}" if digest else "-")


def snapshot_lines(snapshots: list[Snapshot]) -> list[str]:
    """``history``'s snapshots, newest first, under a header: id, when, version, revision, what it held."""
    lines = ["snapshots (newest first; 'rollback ID' restores one):"]
    if not snapshots:
        return [*lines, "  none yet"]
    lines.append(f"  {'ID':<36}  {'TAKEN':<16}  {'VERSION':<19}  {'REVISION':<12}  HELD")
    for snap in snapshots:
        held = f"{snap.environment}'s container" if snap.image else "nothing: no container ran yet"
        lines.append(
            f"  {snap.id:<36}  {snap.created_at.astimezone(UTC):%Y-%m-%d %H:%M}  {image_version(snap.image):<19}  "
            f"{(snap.revision or '-')[:12]:<12}  {held}"
        )
    return lines


def audit_lines(events: list[dict[str, Any]]) -> list[str]:
    """``history``'s audit log, oldest first, under a header: when, event, who, revision, why."""
    lines = ["audit log (oldest first):", f"  {'WHEN':<19}  {'EVENT':<16}  {'WHO':<12}  {'REVISION':<12}  WHY"]
    for event in events:
        when = str(event.get("at") or "")[:19].replace("T", " ")
        who = str(event.get("by") or event.get("signer") or "-").split(" (")[0]
        revision = str(event.get("revision") or "-")[:12]
        lines.append(
            f"  {when:<19}  {event.get('event')!s:<16}  {who[:12]:<12}  {revision:<12}  {event.get('reason', '')}"
        )
    return lines
