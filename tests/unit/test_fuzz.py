"""Hostile input at every front door: only the controller's own refusals may come out.

Bounded so CI stays quick; ``DREICHOR_FUZZ_EXAMPLES=20000`` runs longer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.api.routes import AccessVerifier, AuthError, WebhookVerifier
from controller.config import AccessConfig, HostPaths, load_config
from controller.contract import desired_from_bytes
from controller.errors import ConfigError, Refused
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


HOOK = WebhookVerifier("secret", branch="main")
ACCESS = AccessVerifier(
    AccessConfig(team_domain="https://t.cloudflareaccess.com", audience="a", jwks_url="http://127.0.0.1:9/certs"),
    fetch_timeout=1,
)


@FUZZ
@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=80)))
def test_the_webhook_front_door_only_refuses(body: bytes, signature: str | None) -> None:
    with contextlib.suppress(AuthError):
        HOOK.verify(body, signature)


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
