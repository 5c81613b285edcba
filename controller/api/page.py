"""The status page for people (``GET /``) and the ``/history`` body (docs/design.md §11).

Everything shown is untrusted text (reasons, commit data, environment names,
container logs, signer names), so the page is rendered by Jinja2 with
autoescaping on, and served with a strict Content-Security-Policy: nothing
loads from anywhere, and the page's own inline style and script run only
because their SHA-256 hashes, computed from the template itself, are listed.
Rendering reads only the plain data it is given: loading the page never runs a
pass, a git command or a Docker call.  This is the only module importing
``jinja2``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qs

import jinja2
from pydantic import ValidationError

from controller.api.timeline import duration, figures_json, percent, timeline
from controller.service import Snapshot, Status
from controller.untrusted import bounded_lines

TEMPLATE = "page.html"
PAGE_EVENTS = 50
PAGE_SNAPSHOTS = 10
REFRESH_SECONDS = 10
HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 1000
BAD_LIMIT = f"limit must be a whole number from 1 to {HISTORY_MAX_LIMIT}"

_INLINE = re.compile(r"<(style|script)>(.*?)</\1>", re.DOTALL)

# Phase → (tone for the colour, words for people who cannot see it).
PHASES = {
    "InSync": ("ok", "The applied revision runs and is healthy."),
    "Progressing": ("busy", "A change is being applied or checked."),
    "Degraded": ("bad", "The last change did not go through, or the container is not healthy."),
    "Suspended": ("hold", "The controller applies nothing until someone resumes it."),
}
# docs/design.md §16: sync and health apart, each with a tone and words for people who cannot see the colour.
SYNC = {
    "InSync": ("ok", "the head's content runs"),
    "OutOfSync": ("bad", "the head's content does not run"),
    "Waiting": ("hold", "the head's content waits for approvals or the deploy window"),
    "Suspended": ("hold", "nothing is applied until someone resumes"),
}
HEALTH = {
    "Healthy": ("ok", "the container runs and is healthy"),
    "Unhealthy": ("bad", "the container is not healthy"),
    "Missing": ("bad", "there is no runtime container"),
    "Unknown": ("busy", "the engine cannot say how the container is"),
}
ATTEMPT_TONES = {"applied": "ok", "unchanged": "ok", "refused": "bad", "failed": "bad", "rolled_back": "bad"}


def _short(value: object) -> str:
    """A commit id shortened to 12 characters, as git and the CLI show it."""
    return str(value)[:12] if value else "-"


def _when(value: object) -> str:
    """A timestamp in UTC, to the second; text that is not one is shown as it is."""
    moment = _as_datetime(value)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if moment else str(value or "-")


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@jinja2.pass_context
def _age(context: jinja2.runtime.Context, value: object) -> str:
    """How long ago, against the render's clock (a timestamp ahead of it says so rather than lying)."""
    moment = _as_datetime(value)
    if moment is None:
        return "unknown"
    seconds = int((context["now"] - moment).total_seconds())
    if seconds < -5:
        return "ahead of this host's clock"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _excerpt(logs: str) -> str:
    """The tail of a container log, bounded and with control characters escaped (``untrusted``)."""
    return bounded_lines(logs)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("controller.api", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(short=_short, when=_when, age=_age, excerpt=_excerpt, duration=duration, percent=percent)
    return env


@cache
def inline_hashes() -> tuple[tuple[str, str], ...]:
    """``(tag, 'sha256-…')`` for each inline ``<style>`` and ``<script>`` of the template.

    The blocks must be static text: a Jinja expression inside one would change
    the rendered bytes and so the hash, and would put data where code runs.
    """
    source, _, _ = _environment().loader.get_source(_environment(), TEMPLATE)  # type: ignore[union-attr]
    hashes = []
    for tag, body in _INLINE.findall(source):
        if "{{" in body or "{%" in body:
            raise ValueError(f"the template's inline <{tag}> must be static text")
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes.append((tag, f"sha256-{digest}"))
    return tuple(hashes)


def content_security_policy() -> str:
    """Nothing from anywhere; only the template's own style and script, by hash; no framing, no forms."""
    sources = {tag: " ".join(f"'{h}'" for t, h in inline_hashes() if t == tag) for tag in ("style", "script")}
    return (
        f"default-src 'none'; style-src {sources['style']}; script-src {sources['script']}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def page_headers() -> dict[str, str]:
    """The headers the page must be served with (the CSP is what makes the inline blocks safe)."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _status(status: Status | Mapping[str, Any] | None) -> Status | None:
    """The status as a model; a dict that is not a valid status is shown as no status, never an error."""
    if status is None or isinstance(status, Status):
        return status
    try:
        return Status.model_validate(status)
    except ValidationError:
        return None


def _event_row(event: object) -> dict[str, str]:
    """One audit line for the table: the reason when it has one, else its other fields."""
    if not isinstance(event, Mapping):
        return {"at": "", "event": "unreadable", "who": "", "revision": "", "details": str(event)}
    details = event.get("reason")
    if details is None:
        skip = {"at", "event", "revision", "prev", "by"}
        details = "; ".join(f"{key}: {value}" for key, value in event.items() if key not in skip)
    return {
        "at": _when(event.get("at")),
        "event": str(event.get("event", "")).replace("_", " "),
        "who": str(event.get("by") or event.get("signer") or ""),  # who acted, else who signed what was applied
        "revision": str(event.get("revision") or ""),
        "details": str(details),
    }


def render_page(
    status: Status | Mapping[str, Any] | None,
    *,
    snapshots: Sequence[Mapping[str, Any]],
    events: Sequence[object],
    chain: str | None,
    plan: Mapping[str, Any] | None,
    now: datetime,
) -> tuple[bytes, dict[str, str]]:
    """The page's bytes and headers, from what the daemon already holds.

    ``snapshots`` are ``snapshot_summary`` dicts, newest first; ``events`` the
    audit lines oldest first, as ``read_events`` returns them (the page shows
    the last 50, newest first); ``chain`` is ``verify_chain``'s verdict (None:
    intact); ``plan`` the last pass's plan as a dict (action, reason, drift).
    """
    model = _status(status)
    tone, words = PHASES[model.phase] if model else ("busy", "")
    environment = model.environment if model else "unknown environment"
    glance = _glance(model) if model else None
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=f"Dreichor · {environment}" + (f" · {glance['sync']} · {glance['health']}" if glance else ""),
            status=model,
            phase={"tone": tone, "words": words},
            glance=glance,
            attempt_tone=ATTEMPT_TONES.get(model.last_attempt.result, "busy") if model and model.last_attempt else "",
            snapshots=[dict(s) for s in snapshots[:PAGE_SNAPSHOTS]],
            events=[_event_row(e) for e in reversed(events[-PAGE_EVENTS:])],
            chain=chain,
            plan=plan,
            history=timeline(events, now=now if now.tzinfo else now.replace(tzinfo=UTC)),
            now=now if now.tzinfo else now.replace(tzinfo=UTC),
            refresh_seconds=REFRESH_SECONDS,
        )
    )
    return html.encode(), page_headers()


def _glance(status: Status) -> dict[str, str]:
    """The headline: sync and health apart, their tones and words, and the running version."""
    sync = status.sync.state if status.sync else "OutOfSync"
    health = status.health or "Unknown"
    return {
        "sync": sync,
        "sync_tone": SYNC[sync][0],
        "sync_words": status.sync.reason if status.sync and status.sync.reason else SYNC[sync][1],
        "health": health,
        "health_tone": HEALTH[health][0],
        "health_words": HEALTH[health][1],
        "version": status.applied.version() if status.applied else "",
    }


def snapshot_summary(snapshot: Snapshot) -> dict[str, Any]:
    """What the page and ``/history`` show of a snapshot (not the full inspect it keeps)."""
    return {
        "id": snapshot.id,
        "created_at": snapshot.created_at.isoformat(),
        "revision": snapshot.revision,
        "image": snapshot.image,
        "reason": snapshot.reason,
    }


def history_limit(query: str) -> int:
    """The ``?limit=`` of a ``/history`` request (default 100); ``ValueError(BAD_LIMIT)`` otherwise."""
    values = parse_qs(query, keep_blank_values=True).get("limit")
    if not values:
        return HISTORY_DEFAULT_LIMIT
    text = values[-1].strip()
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= HISTORY_MAX_LIMIT:
        raise ValueError(BAD_LIMIT)
    return int(text)


def history_body(
    *,
    snapshots: Sequence[Mapping[str, Any]],
    events: Sequence[object],
    chain: str | None,
    limit: int,
    now: datetime | None = None,
) -> bytes:
    """``/history``: the newest ``limit`` snapshots (newest first) and audit events (oldest first, as the log),
    and the page's figures over the last 30 days of the whole log (``controller.api.timeline``)."""
    body = {
        "snapshots": [dict(s) for s in snapshots[:limit]],
        "events": list(events[-limit:]),
        "chain": f"broken: {chain}" if chain else "ok",
        "figures": figures_json(events, now=now or datetime.now(UTC)),
    }
    return json.dumps(body, default=str).encode()
