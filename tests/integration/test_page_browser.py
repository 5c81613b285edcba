"""The status page in a real browser: headless Debian Chromium against a server on 127.0.0.1.

The server sends the page with its CSP (plus a ``report-uri`` back to itself,
so a blocked style, script or load would be reported) and records every
request.  A refusal reason carrying ``<img src=x onerror=…>`` must show as
text and make no request; two control pages prove the test would notice if it
did.  Then the same against a daemon that deployed with the real engine and
refused a manifest whose env key is markup: loading its page starts no process
and opens no Unix socket (an audit hook watches the API's threads), and runs
no pass.  Screenshots land in ``test-output/page/`` (or ``$DREICHOR_TEST_OUTPUT``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.api.page import render_page
from controller.daemon.scheduler import Daemon
from testbed import ControllerHost, history_events, manifest_text, page_sample, wait_for

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
    assert "OutOfSync" in dom.text and "Healthy" in dom.text
    assert "Health: the container runs and is healthy." in dom.text
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


class _Trips:
    """Every process start and Unix-socket connect made off the main thread (the API's threads)."""

    def __init__(self) -> None:
        self.armed = False
        self.seen: list[tuple[str, str]] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if not self.armed or threading.current_thread() is threading.main_thread():
            return
        if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork"):
            self.seen.append((event, repr(args)[:200]))
        elif event == "socket.connect" and isinstance(args[1], str | bytes):  # AF_UNIX: the Docker socket
            self.seen.append((event, repr(args[1])))


TRIPS = _Trips()  # audit hooks cannot be removed: one per test process, armed only around the loads


class _Requests(logging.Handler):
    """The API's access log lines: which paths the browser asked for."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def deployed(controller_host: ControllerHost, images: dict[str, str]) -> Iterator[tuple[Daemon, str]]:
    """A daemon that deployed image A with the real engine, then refused a manifest whose env key is markup."""
    daemon = Daemon(controller_host.configs["prod"])
    assert daemon.tick().result == "applied"
    bad = manifest_text("prod", images["healthy-b"], **{MARKUP_KEY: "1"})
    controller_host.repo.write("envs/prod.yaml", bad)
    controller_host.repo.commit("a key that is markup", key=controller_host.key)
    controller_host.repo.push()
    assert daemon.tick().result == "refused"
    daemon.api = daemon._start_api()
    yield daemon, f"http://{daemon.config.listen}"
    daemon.api.shutdown()
    daemon.api.server_close()
    daemon.service.close()


MARKUP_KEY = "<img src=x onerror=\"fetch('/hit')\">"


def test_a_deployed_daemon_serves_its_page_and_loading_it_runs_nothing(
    deployed: tuple[Daemon, str], controller_host: ControllerHost, images: dict[str, str], tmp_path: Path
) -> None:
    _, base = deployed
    status = controller_host.status()
    assert status.applied is not None and status.last_attempt is not None
    events_before = controller_host.audit()
    requests = _Requests()
    api_log = logging.getLogger("dreichor.api")
    api_log.addHandler(requests)
    api_log.setLevel(logging.DEBUG)
    TRIPS.armed, TRIPS.seen = True, []
    try:
        dom = _Dom(_chromium(base + "/", tmp_path, "--dump-dom"))
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "daemon.png"
        shot.unlink(missing_ok=True)
        _chromium(base + "/", tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
        history = {limit: _get_json(base + "/history" + limit) for limit in ("", "?limit=1")}
        with pytest.raises(urllib.error.HTTPError) as bad:
            _get_json(base + "/history?limit=0")
        time.sleep(0.5)  # a request the page had sent would have landed by now
    finally:
        TRIPS.armed = False
        api_log.removeHandler(requests)
    assert "OutOfSync" in dom.text and "Healthy" in dom.text
    assert status.applied.revision[:12] in dom.text
    assert status.applied.signer in dom.text
    assert f"refused Revision {status.last_attempt.revision[:12]} Reason {status.last_attempt.reason}" in dom.text
    assert MARKUP_KEY in status.last_attempt.reason and MARKUP_KEY in dom.text
    assert "What the last pass planned Action create" in dom.text
    assert "img" not in dom.tags
    assert not any("/hit" in line for line in requests.lines), requests.lines
    assert '"GET /"' in requests.lines  # the log would have shown a request for /hit
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert TRIPS.seen == []  # no git, no Docker, no process of any kind from the API's threads
    assert controller_host.audit() == events_before  # no pass ran
    assert controller_host.image() == images["healthy-a"]
    assert history[""]["chain"] == "ok"
    assert history[""]["events"] == events_before
    [last] = history["?limit=1"]["events"]
    assert last["event"] == "refused" and MARKUP_KEY in last["reason"]
    assert bad.value.code == 400


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 loopback
        return json.load(reply)


def test_the_trip_wire_sees_git_and_docker(deployed: tuple[Daemon, str]) -> None:
    daemon, _ = deployed
    seen: list[tuple[str, str]] = []

    def pass_in_a_thread() -> None:
        daemon.tick()

    daemon.service.close()  # a fresh Docker connection, not one from the pool
    TRIPS.armed, TRIPS.seen = True, seen
    try:
        worker = threading.Thread(target=pass_in_a_thread)
        worker.start()
        worker.join(timeout=120)
    finally:
        TRIPS.armed = False
    assert any(event == "subprocess.Popen" for event, _ in seen)  # git fetch
    assert any(event == "socket.connect" for event, _ in seen)  # the Docker socket


@pytest.fixture
def history_server() -> Iterator[PageServer]:
    """The page of a host with four weeks of decisions behind it, served on 127.0.0.1."""
    now = datetime.now(UTC)
    sample = page_sample(now=now)
    sample["events"] = history_events(now=now - timedelta(days=1)) + sample["events"]
    body, headers = render_page(**sample)
    state = PageServer(body, headers)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_the_last_30_days_are_drawn_without_script_and_the_figures_stand_beside_them(
    history_server: PageServer, tmp_path: Path
) -> None:
    dom = _Dom(_chromium(history_server.url + "/", tmp_path, "--dump-dom"))
    assert dom.tags.count("svg") == 1
    assert dom.tags.count("circle") == 72  # every applied change a mark
    assert (
        dom.tags.count("g") == 72 + 2 + 2 + 1 + 1
    )  # and each rollback, refusal (the sample has two), wait, suspension
    assert "Deployments 74 Change failure rate 3 % Commit to running (median) 40 min" in dom.text
    assert "Time to restore (median) 4 h" in dom.text
    assert "suspended (17c0dec0dec0) by alice" in dom.text  # the mark's title: who, on hover
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "history.png"
    shot.unlink(missing_ok=True)
    _chromium(history_server.url + "/", tmp_path, f"--screenshot={shot}", "--window-size=1280,1700")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        history_server.reports == []
    )  # the CSP blocked nothing: the picture needs no script and no style hash of its own
