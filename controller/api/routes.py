"""The loopback HTTP API: health, metrics, status, the status page, history, two triggers.

Behind a Cloudflare Tunnel every request comes from 127.0.0.1, so the address
proves nothing: with ``api.access`` set, ``/``, ``/status`` and ``/history``
need a Cloudflare Access JWT (RS256 against the team's JWKS, via PyJWT), and
``POST /sync`` always does; ``POST /hooks/github`` needs a GitHub HMAC
signature (docs/design.md §11).  Served by the bounded server (``controller.api.server``):
no body is read before authentication, except the webhook's, which is read
(at most 1 MiB) only once its headers check out.  Refusals answer a fixed body;
the reason goes to the log and the metrics.  The page and ``/history`` read
only what the daemon already holds (the status file, snapshots, the audit log,
the last plan): loading them never runs a pass, a git command or a Docker call.
``SIGHUP`` swaps the Access verifier and the webhook secret at once
(``ApiContext.guards``).  Deliveries already acted on are remembered on disk
(``records.deliveries``): a replayed delivery, even after a restart, is
answered 200 and triggers nothing, so it cannot cut a backoff short either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt

from controller.api.page import BAD_LIMIT, history_body, history_limit, render_page, snapshot_summary
from controller.api.server import BoundedServer, Limits, Request, Response
from controller.model.config import AccessConfig, split_listen
from controller.model.plan import Plan
from controller.service import DeliveryMemory, History, Status

log = logging.getLogger("dreichor.api")
MAX_BODY = 1024 * 1024
JWT_LEEWAY = 10
JWKS_COOLDOWN = 30  # seconds between refetches an unknown kid may cause: junk kids cost one fetch, not one each
SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
JSON = {"Content-Type": "application/json"}
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class AuthError(Exception):
    """A request failed authentication; ``status`` is 401 or 403, ``reason`` goes to the log only."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AccessVerifier:
    """Cloudflare Access JWTs: RS256 against the team's JWKS (cached, refetched on an unknown kid)."""

    def __init__(self, access: AccessConfig, *, fetch_timeout: int = 5) -> None:
        self.access = access
        url = access.jwks_url or f"{access.team_domain.rstrip('/')}/cdn-cgi/access/certs"
        self.jwks = jwt.PyJWKClient(
            url, cache_keys=True, lifespan=3600, timeout=fetch_timeout, cooldown_duration=JWKS_COOLDOWN
        )

    def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims, or ``AuthError``."""
        if not token:
            raise AuthError(HTTPStatus.UNAUTHORIZED, "missing Cf-Access-Jwt-Assertion")
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.access.audience,
                issuer=self.access.team_domain,
                leeway=JWT_LEEWAY,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError(HTTPStatus.UNAUTHORIZED, f"JWKS unreachable: {exc}") from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError(HTTPStatus.UNAUTHORIZED, f"invalid token: {type(exc).__name__}: {exc}") from None
        allowed = self.access.allowed_emails
        if allowed and claims.get("email") not in allowed:
            raise AuthError(HTTPStatus.FORBIDDEN, f"email {claims.get('email')!r} is not allowed")
        return claims


class WebhookVerifier:
    """GitHub webhooks: headers checked before the body is read, then HMAC-SHA256 of the raw body."""

    def __init__(self, secret: str | None, *, branch: str, deliveries: DeliveryMemory | None = None) -> None:
        self.secret = secret.encode() if secret else None
        self.branch = branch
        self.deliveries = deliveries or DeliveryMemory()

    def screen(self, headers: Mapping[str, str]) -> Response | int:
        """Before the body: a refusal, or how many bytes to read."""
        if self.secret is None:
            raise AuthError(HTTPStatus.FORBIDDEN, "GITHUB_WEBHOOK_SECRET is not set")
        if not SIGNATURE.fullmatch(headers.get("x-hub-signature-256", "")):
            raise AuthError(HTTPStatus.UNAUTHORIZED, "missing or malformed X-Hub-Signature-256")
        if not headers.get("x-github-event"):
            return _error(HTTPStatus.BAD_REQUEST, "X-GitHub-Event required")
        if not _is_json(headers):
            return _error(HTTPStatus.BAD_REQUEST, "expected application/json")
        return _body_length(headers)

    def verify(self, body: bytes, signature: str | None) -> None:
        """Raise ``AuthError`` unless the signature is right."""
        if self.secret is None:
            raise AuthError(HTTPStatus.FORBIDDEN, "GITHUB_WEBHOOK_SECRET is not set")
        expected = b"sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()
        if not signature or not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            raise AuthError(HTTPStatus.UNAUTHORIZED, "bad X-Hub-Signature-256")


def request_path(target: str) -> str | None:
    """The path of a request target (origin or absolute form), or ``None`` when it cannot be parsed."""
    try:
        return urlsplit(target).path
    except ValueError:  # e.g. "http://[::1/status": an unclosed IPv6 literal
        return None


def _is_json(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def _body_length(headers: Mapping[str, str]) -> Response | int:
    """The declared body length, or a refusal: chunked, unknown, malformed or over 1 MiB."""
    if "transfer-encoding" in headers:
        return _error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
    text = headers.get("content-length", "")
    if not re.fullmatch(r"[0-9]{1,9}", text):
        return _error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
    if int(text) > MAX_BODY:
        return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    return int(text)


def _error(status: HTTPStatus, error: str) -> Response:
    return _json(status, {"error": error})


def _json(status: HTTPStatus, data: dict[str, Any]) -> Response:
    return Response(status, json.dumps(data).encode(), JSON)


@dataclass(frozen=True)
class Guards:
    """The Access verifier and the webhook verifier, swapped together on SIGHUP."""

    access: AccessVerifier | None
    webhook: WebhookVerifier


class ApiMetrics(Protocol):
    """What the routes need of the daemon's metrics: the exposition, and a count of refused calls."""

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        ...

    def auth_failed(self, endpoint: str, reason: str) -> None:
        """Count one refused API call."""
        ...


