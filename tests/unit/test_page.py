"""The status page renderer: every untrusted field is shown as text, the CSP matches the page, and /history."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from controller.api import page
from testbed import page_sample

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MARKUP = "\"'><img src=x onerror=alert(1)><script>alert(2)</script>"
ROOT = Path(__file__).resolve().parents[2]


class _Tags(HTMLParser):
    """The elements and attributes a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: bytes) -> _Tags:
    parser = _Tags()
    parser.feed(html.decode())
    return parser


def _render(**overrides: Any) -> tuple[bytes, dict[str, str]]:
    return page.render_page(**{**page_sample(now=NOW), **overrides})


def _with(path: str, value: object) -> dict[str, Any]:
    """The sample's keyword arguments with one nested field (dotted path, list index as digits) replaced."""
    sample = copy.deepcopy(page_sample(now=NOW))
    *parents, last = path.split(".")
    node: Any = sample
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return sample


UNTRUSTED = [
    "status.environment",
    "status.last_attempt.reason",
    "status.last_attempt.logs",
    "status.last_attempt.revision",
    "status.applied.signer",
    "status.applied.image_signer",
    "status.applied.image",
    "status.applied.revision",
    "status.source.url",
    "status.source.branch",
    "status.source.head",
    "status.source.last_error",
    "status.container.name",
    "status.container.state",
    "status.container.health",
    "status.container.node",
    "status.container.task",
    "status.quarantined",
    "snapshots.0.id",
    "snapshots.0.reason",
    "snapshots.0.image",
    "snapshots.0.revision",
    "snapshots.0.created_at",
    "events.59.reason",
    "events.59.event",
    "events.59.revision",
    "events.58.image",
    "plan.action",
    "plan.reason",
    "plan.drift",
    "chain",
]


@pytest.mark.parametrize("field", UNTRUSTED)
def test_markup_in_an_untrusted_field_is_shown_as_text_and_builds_no_element(field: str) -> None:
    value: object = [MARKUP] if field == "plan.drift" else MARKUP
    html, _ = page.render_page(**_with(field, value))
    baseline = _parse(_render()[0])
    parsed = _parse(html)
    assert "img" not in parsed.tags
    assert parsed.tags.count("script") == baseline.tags.count("script") == 1
    assert not [name for name in parsed.attributes if name.startswith("on")]
    shown = "".join(parsed.text)
    assert MARKUP in shown or MARKUP[:12] in shown  # whole, or cut to 12 like a commit id


def test_the_sample_page_shows_what_runs_who_signed_it_and_what_was_refused() -> None:
    sample = page_sample(now=NOW)
    text = " ".join(_parse(_render()[0]).text)
    assert "OutOfSync Healthy running sha256:4b1d4b1d4b1d" in _words(text)  # the headline: sync and health apart
    assert sample["status"]["applied"]["revision"][:12] in text
    assert sample["status"]["applied"]["signer"] in text
    assert sample["status"]["applied"]["image_signer"] in text
    assert sample["status"]["last_attempt"]["reason"] in text
    assert "Quarantined" in text
    assert "Chain intact" in text


def test_in_swarm_mode_the_container_row_names_the_node_and_task() -> None:
    swarm = _with("status.container.node", "p1")
    swarm["status"]["container"]["task"] = "xkq3v0tq8h2m1bqz"
    html = page.render_page(**swarm)[0].decode()
    assert "on node <code>p1</code> (task <code>xkq3v0tq8h2m1bqz</code>)" in html
    assert "on node" not in _render()[0].decode()


def test_the_image_signer_is_shown_next_to_the_commit_signer_only_when_images_are_signed() -> None:
    signer = page_sample(now=NOW)["status"]["applied"]["image_signer"]
    html = _render()[0].decode()
    assert re.search(r"Signed by</th><td>[^<]*</td></tr>\n<tr><th scope=\"row\">Image signed by</th>", html)
    assert f"<code>{signer}</code>" in html
    unsigned, _ = page.render_page(**_with("status.applied.image_signer", None))
    assert "Image signed by" not in unsigned.decode()


