"""The loopback API over real HTTP: JWT and webhook authentication, hostile clients, metrics, health."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import signal
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from controller.api.routes import AccessVerifier, ApiContext, ApiServer, Guards, WebhookVerifier
from controller.api.server import Limits
from controller.daemon.metrics import Metrics
from controller.model.config import AccessConfig
from controller.records.deliveries import DeliveryMemory
from testbed import ControllerHost, JwksServer, free_port, wait_for

TEAM = "https://dreichor.cloudflareaccess.com"
AUD = "aud-tag-123"
SECRET = "hook-secret"


Keys = JwksServer


class Api:
    """The API server with a recording fake of the daemon's side."""

    def __init__(
        self,
        keys: Keys,
        *,
        access: bool = True,
        secret: str | None = SECRET,
        emails: list[str] | None = None,
        limits: Limits | None = None,
        deliveries: DeliveryMemory | None = None,
    ):
        self.triggers: list[str] = []
        self.keys = keys
        self.health = True
        self.metrics = Metrics()
        config = AccessConfig(team_domain=TEAM, audience=AUD, jwks_url=keys.url, allowed_emails=emails or [])
        self.ctx = ApiContext(
            status_json=lambda: b'{"phase": "InSync"}',
            healthy=lambda: self.health,
            trigger=self.triggers.append,
            metrics=self.metrics,
            guards=Guards(
                access=AccessVerifier(config) if access else None,
                webhook=WebhookVerifier(secret, branch="main", deliveries=deliveries),
            ),
        )
        self.port = free_port()
        self.server = ApiServer(f"127.0.0.1:{self.port}", self.ctx, limits=limits or Limits(deadline=2))
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


def test_thirty_junk_kids_cost_at_most_two_jwks_fetches_and_a_valid_token_still_passes(keys: Keys) -> None:
    api = Api(keys)
    try:
        before = keys.fetches
        for n in range(30):
            assert api.sync(keys.token(kid=f"junk-{n}")) == 401
        assert keys.fetches - before <= 2
        started = time.monotonic()
        assert api.sync(keys.token()) == 202
        assert time.monotonic() - started < 2
    finally:
        api.server.shutdown()
        api.server.server_close()


