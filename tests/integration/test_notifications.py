"""Notifications against real receivers on 127.0.0.1: Apprise json:// and form://, a GitHub-shaped statuses API.

No Docker needed: the receivers are small HTTP servers in this process that
record what arrives.  A dead receiver is a closed port; a slow one holds every
request until the test releases it.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from apprise.plugins import slack as apprise_slack

from controller.errors import ConfigError
from controller.model.config import DEFAULT_NOTIFY_EVENTS, parse_config
from controller.notifications.announcements import Decision, Policy
from controller.notifications.sender import AppriseTarget, GithubTarget, Notifier
from testbed import NotificationReceiver, wait_for

SHA = "1a2b3c4" + "d" * 33
IMAGE = "ghcr.io/ceerkle/dreichor-trading/runtime@sha256:" + "e" * 64
TOKEN = "ghp_testtoken"
POLICY = Policy(events=frozenset(DEFAULT_NOTIFY_EVENTS), repeat=3600, statuses=True)


@pytest.fixture
def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def github_config(port: int) -> object:
    raw = {
        "environment": "prod",
        "source": {"url": "file:///srv/manifests.git"},
        "trust": {"allowed_signers": "trust/allowed_signers"},
        "github": {"repository": "ceerkle/dreichor-deployments", "api_url": f"http://127.0.0.1:{port}"},
    }
    return parse_config(raw, base=Path("/")).github


def notifier(*targets: AppriseTarget, github: GithubTarget | None = None, **kwargs: object) -> Notifier:
    options: dict[str, object] = {"policy": POLICY, "backoff": 0.01, **kwargs}
    return Notifier(environment="prod", targets=targets, github=github, **options)  # type: ignore[arg-type]


def rolled_back() -> Decision:
    log = "\n".join(f"boot step {i}" for i in range(50)) + "\nFATAL: DATABASE_URL unreachable"
    return Decision(
        "rolled_back", "prod", revision=SHA, image=IMAGE, signer="deploy@example", reason="not healthy", log=log
    )


def test_a_json_receiver_gets_title_body_and_type(receiver: NotificationReceiver) -> None:
    n = notifier(AppriseTarget(f"json://127.0.0.1:{receiver.port}/hook", label="notify.urls[0]"))
    n.notify(rolled_back())
    assert n.drain(10)
    (request,) = receiver.requests
    payload = json.loads(request.body)
    assert (request.method, request.path) == ("POST", "/hook")
    assert payload["title"] == "prod: rolled back 1a2b3c4"
    assert payload["type"] == "failure"
    assert "Signer: deploy@example" in payload["message"]
    assert "FATAL: DATABASE_URL unreachable" in payload["message"]
    assert "boot step 0\n" not in payload["message"]
    assert n.failed == 0


def test_a_form_receiver_gets_the_same_fields(receiver: NotificationReceiver) -> None:
    n = notifier(AppriseTarget(f"form://127.0.0.1:{receiver.port}/form", label="notify.urls[0]"))
    n.notify(Decision("applied", "prod", revision=SHA, image=IMAGE, signer="deploy@example"))
    assert n.drain(10)
    (request,) = receiver.requests
    fields = dict(urllib.parse.parse_qsl(request.body.decode()))
    assert fields["title"] == "prod: applied 1a2b3c4"
    assert fields["type"] == "success"
    assert f"sha256:{'e' * 64}" in fields["message"]


def test_a_commit_status_is_posted_as_githubs_api_documents_it(receiver: NotificationReceiver) -> None:
    receiver.status = 201
    github = GithubTarget(github_config(receiver.port), token=TOKEN)  # type: ignore[arg-type]
    n = notifier(github=github)
    n.notify(Decision("refused", "prod", revision=SHA, reason="the commit is not signed " + "x" * 300))
    assert n.drain(10)
    (request,) = receiver.requests
    assert (request.method, request.path) == ("POST", f"/repos/ceerkle/dreichor-deployments/statuses/{SHA}")
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    body = json.loads(request.body)
    assert set(body) == {"state", "description", "context"}
    assert (body["state"], body["context"]) == ("failure", "dreichor/prod")
    assert len(body["description"]) <= 140


def test_github_refusing_a_status_is_not_retried_and_is_counted(receiver: NotificationReceiver) -> None:
    receiver.status = 422
    n = notifier(github=GithubTarget(github_config(receiver.port), token=TOKEN))  # type: ignore[arg-type]
    n.notify(Decision("applied", "prod", revision=SHA))
    assert n.drain(10)
    assert (len(receiver.requests), n.failed) == (1, 1)


def test_a_server_error_is_retried_then_counted(receiver: NotificationReceiver) -> None:
    receiver.status = 500
    counted: list[int] = []
    n = notifier(
        AppriseTarget(f"json://127.0.0.1:{receiver.port}/", label="notify.urls[0]"),
        on_failure=lambda: counted.append(1),
    )
    n.notify(Decision("suspended", "prod"))
    assert n.drain(10)
    assert (len(receiver.requests), n.failed, len(counted)) == (3, 1, 1)


def test_a_dead_receiver_is_counted_and_logged_at_warning(dead_port: int, caplog: pytest.LogCaptureFixture) -> None:
    n = notifier(AppriseTarget(f"json://127.0.0.1:{dead_port}/", label="notify.urls[0]"))
    with caplog.at_level(logging.WARNING, logger="controller.notifications.sender"):
        n.notify(Decision("suspended", "prod"))
        assert n.drain(30)
    assert n.failed == 1
    assert any("notify.urls[0]" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_slow_receiver_never_holds_up_notify(receiver: NotificationReceiver) -> None:
    receiver.hold = threading.Event()
    n = notifier(AppriseTarget(f"json://127.0.0.1:{receiver.port}/", label="notify.urls[0]"), queue_size=2)
    for i in range(20):
        n.notify(Decision("suspended" if i % 2 else "resumed", "prod"))
    # Every call returned while the receiver still holds the first request, unanswered and not yet retried.
    assert receiver.arrived.wait(10)
    assert (len(receiver.requests), receiver.answered) == (1, 0)
    assert n.failed >= 20 - 1 - 2  # beyond the one in flight and the two queued, deliveries are dropped
    assert not n.drain(0.2)  # drain is bounded even when the receiver never answers
    receiver.hold.set()
    assert n.drain(30)


def test_a_dead_receiver_never_holds_up_notify_either(dead_port: int) -> None:
    n = notifier(AppriseTarget(f"json://127.0.0.1:{dead_port}/", label="notify.urls[0]"), queue_size=2)
    for i in range(20):
        n.notify(Decision("suspended" if i % 2 else "resumed", "prod"))
    assert n.drain(30)
    assert n.failed == 20


def test_send_test_says_which_targets_answered(receiver: NotificationReceiver, dead_port: int) -> None:
    n = notifier(
        AppriseTarget(f"json://127.0.0.1:{receiver.port}/", label="notify.urls[0]"),
        AppriseTarget(f"json://127.0.0.1:{dead_port}/", label="notify.urls[1]"),
        github=GithubTarget(github_config(receiver.port), token=TOKEN),  # type: ignore[arg-type]
    )
    answers = n.send_test()
    assert [(a.target.split()[0], a.answered) for a in answers] == [
        ("notify.urls[0]", True),
        ("notify.urls[1]", False),
        ("github", True),
    ]
    assert [(r.method, r.path) for r in receiver.requests][1] == ("GET", "/repos/ceerkle/dreichor-deployments")


def test_what_was_told_survives_a_restart(receiver: NotificationReceiver, tmp_path: Path) -> None:
    state = tmp_path / "notifications.json"
    url = f"json://127.0.0.1:{receiver.port}/"
    refusal = Decision("refused", "prod", revision="b" * 40, reason="unsigned", code="Unsigned")
    first = notifier(AppriseTarget(url, label="notify.urls[0]"), state_file=state)
    first.notify(refusal)
    assert first.close(10)
    second = notifier(AppriseTarget(url, label="notify.urls[0]"), state_file=state)
    second.notify(refusal)
    second.notify(Decision("applied", "prod", revision=SHA))
    assert second.close(10)
    assert [json.loads(r.body)["title"] for r in receiver.requests] == [
        "prod: refused bbbbbbb",
        "prod runs 1a2b3c4 again",
    ]


def test_a_corrupt_state_file_starts_afresh(receiver: NotificationReceiver, tmp_path: Path) -> None:
    state = tmp_path / "notifications.json"
    state.write_text("{not json")
    n = notifier(AppriseTarget(f"json://127.0.0.1:{receiver.port}/", label="notify.urls[0]"), state_file=state)
    n.notify(Decision("refused", "prod", revision=SHA, reason="unsigned"))
    assert n.close(10)
    assert len(receiver.requests) == 1
    assert json.loads(state.read_text())["problems"][0]["kind"] == "refused"


def test_from_config_fills_urls_from_dotenv_and_reaches_both_targets(
    receiver: NotificationReceiver, tmp_path: Path
) -> None:
    receiver.status = 201
    raw = {
        "environment": "dev",
        "root": str(tmp_path),
        "source": {"url": "file:///srv/manifests.git"},
        "trust": {"allowed_signers": "trust/allowed_signers"},
        "notify": {"urls": ["json://127.0.0.1:${HOOK_PORT}/${HOOK_PATH}"], "events": ["applied"]},
        "github": {"repository": "ceerkle/dreichor-deployments", "api_url": f"http://127.0.0.1:{receiver.port}"},
    }
    (tmp_path / "dev" / "deploy-agent" / "state").mkdir(parents=True)
    config = parse_config(raw, base=tmp_path)
    dotenv = {"HOOK_PORT": str(receiver.port), "HOOK_PATH": "secret-path", "GITHUB_TOKEN": TOKEN}
    n = Notifier.from_config(config, dotenv=dotenv, clock=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    n.notify(Decision("applied", "dev", revision=SHA, image=IMAGE))
    assert n.close(10)
    assert sorted((r.method, r.path) for r in receiver.requests) == [
        ("POST", "/repos/ceerkle/dreichor-deployments/statuses/" + SHA),
        ("POST", "/secret-path"),
    ]
    assert "secret-path" not in n.targets[0].name
    assert config.paths.notifications.exists()


def test_a_url_naming_a_missing_dotenv_value_is_a_one_sentence_config_error(tmp_path: Path) -> None:
    raw = {
        "environment": "dev",
        "root": str(tmp_path),
        "source": {"url": "file:///srv/manifests.git"},
        "trust": {"allowed_signers": "trust/allowed_signers"},
        "notify": {"urls": ["ntfys://ntfy.example/${NTFY_TOPIC}"]},
    }
    with pytest.raises(ConfigError, match=r"notify.urls\[0\] names \$\{NTFY_TOPIC\}, which the .env file"):
        Notifier.from_config(parse_config(raw, base=tmp_path), dotenv={})


# -- untrusted text reaches every target as text (issue 21, 2) -----------------------------------

HOSTILE = (
    '<a href="http://evil.example/">click</a> <!channel> <http://evil.example|click> [click](http://evil.example/)'
    " @channel"
)


def hostile_refusal() -> Decision:
    """A refusal whose reason carries markup, as a pusher without a trusted key can write it."""
    return Decision("refused", "prod", revision=SHA, reason=f"signature namespace {HOSTILE} is not git")


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for Apprise's e-mail target: records each message's DATA."""

    def handle(self) -> None:
        self.wfile.write(b"220 localhost ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-localhost\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b"".join(iter(self.rfile.readline, b".\r\n"))
                self.server.messages.append(data)  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("form", ["", "&format=html"])
def test_an_email_shows_untrusted_markup_as_text_never_as_a_live_link(
    smtp: socketserver.ThreadingTCPServer, form: str
) -> None:
    port = smtp.server_address[1]
    url = f"mailto://127.0.0.1:{port}?mode=insecure&from=bot@dreichor.test&to=ops@dreichor.test{form}"
    n = notifier(AppriseTarget(url, label="notify.urls[0]"))
    n.notify(hostile_refusal())
    assert n.drain(20) and n.failed == 0
    (raw,) = smtp.messages  # type: ignore[attr-defined]
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    for part in mail.walk():
        if part.get_content_maintype() != "text":
            continue
        text = part.get_content()
        if part.get_content_subtype() == "html":
            assert "<a href" not in text and "&lt;a" in text
        else:
            assert '<a href="http://evil.example/">click</a>' in text  # shown as it was written


def test_slack_gets_untrusted_text_escaped_with_no_mention_and_no_link(
    receiver: NotificationReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apprise_slack.NotifySlack, "webhook_url", f"http://127.0.0.1:{receiver.port}/services")
    n = notifier(AppriseTarget("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", label="notify.urls[0]"))
    n.notify(hostile_refusal())
    n.drain(20)  # the receiver answers "{}", not Slack's "ok": Apprise retries, what it sent is the same
    sent = json.dumps(json.loads(receiver.requests[0].body))
    assert "<!channel>" not in sent and "<http://evil.example|click>" not in sent
    assert "&lt;!channel&gt;" in sent


def test_a_markdown_target_gets_untrusted_links_escaped(receiver: NotificationReceiver) -> None:
    n = notifier(AppriseTarget(f"mmost://127.0.0.1:{receiver.port}/abcdefghijklmnopqrstuvwxyz", label="notify.urls[0]"))
    n.notify(hostile_refusal())
    assert n.drain(20)
    (request,) = receiver.requests
    text = json.loads(request.body)["text"]
    assert "[click](http://evil.example/)" not in text and "@channel" not in text
    assert "[click] (http://evil.example/)" in text  # still readable, no longer a link


# -- receivers do not wait on each other; drops are counted and logged once (issue 21, 8) -------


def _heard(receiver: NotificationReceiver, count: int) -> bool:
    return len(receiver.requests) == count


def test_a_slow_receiver_never_delays_another_and_its_drops_are_counted_and_logged_once(
    receiver: NotificationReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    fast = NotificationReceiver()
    receiver.hold = threading.Event()
    dropped: list[int] = []
    try:
        n = notifier(
            AppriseTarget(f"json://127.0.0.1:{receiver.port}/slow", label="notify.urls[0]"),
            AppriseTarget(f"json://127.0.0.1:{fast.port}/fast", label="notify.urls[1]"),
            queue_size=4,
            on_drop=lambda: dropped.append(1),
        )
        with caplog.at_level(logging.WARNING, logger="controller.notifications.sender"):
            for i in range(1, 21):
                n.notify(Decision("suspended" if i % 2 else "resumed", "prod"))
                wait_for(partial(_heard, fast, i), timeout=2, what=f"the fast receiver hearing {i}")
        assert receiver.answered == 0  # the slow one still holds its first message
        assert n.dropped == len(dropped) == 20 - 1 - 4  # one in flight, four queued: the rest dropped
        drops = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1 and "notify.urls[0]" in drops[0].getMessage()
    finally:
        receiver.hold.set()
        fast.stop()
