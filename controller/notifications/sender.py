"""Sending what the controller decided to people (Apprise) and to GitHub (commit statuses).

The only importer of ``apprise``.  A notification must never be in the way of a
deploy: ``Notifier.notify`` decides what to tell (``announcements``), puts the
deliveries on bounded queues and returns.  Each target has its own queue and
worker thread, so a receiver that answers slowly delays only its own messages;
each delivery has timeouts, a few retries with backoff and a deadline of its own.
What cannot be sent (a dead receiver) is counted and logged at warning; what a
full queue drops is counted too (``dreichor_notifications_dropped_total``) and
logged once until that queue empties again; nothing is raised.  ``drain`` lets
a one-shot command, or the daemon on SIGTERM, wait a few seconds at most for the
queues to empty before it exits.

Everything a message says may quote untrusted text (refusal reasons, container
logs), so it is sent as Apprise's *text* format: Apprise escapes it for targets
that render markup (e-mail HTML, Slack's ``<…>`` links and mentions, Markdown
links), and nothing in a message can become a live link or a mention.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import apprise
from pydantic import ValidationError

from controller.errors import ConfigError
from controller.model.config import Config, GithubConfig
from controller.notifications.announcements import (
    CommitStatus,
    Decision,
    Memory,
    Message,
    Policy,
    decide,
    decision_from_event,
)
from controller.records.files import atomic_write

log = logging.getLogger(__name__)

QUEUE_SIZE = 64
ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the first retry, doubled for each next one
TIMEOUT = 5.0  # seconds to connect, and again to read an answer
DELIVERY_DEADLINE = 30.0  # seconds after which a delivery is not tried again
GITHUB_API_VERSION = "2022-11-28"
TEST_TITLE = "Dreichor test message"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Clock = Callable[[], datetime]


class DeliveryError(Exception):
    """A receiver did not take a message; ``retryable`` says whether trying again may help."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        self.reason = reason
        self.retryable = retryable
        super().__init__(reason)


@dataclass(frozen=True)
class Answer:
    """Whether one target answered a test message (for ``notify --test``)."""

    target: str
    answered: bool
    detail: str


@dataclass(frozen=True)
class _Delivery:
    target: str
    send: Callable[[], None]


class _Lane:
    """One target's own queue: its worker sends from it alone, so no receiver waits on another."""

    def __init__(self, name: str, *, size: int) -> None:
        self.name = name
        self.queue: queue.Queue[_Delivery | None] = queue.Queue(maxsize=size)
        self.dropping = False  # a drop was logged and the queue has not emptied since


class AppriseTarget:
    """One Apprise URL: sends messages with bounded connect and read timeouts."""

    def __init__(self, url: str, *, label: str, timeout: float = TIMEOUT) -> None:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise ConfigError(f"{label} is not a URL Apprise can use")
        if "cto=" not in url:
            plugin.socket_connect_timeout = timeout
        if "rto=" not in url:
            plugin.socket_read_timeout = timeout
        # The service's name only: a URL's path or host may itself be the secret (webhooks).
        self.name = f"{label} ({plugin.service_name})"
        self._apprise = apprise.Apprise()
        self._apprise.add(plugin)

    def send(self, message: Message) -> None:
        """Send one message; raise ``DeliveryError`` when the receiver did not take it."""
        sent = self._apprise.notify(
            body=message.body, title=message.title, notify_type=message.severity, body_format=apprise.NotifyFormat.TEXT
        )
        if not sent:
            raise DeliveryError("the receiver did not accept the message")


class GithubTarget:
    """GitHub's commit statuses API for the manifest repository (stdlib HTTP, bearer token)."""

    def __init__(self, config: GithubConfig, *, token: str, timeout: float = TIMEOUT) -> None:
        self.name = f"github {config.repository}"
        self._base = config.api_url.rstrip("/")
        self._repository = config.repository
        self._token = token
        self._timeout = timeout

    def post(self, status: CommitStatus) -> None:
        """``POST /repos/{repository}/statuses/{sha}``; raise ``DeliveryError`` unless GitHub answers 2xx."""
        body = {"state": status.state, "description": status.description, "context": status.context}
        self._request("POST", f"/repos/{self._repository}/statuses/{status.sha}", body)

    def probe(self) -> None:
        """``GET /repos/{repository}``: the token reaches the repository."""
        self._request("GET", f"/repos/{self._repository}", None)

    def _request(self, method: str, path: str, body: dict[str, str] | None) -> None:
        request = urllib.request.Request(  # noqa: S310 api_url is https:// or loopback http:// (config)
            self._base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self._token}",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
                "Content-Type": "application/json",
                "User-Agent": "dreichor-controller",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 as above
                response.read()
        except urllib.error.HTTPError as exc:
            retryable = exc.code >= 500 or exc.code == 429
            raise DeliveryError(f"GitHub answered HTTP {exc.code}", retryable=retryable) from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"GitHub did not answer: {getattr(exc, 'reason', exc)}") from None


