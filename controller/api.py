"""The loopback HTTP API: health, metrics, status, the status page, history, two triggers.

Served by the stdlib threaded HTTP server, never hand-parsed HTTP.  Behind a
Cloudflare Tunnel every request comes from 127.0.0.1, so the address proves
nothing: with ``api.access`` set, ``/``, ``/status`` and ``/history`` need a
Cloudflare Access JWT (RS256 against the team's JWKS, via PyJWT), and
``POST /sync`` always does; ``POST /hooks/github`` needs a GitHub HMAC
signature (DESIGN §11).  The page and ``/history`` read only what the daemon
already holds (the status file, snapshots, the audit log, the last plan):
loading them never runs a pass, a git command or a Docker call.  Refusals answer a fixed body that says nothing about
why; the reason goes to the log and the metrics.  Bodies are capped before
they are read, and slow clients time out.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt

from controller.config import AccessConfig, split_listen
from controller.metrics import Metrics
from controller.page import BAD_LIMIT, history_body, history_limit, render_page, snapshot_summary
from controller.plan import Plan
from controller.service import History
from controller.status import Status

log = logging.getLogger("dreichor.api")
MAX_BODY = 1024 * 1024
CLIENT_TIMEOUT = 10
JWT_LEEWAY = 10
DELIVERIES_KEPT = 1000


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
        self.jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=fetch_timeout)

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
    """GitHub ``push`` webhooks: HMAC-SHA256 of the raw body, each delivery id once."""

    def __init__(self, secret: str | None, *, branch: str) -> None:
        self.secret = secret.encode() if secret else None
        self.branch = branch
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def verify(self, body: bytes, signature: str | None) -> None:
        """Raise ``AuthError`` unless the signature is right."""
        if self.secret is None:
            raise AuthError(HTTPStatus.FORBIDDEN, "GITHUB_WEBHOOK_SECRET is not set")
        expected = b"sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()
        if not signature or not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            raise AuthError(HTTPStatus.UNAUTHORIZED, "bad X-Hub-Signature-256")

    def first_delivery(self, delivery: str | None) -> bool:
        """Whether this delivery id is new (a replay is ignored)."""
        if not delivery:
            return True
        with self._lock:
            if delivery in self._seen:
                return False
            self._seen[delivery] = None
            while len(self._seen) > DELIVERIES_KEPT:
                self._seen.popitem(last=False)
        return True


@dataclass
class ApiContext:
    """What the handlers need from the daemon."""

    status_json: Callable[[], bytes | None]
    healthy: Callable[[], bool]
    trigger: Callable[[str], None]
    metrics: Metrics
    access: AccessVerifier | None
    webhook: WebhookVerifier
    status: Callable[[], Status | None] = lambda: None
    history: Callable[[], History] = lambda: History([], [])
    last_plan: Callable[[], Plan | None] = lambda: None


class Handler(BaseHTTPRequestHandler):
    """One request; the server gives each connection its own thread."""

    server: ApiServer
    server_version = "dreichor-controller"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Access log lines go to the debug log, not stderr."""
        log.debug(format % args)

    def setup(self) -> None:
        """Idle or slow clients are dropped after the server's client timeout."""
        self.timeout = self.server.client_timeout  # type: ignore[misc] # the stdlib reads it per instance
        super().setup()

    @property
    def ctx(self) -> ApiContext:
        """The daemon's side."""
        return self.server.ctx

    def do_GET(self) -> None:
        """``/healthz`` and ``/metrics`` open; ``/``, ``/status``, ``/history`` behind Access when it is set."""
        path = urlsplit(self.path).path
        if path == "/healthz":
            ok = self.ctx.healthy()
            self._send(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, {"healthy": ok})
        elif path == "/metrics":
            self._raw(HTTPStatus.OK, self.ctx.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
        elif path in READ_ROUTES:
            self._guarded(path, READ_ROUTES[path])
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _guarded(self, path: str, answer: Callable[[Handler], None]) -> None:
        """Answer a read route, after the Access JWT when ``api.access`` is set."""
        try:
            if self.ctx.access is not None:
                self.ctx.access.verify(self.headers.get("Cf-Access-Jwt-Assertion"))
        except AuthError as exc:
            self._refuse(path, exc)
            return
        answer(self)

    def _status(self) -> None:
        body = self.ctx.status_json()
        if body is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no status yet"})
        else:
            self._raw(HTTPStatus.OK, body, "application/json")

    def _page(self) -> None:
        history, plan = self.ctx.history(), self.ctx.last_plan()
        body, headers = render_page(
            self.ctx.status(),
            snapshots=[snapshot_summary(s) for s in history.snapshots],
            events=history.events,
            chain=history.broken,
            plan=asdict(plan) if plan else None,
            now=datetime.now(UTC),
        )
        self._raw(HTTPStatus.OK, body, headers.pop("Content-Type"), headers)

    def _history(self) -> None:
        try:
            limit = history_limit(urlsplit(self.path).query)
        except ValueError:
            self._send(HTTPStatus.BAD_REQUEST, {"error": BAD_LIMIT})
            return
        history = self.ctx.history()
        snapshots = [snapshot_summary(s) for s in history.snapshots]
        body = history_body(snapshots=snapshots, events=history.events, chain=history.broken, limit=limit)
        self._raw(HTTPStatus.OK, body, "application/json")

    def do_POST(self) -> None:
        """``/sync`` and ``/hooks/github``."""
        if self.path not in ("/sync", "/hooks/github"):
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        body = self._body()
        if body is None:
            return
        try:
            if self.path == "/sync":
                self._sync(body)
            else:
                self._github(body)
        except AuthError as exc:
            self._refuse(self.path, exc)

    def _refuse(self, path: str, exc: AuthError) -> None:
        """A fixed body; the reason goes to the log and the metrics only."""
        self.ctx.metrics.auth_failures.labels(path, exc.status.phrase).inc()
        log.warning("API request refused", extra={"endpoint": path, "reason": exc.reason})
        error = "unauthorized" if exc.status == HTTPStatus.UNAUTHORIZED else "forbidden"
        self._send(exc.status, {"error": error})

    def _sync(self, body: bytes) -> None:
        if self.ctx.access is None:
            raise AuthError(HTTPStatus.FORBIDDEN, "api.access is not configured")
        self.ctx.access.verify(self.headers.get("Cf-Access-Jwt-Assertion"))
        if body and self._json(body) is None:
            return
        self.ctx.trigger("api")
        self._send(HTTPStatus.ACCEPTED, {"accepted": True})

    def _github(self, body: bytes) -> None:
        if not self._is_json():
            self._send(HTTPStatus.BAD_REQUEST, {"error": "expected application/json"})
            return
        hook = self.ctx.webhook
        hook.verify(body, self.headers.get("X-Hub-Signature-256"))
        payload = self._json(body)
        if payload is None:
            return
        if not hook.first_delivery(self.headers.get("X-GitHub-Delivery")):
            self._send(HTTPStatus.OK, {"accepted": False, "reason": "delivery already seen"})
            return
        if self.headers.get("X-GitHub-Event", "push") == "push" and payload.get("ref") == f"refs/heads/{hook.branch}":
            self.ctx.trigger("webhook")
            self._send(HTTPStatus.ACCEPTED, {"accepted": True})
        else:
            self._send(HTTPStatus.OK, {"accepted": False, "reason": "not a push to the configured branch"})

    def _body(self) -> bytes | None:
        """The request body, refused before reading when too large or of unknown length."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        if length > MAX_BODY:
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return None
        return self.rfile.read(length) if length else b""

    def _is_json(self) -> bool:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json"

    def _json(self, body: bytes) -> dict[str, Any] | None:
        """The body as a JSON object, or a 400 answer and None."""
        if not self._is_json():
            self._send(HTTPStatus.BAD_REQUEST, {"error": "expected application/json"})
            return None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            self._send(HTTPStatus.BAD_REQUEST, {"error": "malformed JSON"})
            return None
        return data

    def _send(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        self._raw(status, json.dumps(data).encode(), "application/json")

    def _raw(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


READ_ROUTES: dict[str, Callable[[Handler], None]] = {
    "/": Handler._page,
    "/status": Handler._status,
    "/history": Handler._history,
}


class ApiServer(ThreadingHTTPServer):
    """The threaded server; its threads die with the process."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: str, ctx: ApiContext, *, client_timeout: float = CLIENT_TIMEOUT) -> None:
        host, port = split_listen(listen)
        self.ctx = ctx
        self.client_timeout = client_timeout
        super().__init__((host, port), Handler)

    def start(self) -> threading.Thread:
        """Serve in a background thread."""
        thread = threading.Thread(target=self.serve_forever, name="api", daemon=True)
        thread.start()
        return thread