def test_the_pyjwt_floor_has_the_jwks_refetch_cooldown() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    floor = next(d for d in project["dependencies"] if d.startswith("PyJWT>="))
    version = tuple(int(part) for part in floor.split(">=")[1].split(",")[0].split("."))
    assert version >= (2, 14)  # PyJWKClient's cooldown_duration arrived in 2.14.0


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
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n"
            b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\nContent-Length: 2000000\r\n\r\n"
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def test_an_idle_client_is_dropped(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(b"POST /sync HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        assert _answer_within(sock, 15).startswith(b"HTTP/1.1 408")  # then the server hung up
        assert 1.5 <= time.monotonic() - started < 4
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
        nothing = {"days": 30, "deployments": 0, "rolled_back": 0, "change_failure_rate": None}
        nothing |= {"lead_time_seconds": None, "time_to_restore_seconds": None}
        expected = {"snapshots": [], "events": [], "chain": "ok", "figures": nothing}
        assert status == 200 and json.loads(history) == expected
        for bad in ("0", "abc", "1001", "-1"):
            status, answer = api.request("GET", f"/history?limit={bad}")
            assert status == 400 and "limit must be" in json.loads(answer)["error"]
    finally:
        api.server.shutdown()


# -- issue 13, the API: each item reproduced over real sockets -----------------------------------


def _partial(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head)
    return sock


def _answer_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sends before it closes, or b"" when it says nothing within ``seconds``."""
    sock.settimeout(seconds)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _healthz_seconds(api: Api) -> float:
    started = time.monotonic()
    assert api.request("GET", "/healthz")[0] == 200
    return time.monotonic() - started


class _Slowloris:
    """``count`` clients that start a request and then send one header byte every ``every`` seconds."""

    def __init__(self, port: int, *, count: int, every: float = 0.5) -> None:
        self.port, self.count, self.every = port, count, every
        self.open: list[socket.socket] = []
        self.dropped = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(self.count):
            if self.stop.is_set():
                return
            try:
                self.open.append(_partial(self.port, b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: "))
            except OSError:
                self.dropped += 1
        while not self.stop.wait(self.every):
            for sock in list(self.open):
                try:
                    sock.send(b"y")
                except OSError:
                    self.open.remove(sock)
                    sock.close()
                    self.dropped += 1

    def __enter__(self) -> _Slowloris:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for sock in self.open:
            sock.close()


def test_hundreds_of_slow_clients_hold_no_thread_each_and_healthz_answers(api: Api) -> None:
    before = threading.active_count()
    peak, answered = before, []
    with _Slowloris(api.port, count=300) as clients:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            peak = max(peak, threading.active_count())
            answered.append(_healthz_seconds(api))
            time.sleep(0.2)
    assert peak <= before + 20, f"{peak - before} threads for 300 slow clients"
    assert max(answered) < 1.5, f"healthz took {max(answered):.2f} s"
    assert clients.dropped >= 250  # the 2 s whole-request deadline dropped them, a byte a while does not help


def test_a_client_trickling_a_byte_at_a_time_is_dropped_at_the_deadline(api: Api) -> None:
    sock = _partial(api.port, b"GET /status HTTP/1.1\r\n")
    started = time.monotonic()
    dropped = None
    with sock:
        for n in range(40):  # 8 s of one byte every 0.2 s, far under the 2 s receive timeout
            try:
                sock.sendall(b"X-Pad-%d: y\r\n" % n)
            except OSError:
                dropped = time.monotonic() - started
                break
            time.sleep(0.2)
    assert dropped is not None and dropped < 4  # the test server's deadline is 2 s for the whole request


@pytest.mark.parametrize(
    "head",
    [
        b"POST /sync HTTP/1.1\r\nHost: x\r\nCf-Access-Jwt-Assertion: bad\r\nContent-Length: 1048576\r\n\r\n",
        b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n"
        b"Content-Length: 1048576\r\n\r\n",  # no signature header: refused before the body
    ],
)
def test_an_unauthenticated_body_is_never_waited_for(api: Api, head: bytes) -> None:
    with _partial(api.port, head) as sock:
        answer = _answer_within(sock, 1.0)
    assert answer.split(b"\r\n")[0].endswith((b"401 Unauthorized", b"401 "))
    assert api.triggers == []


def test_a_webhook_without_an_event_header_is_not_a_push(api: Api) -> None:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature, "X-GitHub-Delivery": "e1"}
    assert api.request("POST", "/hooks/github", body, headers)[0] == 400
    assert api.triggers == []


def test_a_captured_delivery_replayed_under_a_new_delivery_id_is_refused(api: Api) -> None:
    body = b'{"ref": "refs/heads/main", "after": "1234"}'
    assert api.hook(body, delivery="first") == 202
    assert api.hook(body, delivery="second") == 200  # same signed body, new id: a replay
    assert api.triggers == ["webhook"]


def test_a_delivery_replayed_after_a_restart_triggers_no_pass(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "webhook-deliveries.json"
    body = b'{"ref": "refs/heads/main", "after": "5678"}'
    before = Api(keys, deliveries=DeliveryMemory(path))
    try:
        assert before.hook(body, delivery="captured") == 202
    finally:
        before.server.shutdown()
        before.server.server_close()
    after = Api(keys, deliveries=DeliveryMemory(path))  # the daemon restarted: the memory is read from state/
    try:
        assert after.hook(body, delivery="captured") == 200
        assert after.hook(body, delivery="captured-again") == 200
        assert after.triggers == []  # no pass, so no backoff cut short either
    finally:
        after.server.shutdown()
        after.server.server_close()


def test_a_ping_is_answered_without_a_pass(api: Api) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature,
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "p1",
    }
    assert api.request("POST", "/hooks/github", body, headers)[0] == 200
    assert api.triggers == []


def _hook_request(port: int, secret: str, n: int) -> int:
    body = json.dumps({"ref": "refs/heads/main", "after": f"{n:040x}"}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": f"delivery-{n}",
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/hooks/github", body=body, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def _sync_request(port: int, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/sync", headers={"Cf-Access-Jwt-Assertion": token})
    status = conn.getresponse().status
    conn.close()
    return status


def _access_config(port: int, keys: Keys, emails: list[str]) -> str:
    return (
        f"api: {{listen: '127.0.0.1:{port}', access: {{team_domain: '{TEAM}', audience: {AUD},"
        f" jwks_url: '{keys.url}', allowed_emails: {json.dumps(emails)}}}}}\n"
    )


def _logged(host: ControllerHost, daemon: subprocess.Popen[str], message: str) -> int:
    lines = [json.loads(line) for line in host.daemon_output(daemon)[0].splitlines() if line.startswith("{")]
    return sum(1 for line in lines if line["msg"] == message)


def test_sighup_applies_access_emails_and_the_webhook_secret_at_once(
    controller_host: ControllerHost, keys: Keys
) -> None:
    host, port = controller_host, free_port()
    config = host.configs["prod"]
    base = "\n".join(line for line in config.read_text().splitlines() if not line.startswith("api:"))
    base = base.replace("interval: 1,", "interval: 3600,") + "\n"
    config.write_text(base + _access_config(port, keys, ["ops@dreichor.io"]))
    dotenv = host.root / "prod/deploy-agent/.env"
    plain = dotenv.read_text()
    dotenv.write_text(plain + "GITHUB_WEBHOOK_SECRET=old-secret\n")
    daemon = host.start_daemon()
    try:
        wait_for(lambda: host.status().phase == "InSync", what="the first deploy")
        ops, boss = keys.token(email="ops@dreichor.io"), keys.token(email="boss@dreichor.io")
        assert _sync_request(port, ops) == 202
        assert _sync_request(port, boss) == 403
        assert _hook_request(port, "old-secret", 1) == 202

        config.write_text(base + _access_config(port, keys, ["boss@dreichor.io"]))
        dotenv.write_text(plain + "GITHUB_WEBHOOK_SECRET=new-secret\n")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: _logged(host, daemon, "config reloaded") == 1, what="the reload")
        assert _sync_request(port, ops) == 403  # removed from allowed_emails: no more syncs
        assert _sync_request(port, boss) == 202
        assert _hook_request(port, "old-secret", 2) == 401  # the rotated secret no longer works
        assert _hook_request(port, "new-secret", 3) == 202

        config.write_text(base + _access_config(free_port(), keys, ["ops@dreichor.io"]))
        daemon.send_signal(signal.SIGHUP)
        restart = "config reload refused: api.listen changed; restart the controller to move the API"
        wait_for(lambda: _logged(host, daemon, restart) == 1, what="the refused reload")
        assert _logged(host, daemon, "config reloaded") == 1  # never "reloaded" while keeping the old guards
        assert _sync_request(port, ops) == 403
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_at_most_sixteen_requests_run_at_once_and_healthz_still_answers(api: Api) -> None:
    release, running, peak = threading.Event(), [0], [0]
    lock = threading.Lock()

    def slow_status() -> bytes:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(timeout=30)
        with lock:
            running[0] -= 1
        return b"{}"

    api.ctx.status_json = slow_status
    api.server.limits = Limits(deadline=30)  # the queued ones wait for a slot, not for the deadline
    token = {"Cf-Access-Jwt-Assertion": api.keys.token()}
    answers: list[int] = []
    callers = [
        threading.Thread(target=lambda: answers.append(api.request("GET", "/status", headers=token)[0]))
        for _ in range(40)
    ]
    for caller in callers:
        caller.start()
    wait_for(lambda: peak[0] == 16, timeout=10, what="16 requests in flight")
    time.sleep(0.5)
    assert peak[0] == 16
    assert _healthz_seconds(api) < 1  # answered by the loop, not a worker
    release.set()
    for caller in callers:
        caller.join(timeout=30)
    assert answers == [200] * 40


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"DELETE /sync HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GET http://[::1/status HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),  # an unclosed IPv6 literal
        (b"GET http://[::1]:1/healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),  # absolute form is fine
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_broken_requests_get_a_plain_answer(
    api: Api, raw: bytes, status: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before taking it all
            sock.sendall(raw)
        answer = _answer_within(sock, 5)
    assert answer.split(b"\r\n")[0].split(b" ")[1] == status
    assert not [r for r in caplog.records if r.exc_info], "a broken request logged a traceback"


# -- issue 21, 1: the connection cap cannot be filled by anyone ----------------------------------

STALLED_HOOK = (
    b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n"
    b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\nContent-Length: 1000\r\n\r\n{"  # and the rest never comes
)
KEEP_ALIVE = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"


def _open(port: int, count: int, head: bytes) -> list[socket.socket]:
    socks = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if head is STALLED_HOOK or n % 2 == 0:  # half the idle ones never say a word
            sock.sendall(head)
        socks.append(sock)
    return socks


def _timed(call: Callable[[], int]) -> tuple[int, float]:
    started = time.monotonic()
    return call(), time.monotonic() - started


@pytest.mark.parametrize("order", ["stalled first", "idle first"])
def test_stalled_webhooks_and_idle_connections_leave_healthz_and_a_signed_delivery_answered(
    keys: Keys, order: str
) -> None:
    api = Api(keys, limits=Limits())  # the daemon's limits: 10 s deadline, 256 connections
    socks: list[socket.socket] = []
    try:
        kinds = [STALLED_HOOK, KEEP_ALIVE] if order == "stalled first" else [KEEP_ALIVE, STALLED_HOOK]
        for head in kinds:
            socks += _open(api.port, 256, head)
        time.sleep(0.5)  # let the server take them all in
        health, health_seconds = _timed(lambda: api.request("GET", "/healthz")[0])
        body = b'{"ref": "refs/heads/main", "after": "cap"}'
        hook, hook_seconds = _timed(lambda: api.hook(body, delivery="under-load"))
        assert (health, hook) == (200, 202)
        assert health_seconds < 2 and hook_seconds < 2, f"healthz {health_seconds:.2f} s, hook {hook_seconds:.2f} s"
        assert api.triggers == ["webhook"]
    finally:
        for sock in socks:
            sock.close()
        api.server.shutdown()
        api.server.server_close()


def test_a_connection_that_says_nothing_is_closed_after_the_idle_time(keys: Keys) -> None:
    api = Api(keys, limits=Limits(idle=1.0, deadline=10))
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            started = time.monotonic()
            assert _answer_within(sock, 5) == b""
            assert time.monotonic() - started < 2.5  # closed at the idle time, not the 10 s deadline
    finally:
        api.server.shutdown()
        api.server.server_close()


def test_the_deadline_runs_from_the_first_byte_to_the_last_byte_of_the_body(keys: Keys) -> None:
    api = Api(keys, limits=Limits(idle=5.0, deadline=1.0))
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            time.sleep(1.5)  # idle before the first byte: the idle time, not the request's deadline
            sock.sendall(STALLED_HOOK)
            started = time.monotonic()
            answer = _answer_within(sock, 5)
        assert answer.startswith(b"HTTP/1.1 408")
        assert 0.8 < time.monotonic() - started < 2.5
    finally:
        api.server.shutdown()
        api.server.server_close()


def test_shutdown_with_open_idle_half_sent_and_busy_connections_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopping the daemon closes every connection quietly: no CancelledError traceback in the log."""
    from http import HTTPStatus  # noqa: PLC0415 - only this test builds its own app

    from controller.api.server import BoundedServer, Request, Response  # noqa: PLC0415

    class _SlowApp:
        def screen(self, request: Request) -> int:
            return 0

        def handle(self, request: Request) -> Response:
            time.sleep(1)
            return Response(HTTPStatus.OK, b"{}", {"Content-Type": "application/json"})

    server = BoundedServer("127.0.0.1", 0, _SlowApp())
    server.start()
    address = ("127.0.0.1", server.server_address[1])
    idle, half, busy = (socket.create_connection(address) for _ in range(3))
    half.sendall(b"GET / HTTP/1.1\r\nHo")
    busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # all three are in the loop: waiting, reading the head, in the app
    with caplog.at_level("DEBUG"):
        server.shutdown()
        server.server_close()
    for connection in (idle, half, busy):
        connection.close()
    logged = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert logged == [], [r.getMessage() for r in logged]
