"""A small, bounded reader for a registry's HTTP API (OCI distribution), for signature checks.

The pull itself goes through the Docker Engine; this client only reads the few small documents an
image signature check needs before the pull: signature manifests, payload blobs and referrers.  The
registry is outside our trust, so every read has a timeout, a deadline and a size cap, and a body
that exceeds its cap is not read to the end.  An answer over its cap, or one that breaks the
protocol (garbage, a reset, a stall, a 5xx), is the registry's fault: ``Retryable`` with a reason
(``RegistryAnswerTooLarge`` for the cap), never a verdict on the image — whoever can push to the
image repository must not be able to keep a correctly signed release out for good by making an
answer large.  Nothing here crashes the pass.
Authentication follows what registries ask for in ``WWW-Authenticate``: a bearer token fetched from
the named realm, or basic auth, with the credentials of ``.env`` (the same as the pull's).  Those
credentials, and the token they buy, go to the configured registry host only: a redirect to another
host is followed without them, a token realm on another host is asked anonymously, and nothing is
sent over plain http except to a loopback host.  Each request's deadline covers connecting, the
answer's headers and its body: a registry that trickles its headers is cut off like a slow body.
One check may make a hundred requests (signature layers, referrers, attestations), so all of them
together also share a budget: a registry slow on every answer holds the pass, and the pass lock,
for ``budget`` seconds, not a deadline per request times the number of requests.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.errors import Reason, Retryable
from controller.model.config import is_loopback

REGISTRY_UNAVAILABLE = Reason.REGISTRY_UNAVAILABLE
ANSWER_TOO_LARGE = Reason.REGISTRY_ANSWER_TOO_LARGE
MAX_TOKEN_BYTES = 64 * 1024
MAX_REDIRECTS = 3
CHUNK = 64 * 1024
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
NOT_FOUND = frozenset({404})
NO_API = frozenset({400, 404, 405, 406})  # how registries without the referrers API answer
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Answer:
    """One successful read: the body and what the registry said it is."""

    body: bytes
    media_type: str


@dataclass
class RegistryClient:
    """Reads from one registry host (``host[:port]``); plain HTTP only for loopback hosts."""

    host: str
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    deadline: float = 30.0  # one request: connect, headers and body
    budget: float = 120.0  # every request of this client together, from its first
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)
    _use_basic: bool = field(default=False, repr=False)
    _began: float | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        """``http`` for a registry on a loopback address (as Docker allows), else ``https``."""
        return "http" if is_loopback(self.host.rsplit(":", 1)[0].strip("[]")) else "https"

    def manifest(self, repository: str, reference: str, *, max_bytes: int) -> Answer | None:
        """The manifest at a tag or digest, or ``None`` when the registry has none."""
        path = f"/v2/{repository}/manifests/{urllib.parse.quote(reference, safe=':')}"
        answer = self._get(path, repository=repository, accept=", ".join(MANIFEST_TYPES), max_bytes=max_bytes)
        if answer is not None and reference.startswith("sha256:"):
            _check_digest(answer.body, reference, what=f"manifest {reference}")
        return answer

    def blob(self, repository: str, digest: str, *, max_bytes: int) -> bytes:
        """A blob by digest, checked against that digest; a missing blob is ``Retryable``."""
        answer = self._get(f"/v2/{repository}/blobs/{digest}", repository=repository, accept="*/*", max_bytes=max_bytes)
        if answer is None:
            raise Retryable(f"registry {self.host} has no blob {digest} in {repository}", code=REGISTRY_UNAVAILABLE)
        _check_digest(answer.body, digest, what=f"blob {digest}")
        return answer.body

    def referrers(self, repository: str, digest: str, *, artifact_type: str, max_bytes: int) -> Answer | None:
        """The OCI 1.1 referrers index of a digest, or ``None`` where the registry has no referrers API."""
        query = urllib.parse.urlencode({"artifactType": artifact_type})
        path = f"/v2/{repository}/referrers/{digest}?{query}"
        answer = self._get(path, repository=repository, accept=MANIFEST_TYPES[1], max_bytes=max_bytes, absent=NO_API)
        if answer is None or not answer.media_type.startswith(MANIFEST_TYPES[1]):
            return None  # registries without the API answer 404, or with something that is no index
        return answer

    def _get(
        self, path: str, *, repository: str, accept: str, max_bytes: int, absent: frozenset[int] = NOT_FOUND
    ) -> Answer | None:
        url = f"{self.scheme}://{self.host}{path}"
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, body = self._request(url, repository=repository, accept=accept, max_bytes=max_bytes)
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                url = _usable(urllib.parse.urljoin(url, headers["location"]), what=f"registry {self.host}'s redirect")
                continue
            if status in absent:
                return None
            if status != 200:
                raise Retryable(f"registry {self.host} answered {status} for {path}", code=REGISTRY_UNAVAILABLE)
            return Answer(body, headers.get("content-type", "").split(";")[0].strip())
        raise Retryable(f"registry {self.host} redirected too often for {path}", code=REGISTRY_UNAVAILABLE)

    def _request(self, url: str, *, repository: str, accept: str, max_bytes: int) -> tuple[int, dict[str, str], bytes]:
        own = self._is_own(url)  # credentials go to the configured host only, never to a redirect's
        headers = {"Accept": accept, **(self._authorization(repository) if own else {})}
        status, answer_headers, body = _fetch(
            url, headers=headers, timeout=self.timeout, deadline=self._left(), max_bytes=max_bytes
        )
        if status == 401 and own and self._answer_challenge(answer_headers.get("www-authenticate", ""), repository):
            headers = {"Accept": accept, **self._authorization(repository)}
            status, answer_headers, body = _fetch(
                url, headers=headers, timeout=self.timeout, deadline=self._left(), max_bytes=max_bytes
            )
        if status == 401:
            raise Retryable(f"registry {self.host} refused our credentials for {repository}", code=Reason.REGISTRY_AUTH)
        return status, answer_headers, body

    def _left(self) -> float:
        """The next request's deadline: its own, or what is left of the client's budget when that is less."""
        now = self.clock()
        self._began = now if self._began is None else self._began
        left = self.budget - (now - self._began)
        if left <= 0:
            raise Retryable(f"registry {self.host} took longer than {self.budget:g}s in all", code=REGISTRY_UNAVAILABLE)
        return min(self.deadline, left)

    def _is_own(self, url: str) -> bool:
        """Whether ``url`` is the configured registry host, by the scheme this client uses for it."""
        parts = urllib.parse.urlsplit(url)
        return parts.scheme == self.scheme and parts.netloc.lower() == self.host.lower()

    def _authorization(self, repository: str) -> dict[str, str]:
        if repository in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[repository]}"}
        if self._use_basic and self.username and self.password:
            return {"Authorization": _basic(self.username, self.password)}
        return {}

    def _answer_challenge(self, challenge: str, repository: str) -> bool:
        """Learn how to authenticate from a 401; ``False`` when there is nothing new to try."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic" and self.username and self.password and not self._use_basic:
            self._use_basic = True
            return True
        if scheme.lower() != "bearer" or repository in self._tokens:
            return False
        values = dict(_CHALLENGE_PARAM.findall(params))
        realm = values.get("realm", "")
        try:
            _usable(realm, what=f"registry {self.host}'s token realm")
        except Retryable as exc:
            raise Retryable(exc.reason, code=Reason.REGISTRY_AUTH) from None
        query = {"service": values.get("service", ""), "scope": values.get("scope") or f"repository:{repository}:pull"}
        self._tokens[repository] = self._token(f"{realm}?{urllib.parse.urlencode(query)}")
        return True

    def _token(self, url: str) -> str:
        # A realm on another host is asked without our credentials: it gets an anonymous (public) token.
        own = urllib.parse.urlsplit(url).hostname == urllib.parse.urlsplit(f"//{self.host}").hostname
        send = own and self.username and self.password and urllib.parse.urlsplit(url).scheme == self.scheme
        headers = {"Authorization": _basic(self.username, self.password)} if send else {}
        status, _, body = _fetch(
            url, headers=headers, timeout=self.timeout, deadline=self._left(), max_bytes=MAX_TOKEN_BYTES
        )
        if status != 200:
            raise Retryable(f"registry token service answered {status}", code=Reason.REGISTRY_AUTH)
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or not token.isascii():
            raise Retryable("registry token service answered without a token", code=Reason.REGISTRY_AUTH)
        return token