class Notifier:
    """Tells each decision to the configured targets, off the caller's thread.

    Construct one per environment (``Notifier.from_config``), call ``notify`` for
    every decision, ``drain`` before exiting.  ``failed`` counts deliveries that
    could not be made (``dreichor_notifications_failed_total``); ``on_failure`` is
    called once for each of them, e.g. a Prometheus counter's ``inc``.
    """

    def __init__(
        self,
        *,
        environment: str,
        targets: Sequence[AppriseTarget] = (),
        github: GithubTarget | None = None,
        policy: Policy,
        state_file: Path | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        on_failure: Callable[[], None] | None = None,
        on_drop: Callable[[], None] | None = None,
        queue_size: int = QUEUE_SIZE,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        deadline: float = DELIVERY_DEADLINE,
    ) -> None:
        self.environment = environment
        self.targets = tuple(targets)
        self.github = github
        self.policy = policy
        self._state_file = state_file
        self._clock = clock
        self._on_failure = on_failure
        self._on_drop = on_drop
        self._attempts = attempts
        self._backoff = backoff
        self._deadline = deadline
        self._memory = load_memory(state_file)
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0
        self._failed = 0
        self._dropped = 0
        self._stopping = threading.Event()
        names = [target.name for target in self.targets] + ([github.name] if github is not None else [])
        self._lanes = {name: _Lane(name, size=queue_size) for name in names}
        for lane in self._lanes.values():
            worker = threading.Thread(target=self._work, args=(lane,), name=f"dreichor-notify-{environment}")
            worker.daemon = True
            worker.start()

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        dotenv: Mapping[str, str],
        clock: Clock = lambda: datetime.now(UTC),
        on_failure: Callable[[], None] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> Notifier:
        """The notifier a config asks for; ``ConfigError`` for an unusable URL or a ``${NAME}`` .env lacks."""
        notify, targets = config.notify, []
        if notify is not None:
            for index, template in enumerate(notify.urls):
                label = f"notify.urls[{index}]"
                targets.append(AppriseTarget(expand(template, dotenv, label=label), label=label))
        github = None
        if config.github is not None:
            token = dotenv.get("GITHUB_TOKEN")
            if token:
                github = GithubTarget(config.github, token=token)
            else:
                log.warning("github is configured but .env has no GITHUB_TOKEN: no commit statuses are posted")
        policy = Policy(
            events=frozenset(notify.events if notify else ()),
            repeat=notify.repeat if notify else 3600,
            statuses=github is not None,
        )
        return cls(
            environment=config.environment,
            targets=targets,
            github=github,
            policy=policy,
            state_file=config.paths.notifications,
            clock=clock,
            on_failure=on_failure,
            on_drop=on_drop,
        )

    @property
    def failed(self) -> int:
        """Deliveries that could not be made since start (dropped ones included)."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Deliveries dropped since start because their target's queue was full."""
        return self._dropped

    @property
    def memory(self) -> Memory:
        """What was told so far (open problems, posted statuses)."""
        return self._memory

    def notify(self, decision: Decision) -> None:
        """Queue what this decision tells; never blocks on a receiver, never raises."""
        try:
            with self._lock:
                outcome = decide(self._memory, decision, now=self._clock(), policy=self.policy)
                changed, self._memory = outcome.memory != self._memory, outcome.memory
                if changed:
                    self._save()
            for message in outcome.messages:
                for target in self.targets:
                    self._enqueue(_Delivery(target.name, partial(target.send, message)))
            for status in outcome.statuses:
                if self.github is not None:
                    self._enqueue(_Delivery(self.github.name, partial(self.github.post, status)))
        except Exception:
            log.warning("could not queue the notification of %s", decision.kind, exc_info=True)
            self._count_failure()

    def hear(self, event: Mapping[str, Any]) -> None:
        """An audit hook: tell the decision an audit event (or a pass moment) stands for."""
        decision = decision_from_event(self.environment, event)
        if decision is not None:
            self.notify(decision)

    def drain(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for queued deliveries; return whether all were done."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return self._pending == 0

    def close(self, timeout: float = 3.0) -> bool:
        """Drain for at most ``timeout`` seconds, then stop the workers; return whether all went out."""
        done = self.drain(timeout)
        self._stopping.set()
        for lane in self._lanes.values():
            with contextlib.suppress(queue.Full):  # a full queue: the worker sees _stopping on its next delivery
                lane.queue.put_nowait(None)
        return done

    def send_test(self) -> list[Answer]:
        """Send a test message to every target now (no queue, no retries) and say which answered."""
        message = Message(
            title=TEST_TITLE,
            body=f"A test message from the {self.environment} deploy controller.",
            severity="info",
        )
        answers = [_try(target.name, partial(target.send, message)) for target in self.targets]
        if self.github is not None:
            answers.append(_try(self.github.name, self.github.probe))
        return answers

    # -- the worker --------------------------------------------------------------------------

    def _enqueue(self, delivery: _Delivery) -> None:
        lane = self._lanes[delivery.target]
        with self._idle:
            self._pending += 1
        try:
            lane.queue.put_nowait(delivery)
        except queue.Full:
            self._done()
            self._count_drop(lane)

    def _count_drop(self, lane: _Lane) -> None:
        """Count a dropped delivery; log the first of a run only, so a stuck receiver is one line, not hundreds."""
        with self._idle:
            self._dropped += 1
            first, lane.dropping = not lane.dropping, True
        if first:
            log.warning("notifications to %s are dropped: its queue is full (the receiver is slow)", lane.name)
        if self._on_drop is not None:
            self._on_drop()
        self._count_failure()

    def _work(self, lane: _Lane) -> None:
        while True:
            delivery = lane.queue.get()
            if delivery is None:
                return
            try:
                if self._stopping.is_set():
                    raise DeliveryError("the controller is stopping")
                self._deliver(delivery)
            except Exception as exc:
                log.warning("notification to %s failed: %s", delivery.target, exc)
                self._count_failure()
            finally:
                if lane.queue.empty():
                    lane.dropping = False  # the next drop is news again
                self._done()

    def _deliver(self, delivery: _Delivery) -> None:
        ends = time.monotonic() + self._deadline
        for attempt in range(1, self._attempts + 1):
            try:
                delivery.send()
                return
            except DeliveryError as exc:
                wait = self._backoff * 2 ** (attempt - 1)
                if not exc.retryable or attempt == self._attempts or time.monotonic() + wait > ends:
                    raise DeliveryError(f"{exc.reason} (after {attempt} attempts)") from None
            if self._stopping.wait(wait):
                raise DeliveryError("the controller is stopping")

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _count_failure(self) -> None:
        with self._idle:
            self._failed += 1
        if self._on_failure is not None:
            self._on_failure()

    def _save(self) -> None:
        if self._state_file is None:
            return
        try:
            atomic_write(self._state_file, self._memory.model_dump_json(indent=2).encode() + b"\n", mode=0o600)
        except OSError as exc:
            log.warning("cannot save %s: %s", self._state_file, exc.strerror)


def expand(template: str, dotenv: Mapping[str, str], *, label: str) -> str:
    """Each ``${NAME}`` in an Apprise URL replaced by its .env value, encoded for the part it lands in.

    A password ``Winter@2026`` in the user part would otherwise move the host to ``2026``, and a
    token ``a/b-c#d`` would end the host early: values in the user part are percent-encoded whole,
    in the path, query and fragment all but ``/`` (Apprise decodes both).  A value in the host part
    is the host (or a service's tokens, as Slack's ``T…/B…/…``) and stays as it is, but may hold
    no ``@``, ``?``, ``#`` or space.  Whatever the values, the URL's scheme and host must be the
    template's: else ``ConfigError``, at load.  A template that is one ``${NAME}`` alone names no
    scheme or host: the value is the URL.  ``ConfigError`` too for a ``NAME`` .env lacks.
    """

    def raw(name: str) -> str:
        if name not in dotenv:
            raise ConfigError(f"{label} names ${{{name}}}, which the .env file does not define")
        return dotenv[name]

    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole is not None:
        return raw(whole.group(1))
    parts = _url_parts(template)

    def value(match: re.Match[str], *, inert: bool = False) -> str:
        part, text = parts(match.start()), raw(match.group(1))
        if part == "host":
            if any(c in text for c in "@?# \t\n"):
                raise ConfigError(
                    f"{label}: ${{{match.group(1)}}} stands in the host part and holds @, ?, # or a space"
                )
            return text
        if inert:
            return "x"
        return urllib.parse.quote(text, safe="" if part in ("scheme", "user") else "/")

    url = _PLACEHOLDER.sub(value, template)
    expected = urllib.parse.urlsplit(_PLACEHOLDER.sub(partial(value, inert=True), template))
    actual = urllib.parse.urlsplit(url)
    if (actual.scheme, actual.hostname) != (expected.scheme, expected.hostname) or not actual.scheme:
        raise ConfigError(
            f"{label}: with the .env values its scheme and host would be {actual.scheme}://{actual.hostname}, "
            f"not {expected.scheme}://{expected.hostname} as the URL says"
        )
    return url


def _url_parts(template: str) -> Callable[[int], str]:
    """Which part of the URL (scheme, user, host, rest) a position of the template is in."""
    scheme_end = template.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    ends = [i for i in (template.find(c, start) for c in "/?#") if i >= 0]
    end = min(ends, default=len(template))
    at = template.rfind("@", start, end)

    def part(position: int) -> str:
        if position < scheme_end:
            return "scheme"
        if start <= position < at:
            return "user"
        if max(start, at + 1) <= position < end:
            return "host"
        return "rest"

    return part


def load_memory(path: Path | None) -> Memory:
    """What was told before a restart; a missing or unreadable file starts afresh (with a warning)."""
    if path is None or not path.exists():
        return Memory()
    try:
        return Memory.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        log.warning("ignoring %s (%s): problems still open may be told again", path, type(exc).__name__)
        return Memory()


def _try(name: str, send: Callable[[], None]) -> Answer:
    try:
        send()
    except DeliveryError as exc:
        return Answer(target=name, answered=False, detail=exc.reason)
    return Answer(target=name, answered=True, detail="answered")
