"""Hostile input at every front door: only the controller's own refusals may come out.

Bounded so CI stays quick; ``DREICHOR_FUZZ_EXAMPLES=20000`` runs longer.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import uuid
from http import HTTPStatus
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.api.routes import AccessVerifier, ApiContext, AuthError, Guards, Routes, WebhookVerifier
from controller.api.server import Request
from controller.daemon.metrics import Metrics
from controller.errors import ConfigError, Refused
from controller.model.config import AccessConfig, HostPaths, load_config
from controller.model.desired import desired_from_bytes
from controller.records.status import read_status

EXAMPLES = int(os.environ.get("DREICHOR_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PATHS = HostPaths(Path("/opt/dreichor"), "prod")
REPO = "ghcr.io/ceerkle/dreichor-trading/runtime"

yaml_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
manifest_text = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(str.encode),
    st.dictionaries(
        st.sampled_from(["environment", "image", "env", "volumes", "ports", "name", "x"]), yaml_like, max_size=5
    ).map(lambda d: "\n".join(f"{k}: {v!r}" for k, v in d.items()).encode()),
)


@FUZZ
@given(manifest_text)
def test_manifests_are_valid_or_refused(data: bytes) -> None:
    with contextlib.suppress(Refused):
        desired_from_bytes(data, environment="prod", repository=REPO, paths=PATHS, dotenv=None)


# Plain scalars that resolve to a type the reader may fail to build: impossible dates, huge numbers.
unbuildable = st.one_of(
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,9})?Z?)?", fullmatch=True),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "1" * n),
    st.from_regex(r"[-+]?[0-9]{1,3}(:[0-9]{1,2}){1,3}(\.[0-9]*)?", fullmatch=True),
)


@FUZZ
@given(unbuildable, st.sampled_from(["env:\n  A: {}", "{}: x", "volumes: [{}]", "image: {}"]))
def test_values_the_reader_cannot_build_are_refused(value: str, shape: str) -> None:
    data = f"environment: prod\n{shape.format(value)}\n".encode()
    with contextlib.suppress(Refused):
        desired_from_bytes(data, environment="prod", repository=REPO, paths=PATHS, dotenv=None)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_configs_load_or_fail_with_a_config_error(data: bytes) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dreichor-fuzz-{os.getpid()}.yaml"
    path.write_bytes(data)
    try:
        with contextlib.suppress(ConfigError):
            load_config(path)
    finally:
        path.unlink(missing_ok=True)


@FUZZ
@given(st.binary(max_size=300))
def test_the_status_reader_never_raises(data: bytes) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dreichor-fuzz-status-{os.getpid()}.json"
    path.write_bytes(data)
    try:
        status = read_status(path)
        assert status is None or status.environment
    finally:
        path.unlink(missing_ok=True)


HOOK_SECRET = "secret"
METRICS = Metrics()
ACCESS = AccessVerifier(
    AccessConfig(team_domain="https://t.cloudflareaccess.com", audience="a", jwks_url="http://127.0.0.1:9/certs"),
    fetch_timeout=1,
)


def _sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _webhook(body: bytes, signature: str | None) -> tuple[HTTPStatus, list[str]]:
    """``POST /hooks/github`` through the API's routes: the answer and the passes it triggered."""
    triggered: list[str] = []
    ctx = ApiContext(
        status_json=lambda: None,
        healthy=lambda: True,
        trigger=triggered.append,
        metrics=METRICS,
        guards=Guards(access=None, webhook=WebhookVerifier(HOOK_SECRET, branch="main")),
    )
    headers = {"content-type": "application/json", "x-github-event": "push", "x-github-delivery": str(uuid.uuid4())}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    return Routes(ctx).handle(Request("POST", "/hooks/github", headers, body)).status, triggered


# Bodies that would trigger a pass if they were believed: pushes to the configured branch.
pushes = st.builds(
    lambda after, extra: json.dumps({"ref": "refs/heads/main", "after": after, "extra": extra}).encode(),
    st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
    st.text(max_size=40),
)


@st.composite
def forged_deliveries(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A body and a signature that is not the HMAC of that body under the secret."""
    body = draw(st.one_of(pushes, st.binary(max_size=300)))
    signature = draw(
        st.one_of(
            st.none(),
            st.text(max_size=80),
            st.from_regex(r"sha256=[0-9a-f]{64}", fullmatch=True),
            st.binary(min_size=1, max_size=20)  # HMAC pads a short key with zeros: b"secret\0" is the secret
            .filter(lambda key: key.rstrip(b"\0") != HOOK_SECRET.encode())
            .map(lambda key: _sign(key, body)),
            st.binary(max_size=60).filter(lambda other: other != body).map(lambda other: _sign(HOOK_SECRET, other)),
            st.just(_sign(HOOK_SECRET, body)[:-1]),
            st.just(_sign(HOOK_SECRET, body).removeprefix("sha256=")),
        )
    )
    return body, signature


@FUZZ
@given(forged_deliveries())
def test_no_forged_webhook_triggers_a_pass(delivery: tuple[bytes, str | None]) -> None:
    assert _webhook(*delivery) == (HTTPStatus.UNAUTHORIZED, [])


@FUZZ
@given(pushes)
def test_a_push_signed_with_the_secret_triggers_one_pass(body: bytes) -> None:
    assert _webhook(body, _sign(HOOK_SECRET, body)) == (HTTPStatus.ACCEPTED, ["webhook"])


@FUZZ
@given(
    st.one_of(
        st.none(),
        st.text(max_size=200),
        st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,20}"),
    )
)
def test_the_jwt_front_door_only_refuses(token: str | None) -> None:
    try:
        ACCESS.verify(token)
    except AuthError:
        return
    raise AssertionError("a fuzzed token was accepted")