def _usable(url: str, *, what: str) -> str:
    """``url`` when it is https, or http to a loopback host; else ``Retryable``."""
    parts = urllib.parse.urlsplit(url)
    plain_ok = parts.scheme == "http" and is_loopback(parts.hostname or "")
    if not parts.netloc or not (parts.scheme == "https" or plain_ok):
        raise Retryable(f"{what} {url[:200]!r} is neither https nor loopback: not followed", code=REGISTRY_UNAVAILABLE)
    return url


def _fetch(
    url: str, *, headers: dict[str, str], timeout: float, deadline: float, max_bytes: int
) -> tuple[int, dict[str, str], bytes]:
    """One GET: status, lower-cased headers and at most ``max_bytes`` of body (more is refused).

    ``deadline`` holds from before the connect to the body's last byte: a watchdog shuts the
    socket when it passes, so a registry sending a byte a second cannot outlast it.
    """
    parts = urllib.parse.urlsplit(_usable(url, what="registry address"))
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.netloc, timeout=min(timeout, deadline))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    expired = threading.Event()
    watchdog = threading.Timer(deadline, _cut, (connection, expired))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("GET", target, headers={**headers, "User-Agent": "dreichor-controller"})
        response = connection.getresponse()
        answer_headers = {key.lower(): value for key, value in response.getheaders()}
        body = _read_capped(response, url=url, max_bytes=max_bytes) if response.status == 200 else b""
        if expired.is_set():  # a shut socket reads as a clean end: what came is cut short, not an answer
            raise OSError("deadline")
        return response.status, answer_headers, body
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set():
            late = f"registry {parts.netloc} took longer than {deadline:g}s"
            raise Retryable(late, code=REGISTRY_UNAVAILABLE) from None
        raise Retryable(
            f"registry {parts.netloc} did not answer usably: {_describe(exc)}", code=REGISTRY_UNAVAILABLE
        ) from None
    finally:
        watchdog.cancel()
        connection.close()


def _cut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """The deadline passed: shut the socket, so the read blocked on it returns at once."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return


def _read_capped(response: http.client.HTTPResponse, *, url: str, max_bytes: int) -> bytes:
    """The body; a registry fault as soon as it is known to exceed ``max_bytes``."""
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise Retryable(_too_large(url, max_bytes), code=ANSWER_TOO_LARGE)
    body = bytearray()
    while chunk := response.read1(CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise Retryable(_too_large(url, max_bytes), code=ANSWER_TOO_LARGE)
    return bytes(body)


def _too_large(url: str, max_bytes: int) -> str:
    path = urllib.parse.urlsplit(url).path
    return f"registry fault: its answer for {path} is larger than {max_bytes} bytes (retried; no verdict on the image)"


def _check_digest(body: bytes, digest: str, *, what: str) -> None:
    if digest != "sha256:" + hashlib.sha256(body).hexdigest():
        raise Retryable(f"registry served {what} with other content than its digest", code=REGISTRY_UNAVAILABLE)


def _basic(username: str | None, password: str | None) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _describe(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