def _words(text: str) -> str:
    """Text as a reader sees it: runs of white space as one space, none before punctuation."""
    return re.sub(r" ([.:,;)])", r"\1", re.sub(r"\s+", " ", text))


@pytest.mark.parametrize(("state", "tone"), [(state, tone) for state, (tone, _) in page.SYNC.items()])
def test_each_sync_state_has_a_colour_in_the_headline(state: str, tone: str) -> None:
    sample = _with("status.sync", {"state": state, "reason": "why it is so"})
    html = page.render_page(**sample)[0].decode()
    assert f'<p id="glance"><span class="badge {tone}">{state}</span>' in html
    assert "why it is so" in html


@pytest.mark.parametrize(("health", "tone"), [(health, tone) for health, (tone, _) in page.HEALTH.items()])
def test_each_health_has_a_colour_and_words_in_the_headline(health: str, tone: str) -> None:
    html = page.render_page(**_with("status.health", health))[0].decode()
    assert f'<span class="badge {tone}">{health}</span>' in html
    assert page.HEALTH[health][1] in html


def test_a_rolled_back_change_reads_out_of_sync_and_healthy_not_down() -> None:
    sample = _with("status.last_attempt.result", "rolled_back")
    sample["status"]["applied"]["tag"] = "1.4.2"
    text = _words(" ".join(_parse(page.render_page(**sample)[0]).text))
    assert "OutOfSync Healthy running 1.4.2" in text
    assert "the container runs and is healthy" in text


def test_the_quarantine_row_names_the_content_readably() -> None:
    text = _words(" ".join(_parse(_render()[0]).text))
    assert "content:5555" not in text.replace("sha256:5555", "")
    assert "the content of a71be04c9d2f (desired container sha256:5555555555555555…)" in text
    assert "'sync --force'" in text


def test_a_suspension_names_who_and_why() -> None:
    sample = _with("status.suspended", True)
    sample["status"]["suspension"] = {"by": "alice", "reason": "db migration until 15:00", "at": NOW.isoformat()}
    text = _words(" ".join(_parse(page.render_page(**sample)[0]).text))
    assert "Suspended by alice (0 s ago): db migration until 15:00." in text


def test_the_csp_allows_nothing_but_the_pages_own_style_and_script_by_hash() -> None:
    html, headers = _render()
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "unsafe" not in csp
    blocks = re.findall(r"<(style|script)>(.*?)</\1>", html.decode(), re.DOTALL)
    assert [tag for tag, _ in blocks] == ["style", "script"]
    for tag, body in blocks:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert re.search(rf"{tag}-src 'sha256-{re.escape(digest)}'(;|$)", csp)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_shows_the_last_fifty_audit_events_newest_first() -> None:
    html, _ = _render()
    rows = re.findall(r"<tr><td class=\"words\">([^<]*)</td><td class=\"nowrap\">([^<]*)</td>", html.decode())
    assert len(rows) == page.PAGE_EVENTS
    assert rows[0][1] == "refused"
    assert rows[-1][0] < rows[0][0]


def test_a_broken_chain_is_named_on_the_page() -> None:
    text = " ".join(_parse(_render(chain="audit line 7 does not follow line 6")[0]).text)
    assert "Chain broken" in text
    assert "audit line 7 does not follow line 6" in text


@pytest.mark.parametrize("status", [None, {"environment": "prod"}, {"nonsense": True}])
def test_a_missing_or_unreadable_status_renders_a_page_that_says_so(status: object) -> None:
    html, _ = _render(status=status)
    assert "No status yet" in html.decode()


def test_unreadable_audit_lines_are_shown_not_fatal() -> None:
    html, _ = _render(events=[["not", "an", "object"], 42])
    assert "unreadable" in html.decode()


