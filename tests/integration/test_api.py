"""The loopback API over real HTTP: JWT and webhook authentication, hostile clients, metrics, health."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from controller.api import AccessVerifier, ApiContext, ApiServer, WebhookVerifier
from controller.config import AccessConfig
from controller.metrics import Metrics
from testbed import JwksServer, free_port

TEAM = "https://dreichor.cloudflareaccess.com"
AUD = "aud-tag-123"
SECRET = "hook-secret"


Keys = JwksServer


class Api:
    """The API server with a recording fake of the daemon's side."""

    def __init__(
        self, keys: Keys, *, access: bool = True, secret: str | None = SECRET, emails: list[str] | None = None
    ):
        self.triggers: list[str] = []
        self.health = True
        self.metrics = Metrics()
        config = AccessConfig(team_domain=TEAM, audience=AUD, jwks_url=keys.url, allowed_emails=emails or [])
        self.ctx = ApiContext(
            status_json=lambda: b'{"phase": "InSync"}',
            healthy=lambda: self.health,
            trigger=self.triggers.append,
            metrics=self.metrics,
            access=AccessVerifier(config) if access else None,
            webhook=WebhookVerifier(secret, branch="main"),
        )
        self.port = free_port()
        self.server = ApiServer(f"127.0.0.1:{self.port}", self.ctx, client_timeout=2)
        self.server.start()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
        return reply.status, data

    def sync(self, token: str | None) -> int:
        return self.request("POST", "/sync", headers={"Cf-Access-Jwt-Assertion": token} if token else {})[0]

    def hook(
        self, payload: bytes, *, sign: str | None = SECRET, delivery: str = "d1", content_type: str = "application/json"
    ) -> int:
        headers = {"Content-Type": content_type, "X-GitHub-Event": "push", "X-GitHub-Delivery": delivery}
        if sign:
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(sign.encode(), payload, hashlib.sha256).hexdigest()
        return self.request("POST", "/hooks/github", payload, headers)[0]


@pytest.fixture(scope="module")
def keys() -> Iterator[JwksServer]:
    k = JwksServer(team=TEAM, audience=AUD)
    yield k
    k.stop()


@pytest.fixture
def api(keys: Keys) -> Iterator[Api]:
    a = Api(keys)
    yield a
    a.server.shutdown()
    a.server.server_close()


def test_a_valid_access_token_triggers_a_pass(api: Api, keys: Keys) -> None:
    assert api.sync(keys.token()) == 202
    assert api.triggers == ["api"]


def _hs256_with_public_key(keys: Keys) -> str:
    public = keys.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    header = {"alg": "HS256", "kid": keys.kid, "typ": "JWT"}
    now = int(time.time())
    payload = {"aud": AUD, "iss": TEAM, "iat": now, "exp": now + 300}

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())
    return (signing + b"." + b64(hmac.new(public, signing, hashlib.sha256).digest())).decode()


def _tampered(keys: Keys) -> str:
    header, payload, signature = keys.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["email"] = "attacker@evil.io"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


