"""The status page in a real browser: headless Debian Chromium against a server on 127.0.0.1.

The server sends the page with its CSP (plus a ``report-uri`` back to itself,
so a blocked style, script or load would be reported) and records every
request.  A refusal reason carrying ``<img src=x onerror=…>`` must show as
text and make no request; two control pages prove the test would notice if it
did.  Screenshots land in ``test-output/page/`` (or ``$DREICHOR_TEST_OUTPUT``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.page import render_page
from testbed import page_sample, wait_for

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("DREICHOR_TEST_OUTPUT") or ROOT / "test-output") / "page"
ATTACK = "env key <img src=x onerror=\"fetch('/hit')\"> is not a valid name"
RAW_ATTACK = b"<!DOCTYPE html><title>control</title><p>control</p><img src=x onerror=\"fetch('/hit')\">"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=3000",  # let load, error handlers and fetches settle before the dump
]


@dataclass
class PageServer:
    """Serves the rendered page and the control pages; remembers every request."""

    page: bytes
    headers: dict[str, str]
    requests: list[str] = field(default_factory=list)
    reports: list[bytes] = field(default_factory=list)
    url: str = ""

    def routes(self) -> dict[str, tuple[bytes, dict[str, str]]]:
        """Path → (body, headers)."""
        csp = {**self.headers, "Content-Security-Policy": self.headers["Content-Security-Policy"] + "; report-uri /csp"}
        plain = {"Content-Type": "text/html; charset=utf-8"}
        return {
            "/": (self.page, csp),
            "/no-csp": (self.page, plain),  # escaping alone must hold
            "/control": (RAW_ATTACK, plain),  # proves a hit would be seen
            "/control-csp": (RAW_ATTACK, csp),  # the CSP alone blocks it, and reports it
        }


def _handler(server: PageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append(self.path)
            body, headers = server.routes().get(self.path, (b"not found", {"Content-Type": "text/plain"}))
            self.send_response(200 if self.path in server.routes() else 404)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            server.reports.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[PageServer]:
    """The page with a refusal whose reason is markup, served on 127.0.0.1."""
    body, headers = render_page(**page_sample(now=datetime.now(UTC), reason=ATTACK))
    state = PageServer(body, headers)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _chromium(url: str, tmp_path: Path, *extra: str) -> str:
    """Run headless Chromium once with a fresh profile; its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run ./scripts/setup as root", pytrace=False)
    profile = Path(tmp_path) / f"profile-{time.monotonic_ns()}"
    result = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class _Dom(HTMLParser):
    """Elements, attributes and text of a dumped DOM."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.chunks: list[str] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        named = dict(attrs)
        if named.get("id"):
            self.attrs[str(named["id"])] = named

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        """All text, whitespace folded."""
        return " ".join(" ".join(self.chunks).split())


def test_the_page_shows_phase_revision_signer_and_the_last_refusal(server: PageServer, tmp_path: Path) -> None:
    sample = page_sample(now=datetime.now(UTC), reason=ATTACK)["status"]
    dom = _Dom(_chromium(server.url + "/", tmp_path, "--dump-dom"))
    assert "Degraded" in dom.text
    assert "The last change did not go through" in dom.text
    assert sample["applied"]["revision"][:12] in dom.text
    assert sample["applied"]["signer"] in dom.text
    assert f"refused Revision {sample['last_attempt']['revision'][:12]} Reason {ATTACK}" in dom.text
    assert "hidden" not in dom.attrs["refresh"]  # the page's own script ran: its hash is in the CSP
    assert server.reports == []  # nothing on the page was blocked: the style's hash holds too


@pytest.mark.parametrize(
    ("path", "runs", "reported"),
    [
        ("/", False, False),  # the page as served: escaped, and under the CSP
        ("/no-csp", False, False),  # escaping alone keeps the markup as text
        ("/control", True, False),  # unescaped, no CSP: the handler fires, and the test sees it
        ("/control-csp", False, True),  # unescaped under the CSP: blocked, and reported
    ],
)
def test_markup_in_a_refusal_is_text_and_nothing_runs(
    server: PageServer, tmp_path: Path, path: str, runs: bool, reported: bool
) -> None:
    dom = _Dom(_chromium(server.url + path, tmp_path, "--dump-dom"))
    if runs:
        wait_for(lambda: "/hit" in server.requests, timeout=10, what="the control page's onerror request")
    else:
        time.sleep(0.5)  # a request already sent would have landed by now
        assert "/hit" not in server.requests
        assert "/x" not in server.requests
    if reported:
        wait_for(lambda: bool(server.reports), timeout=10, what="a CSP violation report")
    if path in ("/", "/no-csp"):
        assert "img" not in dom.tags
        assert ATTACK in dom.text
        assert server.reports == []


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("desktop-light", ["--window-size=1280,2000"]),
        ("desktop-dark", ["--window-size=1280,2000", "--blink-settings=preferredColorScheme=0"]),
        ("phone", ["--window-size=390,1800", "--force-device-scale-factor=2"]),
    ],
)
def test_a_screenshot_is_saved_with_the_test_output(
    server: PageServer, tmp_path: Path, name: str, flags: list[str]
) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / f"{name}.png"
    shot.unlink(missing_ok=True)
    _chromium(server.url + "/", tmp_path, f"--screenshot={shot}", *flags)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert server.reports == []