@dataclass
class ApiContext:
    """What the routes need from the daemon."""

    status_json: Callable[[], bytes | None]
    healthy: Callable[[], bool]
    trigger: Callable[[str], None]
    metrics: ApiMetrics
    guards: Guards
    status: Callable[[], Status | None] = lambda: None
    history: Callable[[], History] = lambda: History([], [])
    last_plan: Callable[[], Plan | None] = lambda: None
    _swap: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def apply(self, guards: Guards) -> None:
        """Use new verifiers from the next request on (the replay memory carries over)."""
        guards.webhook.deliveries = self.guards.webhook.deliveries
        with self._swap:
            self.guards = guards


class Routes:
    """docs/design.md §11's routes: what each answers and what it needs first."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def screen(self, request: Request) -> Response | int:
        """On the server's loop, before any body: unknown routes, health, and the webhook's headers."""
        log.debug('"%s %s"', request.method, request.target[:200])  # the access log, at debug
        path = request_path(request.target)
        if path is None:
            return _error(HTTPStatus.BAD_REQUEST, "malformed request target")
        allowed = ROUTES.get(path)
        if allowed is None:
            return _error(HTTPStatus.NOT_FOUND, "not found")
        if request.method != allowed:
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED, b'{"error": "method not allowed"}', {**JSON, "Allow": allowed}
            )
        if path == "/healthz":  # answered here, so it answers even with every worker busy
            ok = self.ctx.healthy()
            return _json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, {"healthy": ok})
        if path != "/hooks/github":
            return 0  # nothing else reads a body
        try:
            return self.ctx.guards.webhook.screen(request.headers)
        except AuthError as exc:
            return self._refuse(path, exc)

    def handle(self, request: Request) -> Response:
        """In a worker thread: authenticate, then answer."""
        path = request_path(request.target) or ""
        guards = self.ctx.guards
        try:
            if path == "/hooks/github":
                return self._github(request, guards.webhook)
            if path == "/sync" or (guards.access is not None and path not in OPEN):
                self._access(request, guards)
            return self._read(path, request)
        except AuthError as exc:
            return self._refuse(path, exc)

    def _access(self, request: Request, guards: Guards) -> None:
        if guards.access is None:
            raise AuthError(HTTPStatus.FORBIDDEN, "api.access is not configured")
        guards.access.verify(request.headers.get("cf-access-jwt-assertion"))

    def _read(self, path: str, request: Request) -> Response:
        if path == "/sync":
            self.ctx.trigger("api")
            return _json(HTTPStatus.ACCEPTED, {"accepted": True})
        if path == "/metrics":
            return Response(HTTPStatus.OK, self.ctx.metrics.exposition(), {"Content-Type": METRICS_TYPE})
        if path == "/status":
            body = self.ctx.status_json()
            return (
                _error(HTTPStatus.SERVICE_UNAVAILABLE, "no status yet")
                if body is None
                else Response(HTTPStatus.OK, body, JSON)
            )
        if path == "/history":
            return self._history(request)
        return self._page()

    def _page(self) -> Response:
        history, plan = self.ctx.history(), self.ctx.last_plan()
        body, headers = render_page(
            self.ctx.status(),
            snapshots=[snapshot_summary(s) for s in history.snapshots],
            events=history.events,
            chain=history.broken,
            plan=asdict(plan) if plan else None,
            now=datetime.now(UTC),
        )
        return Response(HTTPStatus.OK, body, headers)

    def _history(self, request: Request) -> Response:
        try:
            limit = history_limit(urlsplit(request.target).query)  # the path parsed, so the target does
        except ValueError:
            return _error(HTTPStatus.BAD_REQUEST, BAD_LIMIT)
        history = self.ctx.history()
        snapshots = [snapshot_summary(s) for s in history.snapshots]
        body = history_body(snapshots=snapshots, events=history.events, chain=history.broken, limit=limit)
        return Response(HTTPStatus.OK, body, JSON)

    def _github(self, request: Request, hook: WebhookVerifier) -> Response:
        hook.verify(request.body, request.headers.get("x-hub-signature-256"))
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            return _error(HTTPStatus.BAD_REQUEST, "malformed JSON")
        if not hook.deliveries.first(delivery=request.headers.get("x-github-delivery"), body=request.body):
            return _json(HTTPStatus.OK, {"accepted": False, "reason": "delivery already seen"})
        if request.headers["x-github-event"] == "push" and payload.get("ref") == f"refs/heads/{hook.branch}":
            self.ctx.trigger("webhook")
            return _json(HTTPStatus.ACCEPTED, {"accepted": True})
        return _json(HTTPStatus.OK, {"accepted": False, "reason": "not a push to the configured branch"})

    def _refuse(self, path: str, exc: AuthError) -> Response:
        """A fixed body; the reason goes to the log and the metrics only."""
        self.ctx.metrics.auth_failed(path, exc.status.phrase)
        log.warning("API request refused", extra={"endpoint": path, "reason": exc.reason})
        return _error(exc.status, "unauthorized" if exc.status == HTTPStatus.UNAUTHORIZED else "forbidden")


# path → method; all but OPEN need the Access JWT when api.access is set, /sync always
ROUTES = {
    "/healthz": "GET",
    "/metrics": "GET",
    "/status": "GET",
    "/history": "GET",
    "/": "GET",
    "/sync": "POST",
    "/hooks/github": "POST",
}
OPEN = frozenset({"/healthz", "/metrics"})


class ApiServer(BoundedServer):
    """The API on its loopback address, bounded (``controller.server.Limits``)."""

    def __init__(self, listen: str, ctx: ApiContext, *, limits: Limits | None = None) -> None:
        host, port = split_listen(listen)
        self.ctx = ctx
        super().__init__(host, port, Routes(ctx), limits=limits)