BAD_TOKENS = {
    "expired": lambda k: k.token(exp=int(time.time()) - 600, iat=int(time.time()) - 900),
    "not yet valid": lambda k: k.token(nbf=int(time.time()) + 600),
    "wrong aud": lambda k: k.token(aud="someone-else"),
    "wrong iss": lambda k: k.token(iss="https://evil.cloudflareaccess.com"),
    "unknown kid": lambda k: k.token(kid="kid-unknown"),
    "alg none": lambda k: jwt.encode({"aud": AUD, "iss": TEAM}, None, algorithm="none", headers={"kid": k.kid}),
    "hs256 with the public key": _hs256_with_public_key,
    "tampered payload": _tampered,
    "garbage": lambda k: "not.a.jwt",
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_a_bad_access_token_is_refused_with_a_fixed_body(api: Api, keys: Keys, name: str) -> None:
    status, body = api.request("POST", "/sync", headers={"Cf-Access-Jwt-Assertion": BAD_TOKENS[name](keys)})
    assert status == 401 and json.loads(body) == {"error": "unauthorized"}
    assert api.triggers == []


def test_a_missing_header_is_refused(api: Api) -> None:
    assert api.sync(None) == 401


def test_an_unknown_kid_refetches_the_jwks(api: Api, keys: Keys) -> None:
    before = keys.fetches
    api.sync(keys.token(kid="kid-unknown"))
    assert keys.fetches > before


def test_an_email_outside_the_allowed_list_is_forbidden(keys: Keys) -> None:
    api = Api(keys, emails=["ops@dreichor.io"])
    try:
        assert api.sync(keys.token(email="intern@dreichor.io")) == 403
        assert api.sync(keys.token()) == 202
    finally:
        api.server.shutdown()


def test_sync_without_access_configured_is_forbidden(keys: Keys) -> None:
    api = Api(keys, access=False)
    try:
        assert api.sync(keys.token()) == 403 and api.triggers == []
    finally:
        api.server.shutdown()


def test_a_signed_push_to_the_branch_triggers_a_pass(api: Api) -> None:
    assert api.hook(b'{"ref": "refs/heads/main"}') == 202
    assert api.triggers == ["webhook"]


def test_bad_webhooks_trigger_nothing(api: Api, keys: Keys) -> None:
    assert api.hook(b'{"ref": "refs/heads/main"}', sign="wrong") == 401
    assert api.hook(b'{"ref": "refs/heads/main"}', sign=None) == 401
    assert api.hook(b'{"ref": "refs/heads/feature"}', delivery="d2") == 200
    assert api.hook(b'{"ref": "refs/heads/main"}', delivery="d3") == 202
    assert api.hook(b'{"ref": "refs/heads/main"}', delivery="d3") == 200  # replayed
    assert api.hook(b'{"ref": ', delivery="d4") == 400
    assert api.hook(b"ref=refs/heads/main", delivery="d5", content_type="application/x-www-form-urlencoded") == 400
    assert api.triggers == ["webhook"]


def test_a_webhook_without_a_secret_is_forbidden(keys: Keys) -> None:
    api = Api(keys, secret=None)
    try:
        assert api.hook(b'{"ref": "refs/heads/main"}') == 403
    finally:
        api.server.shutdown()


def test_a_body_over_one_mebibyte_is_refused_before_it_is_read(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\n\r\n"
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.0 413")


def test_an_idle_client_is_dropped(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(b"POST /sync HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        assert sock.recv(4096) == b""  # the server hung up
        assert 1.5 <= time.monotonic() - started < 15
    assert api.request("GET", "/healthz")[0] == 200


def test_a_thousand_bad_requests_leave_the_api_serving(api: Api, keys: Keys) -> None:
    for n in range(1000):
        status, _ = api.request(
            "POST",
            "/sync" if n % 2 else "/hooks/github",
            b"x" * (n % 7),
            {"Cf-Access-Jwt-Assertion": "bad", "Content-Type": "text/plain"},
        )
        assert status in (400, 401)
    assert api.sync(keys.token()) == 202
    assert api.request("GET", "/healthz")[0] == 200


def test_metrics_parse_and_count_refusals(api: Api) -> None:
    api.sync(None)
    status, body = api.request("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert status == 200
    refused = families["dreichor_api_auth_failures"].samples
    assert any(s.labels == {"endpoint": "/sync", "reason": "Unauthorized"} and s.value == 1 for s in refused)
    for name in (
        "dreichor_passes",
        "dreichor_pass_duration_seconds",
        "dreichor_rollbacks",
        "dreichor_drift_repairs",
        "dreichor_fetch_failures",
        "dreichor_last_success_timestamp_seconds",
    ):
        assert name in families


def test_healthz_follows_the_daemon_and_status_serves_the_file(api: Api, keys: Keys) -> None:
    assert api.request("GET", "/healthz")[0] == 200
    api.health = False
    assert api.request("GET", "/healthz")[0] == 503
    token = {"Cf-Access-Jwt-Assertion": keys.token()}
    assert json.loads(api.request("GET", "/status", headers=token)[1]) == {"phase": "InSync"}


@pytest.mark.parametrize("path", ["/", "/status", "/history", "/history?limit=3"])
def test_reads_need_the_access_token_when_access_is_set(api: Api, keys: Keys, path: str) -> None:
    assert api.request("GET", path)[0] == 401
    assert api.request("GET", path, headers={"Cf-Access-Jwt-Assertion": "not.a.jwt"})[0] == 401
    assert api.request("GET", path, headers={"Cf-Access-Jwt-Assertion": keys.token()})[0] == 200


def test_reads_by_an_email_outside_the_allowed_list_are_forbidden(keys: Keys) -> None:
    api = Api(keys, emails=["ops@dreichor.io"])
    try:
        assert api.request("GET", "/", headers={"Cf-Access-Jwt-Assertion": keys.token(email="x@y.io")})[0] == 403
    finally:
        api.server.shutdown()


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_health_and_metrics_stay_open(api: Api, path: str) -> None:
    assert api.request("GET", path)[0] == 200


def test_without_access_the_page_is_open_and_served_with_its_policy(keys: Keys) -> None:
    api = Api(keys, access=False)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
        conn.request("GET", "/?refresh=1")
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200
        assert reply.getheader("Content-Type") == "text/html; charset=utf-8"
        assert (reply.getheader("Content-Security-Policy") or "").startswith("default-src 'none'")
        assert b"<html" in body
        status, history = api.request("GET", "/history?limit=2")
        assert status == 200 and json.loads(history) == {"snapshots": [], "events": [], "chain": "ok"}
        for bad in ("0", "abc", "1001", "-1"):
            status, answer = api.request("GET", f"/history?limit={bad}")
            assert status == 400 and "limit must be" in json.loads(answer)["error"]
    finally:
        api.server.shutdown()