def test_the_log_excerpt_keeps_the_tail_without_terminal_escapes_or_control_characters() -> None:
    logs = "\n".join(f"line {i}" for i in range(500)) + "\n\x1b[31mpanic: boom\x1b[0m\x00\x07"
    html, _ = page.render_page(**_with("status.last_attempt.logs", logs))
    excerpt = re.search(r"<pre>(.*?)</pre>", html.decode(), re.DOTALL)
    assert excerpt is not None
    assert excerpt.group(1).endswith("line 499\n\\x1b[31mpanic: boom\\x1b[0m\\x00\\x07")
    assert "line 0\n" not in excerpt.group(1)


def test_ages_are_counted_against_the_render_clock() -> None:
    html, _ = page.render_page(**_with("status.updated_at", (NOW - timedelta(hours=3)).isoformat()))
    assert "(3 h ago)" in html.decode()


@pytest.mark.parametrize(
    ("query", "limit"), [("", 100), ("limit=1", 1), ("limit=1000", 1000), ("x=1&limit=20", 20), ("limit=%2025", 25)]
)
def test_history_limit_reads_the_query(query: str, limit: int) -> None:
    assert page.history_limit(query) == limit


@pytest.mark.parametrize("query", ["limit=", "limit=0", "limit=-3", "limit=1001", "limit=ten", "limit=1e3", "limit=٣"])
def test_a_bad_history_limit_is_one_clear_sentence(query: str) -> None:
    with pytest.raises(ValueError, match=f"^{page.BAD_LIMIT}$"):
        page.history_limit(query)


def test_history_body_is_json_with_the_newest_snapshots_and_events() -> None:
    sample = page_sample(now=NOW)
    body = json.loads(page.history_body(snapshots=sample["snapshots"], events=sample["events"], chain=None, limit=5))
    assert body["chain"] == "ok"
    assert body["events"] == sample["events"][-5:]
    assert body["snapshots"] == sample["snapshots"][:5]
    broken = json.loads(page.history_body(snapshots=[], events=[], chain="audit line 2 is not valid JSON", limit=5))
    assert broken["chain"] == "broken: audit line 2 is not valid JSON"


def test_the_template_ships_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["controller.api"]
    template = (
        (ROOT / "controller" / "api" / "templates" / page.TEMPLATE).relative_to(ROOT / "controller" / "api").as_posix()
    )
    assert any(fnmatch(template, pattern) for pattern in patterns)


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(one: str, two: str) -> float:
    light, dark = sorted((_luminance(one), _luminance(two)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("scheme", [0, 1], ids=["light", "dark"])
def test_every_text_colour_meets_wcag_aa_contrast_in_both_schemes(scheme: int) -> None:
    source = (ROOT / "controller" / "api" / "templates" / page.TEMPLATE).read_text()
    block = re.findall(r":root \{(.*?)\}", source, re.DOTALL)[scheme]
    colours = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6})", block))
    pairs = [("fg", "bg"), ("muted", "bg"), ("fg", "panel")]
    pairs += [(f"{tone}-fg", f"{tone}-bg") for tone in ("ok", "busy", "bad", "hold")]
    for fore, back in pairs:
        assert _contrast(colours[fore], colours[back]) >= 4.5, (fore, back)


def test_the_image_source_is_a_link_to_the_commit_it_was_built_from() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    source = {"repository": "https://github.com/o/r", "ref": "refs/heads/main", "commit": commit}
    html = page.render_page(**_with("status.applied.image_source", source))[0].decode()
    link = f'<a href="https://github.com/o/r/commit/{commit}"><code>https://github.com/o/r</code></a>'
    assert f"Image built from</th><td>{link} <code>refs/heads/main</code> at" in html
    hostile = {"repository": "javascript:alert(1)", "ref": None, "commit": commit}
    assert (
        "<a href"
        not in page.render_page(**_with("status.applied.image_source", hostile))[0]
        .decode()
        .split("Image built from")[1]
        .split("</tr>")[0]
    )
    assert "Image built from" not in _render()[0].decode()
