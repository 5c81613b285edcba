"""Printing for people and scripts: the status, what a plan learned, ages, a desired container, JSON, stderr."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from controller.cli.exits import EXIT_OK, EXIT_OUT_OF_SYNC, EXIT_UNHEALTHY
from controller.model.manifest import manifest_path
from controller.service import HostStatus, PlanAnswer, Snapshot, Status

LOG_LINES = 5  # the rollback log's first lines in ``status``


def print_learned(answer: PlanAnswer) -> None:
    """The steps a plan got through: fetched, verified, validated."""
    if answer.head:
        print(f"fetched:   {answer.branch} at {answer.head[:12]}")
    if answer.signer:
        print(f"verified:  signed by {answer.signer}")
    if answer.image:
        print(
            f"valid:     {manifest_path(answer.environment)} runs {answer.image}"
            + (f" (tag {answer.tag})" if answer.tag else "")
        )


def check_code(status: Status) -> int:
    """``status --check``: a down container (4) outranks a held change (3)."""
    if status.health != "Healthy":
        return EXIT_UNHEALTHY
    return EXIT_OK if status.synced().state == "InSync" else EXIT_OUT_OF_SYNC


def status_lines(status: Status, *, now: datetime) -> list[str]:
    """The status for people: sync and health first, then what runs, what was tried, and what holds it."""
    applied, attempt, source, container = status.applied, status.last_attempt, status.source, status.container
    version, sync = applied.version() if applied else "-", status.synced()
    lines = [
        f"environment: {status.environment}   sync: {sync.state}   health: {status.health}   "
        f"version: {version}   phase: {status.phase}",
    ]
    if sync.state != "InSync":
        lines.append(f"why:         {sync.reason}")
    lines.append(f"container:   {container.name} {container.state} (health {container.health})")
    if container.task:  # Swarm mode: the service's running task
        lines.append(f"task:        {container.task} on node {container.node}")
    if applied:
        lines.append(f"applied:     {applied.revision[:12] or '-'} {applied.image}, {ago(applied.applied_at, now)}")
        lines.append(f"signed by:   {applied.signer}")
        if applied.image_signer:
            lines.append(f"image by:    {applied.image_signer}")
    if attempt:
        code = f" [{attempt.code}]" if attempt.code else ""
        lines.append(
            f"last:        {attempt.result}{code}: {attempt.reason} ({(attempt.revision or '-')[:12]}, "
            f"{ago(attempt.at, now)})"
        )
    if status.quarantined:
        lines.append(f"quarantine:  {status.quarantine_text()}")
    if status.suspension:
        lines.append(
            f"suspended:   by {status.suspension.by}, {ago(status.suspension.at, now)}: {status.suspension.reason}"
        )
    if status.approvals is not None:
        held = status.approvals
        lines.append(f"approvals:   have {', '.join(held.have) or '-'}, missing {', '.join(held.missing) or '-'}")
    stale = "   STALE" if source.stale else ""
    fetched = ago(source.fetched_at, now) if source.fetched_at else "never"
    lines.append(
        f"source:      {source.url} {source.branch} head {(source.head or '-')[:12]}, fetched {fetched}{stale}"
    )
    if source.last_error:
        lines.append(f"fetch error: {source.last_error}")
    if attempt and attempt.logs:
        logs = attempt.logs.splitlines()
        lines.append(f"container log before the rollback (first {min(len(logs), LOG_LINES)} of {len(logs)} lines):")
        lines += [f"  | {line}" for line in logs[:LOG_LINES]]
    lines.append(f"updated:     {ago(status.updated_at, now)}")
    return lines


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
WIDTH = 80


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
