"""The config model: defaults, strictness and path resolution."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.errors import ConfigError
from controller.model.config import HostPaths, load_config, parse_config

MINIMAL = {
    "environment": "prod",
    "source": {"url": "file:///srv/manifests.git"},
    "trust": {"allowed_signers": "trust/allowed_signers"},
}


def test_a_minimal_config_gets_every_default() -> None:
    config = parse_config(dict(MINIMAL), base=Path("/etc/dreichor"))
    assert config.root == "/opt/dreichor"
    assert (config.source.branch, config.source.interval) == ("main", 60)
    assert config.trust.mode == "first-parent"
    assert config.trust.allowed_signers == "/etc/dreichor/trust/allowed_signers"
    assert config.image.repository == "ghcr.io/ceerkle/dreichor-trading/runtime"
    assert (config.docker.url, config.docker.mode) == ("unix:///var/run/docker.sock", "container")
    assert (config.health.timeout, config.health.stable) == (60, 10)
    assert config.listen == "127.0.0.1:3006"


def test_dev_listens_on_3005_by_default() -> None:
    assert parse_config({**MINIMAL, "environment": "dev"}, base=Path("/")).listen == "127.0.0.1:3005"


def test_swarm_mode_is_opt_in() -> None:
    assert parse_config({**MINIMAL, "docker": {"mode": "swarm"}}, base=Path("/")).docker.mode == "swarm"


def test_paths_derive_from_root_and_environment() -> None:
    paths = HostPaths(Path("/opt/dreichor"), "dev")
    assert paths.status == Path("/opt/dreichor/dev/deploy-agent/state/status.json")
    assert paths.dotenv == Path("/opt/dreichor/dev/deploy-agent/.env")
    assert paths.audit_events == Path("/opt/dreichor/dev/volumes/audit-events")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "blue"}, "colour: unknown key"),
        ({"source": {"url": "x", "intervall": 5}}, "source.intervall: unknown key, did you mean 'interval'?"),
        ({"healht": {}}, "healht: unknown key, did you mean 'health'?"),
        ({"environment": "staging"}, "environment is 'staging': it must be 'dev' or 'prod'"),
        ({"source": {"url": "x", "interval": "60"}}, "source.interval must be a whole number, not '60'"),
        ({"source": {"url": "x", "interval": 0}}, "source.interval must be at least"),
        ({"api": {"listen": "0.0.0.0:3006"}}, "is not a loopback address"),
        ({"api": {"listen": "3006"}}, "must be host:port"),
        ({"trust": {}}, "trust.allowed_signers"),
        ({"docker": {"mode": "kubernetes"}}, "docker.mode"),
    ],
)
def test_a_bad_config_names_the_key(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)) as info:
        parse_config({**MINIMAL, **change}, base=Path("/"))
    assert "Input should" not in str(info.value)  # the project's words, not the validator's


def test_a_config_error_names_the_line_and_the_key_it_meant(tmp_path: Path) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text("environment: prod\nsource:\n  url: file:///x\n  intervall: 5\ntrust: {allowed_signers: a}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: source.intervall: unknown key, did you mean 'interval'? (line 4)"


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, base=Path("/"))
    for key in ("environment", "source", "trust"):
        assert key in str(info.value)


def test_trust_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "controller.yaml"
    path.parent.mkdir()
    path.write_text(
        "environment: dev\nsource: {url: 'file:///x'}\ntrust: {allowed_signers: trust/a, openpgp_keys: /abs/keys.asc}\n"
    )
    config = load_config(path)
    assert config.trust.allowed_signers == str(tmp_path / "agent" / "trust" / "a")
    assert config.trust.openpgp_keys == "/abs/keys.asc"
    assert config.trust.revoked_keys is None


def test_an_unreadable_or_unsafe_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "c.yaml").write_text("environment: dev\nenvironment: prod\n")
    with pytest.raises(ConfigError, match="duplicate key 'environment'"):
        load_config(tmp_path / "c.yaml")


def test_notify_and_github_are_optional_and_default_sensibly() -> None:
    raw = {**MINIMAL, "notify": {"urls": ["ntfys://ntfy.example/${TOPIC}"]}, "github": {"repository": "o/r"}}
    config = parse_config(raw, base=Path("/"))
    assert config.notify is not None and config.github is not None
    assert (config.notify.repeat, "applied" in config.notify.events) == (3600, True)
    assert config.github.api_url == "https://api.github.com"
    assert parse_config(dict(MINIMAL), base=Path("/")).notify is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"notify": {"events": ["deployed"]}}, "notify.events.0"),
        ({"notify": {"repeat": 5}}, "notify.repeat"),
        ({"github": {"repository": "not a repo"}}, "github.repository"),
        ({"github": {"repository": "o/r", "api_url": "http://github.example"}}, "must be https://"),
        (
            {"api": {"access": {"team_domain": "http://team.cloudflareaccess.com", "audience": "a"}}},
            "api.access.team_domain .* must be https://",
        ),
        (
            {
                "api": {
                    "access": {
                        "team_domain": "https://team.cloudflareaccess.com",
                        "audience": "a",
                        "jwks_url": "http://evil.example/certs",
                    }
                }
            },
            "api.access.jwks_url .* must be https://",
        ),
        ({"image": {"repository": "ceerkle/runtime"}}, "names no registry host: write it as host/path"),
        ({"image": {"repository": "runtime"}}, "names no registry host"),
    ],
)
def test_bad_notify_or_github_settings_are_refused(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, **section}, base=Path("/"))


@pytest.mark.parametrize(
    ("repository", "access"),
    [
        ("docker.io/ceerkle/runtime", {"team_domain": "https://t.cloudflareaccess.com", "audience": "a"}),
        ("localhost:5000/runtime", {"team_domain": "http://127.0.0.1:8080", "audience": "a"}),
        ("127.0.0.1:5000/runtime", {"team_domain": "https://t.example", "audience": "a", "jwks_url": "http://[::1]/c"}),
    ],
)
def test_a_registry_host_and_https_or_loopback_access_are_accepted(repository: str, access: dict[str, str]) -> None:
    raw = {**MINIMAL, "image": {"repository": repository}, "api": {"access": access}}
    assert parse_config(raw, base=Path("/")).image.repository == repository


GHA = "https://token.actions.githubusercontent.com"
KEYLESS_BASE: dict[str, object] = {
    "environment": "prod",
    "source": {"url": "file:///x"},
    "trust": {"allowed_signers": "trust/allowed_signers"},
}


def _image(image: dict[str, object], base: Path = Path("/host")) -> object:
    return parse_config({**KEYLESS_BASE, "image": image}, base=base).image


def test_keyless_identities_and_provenance_are_read_with_the_root_resolved_against_the_config_folder() -> None:
    identity = {"issuer": GHA, "subject_regexp": "https://github[.]com/o/r/.+"}
    image = _image(
        {
            "signatures": {"keyless": {"trusted_root": "trust/sigstore/trusted_root.json", "identities": [identity]}},
            "provenance": {"source_repository": "https://github.com/o/r", "identities": [identity]},
        }
    )
    assert image.signatures.keyless.trusted_root == "/host/trust/sigstore/trusted_root.json"  # type: ignore[attr-defined]
    assert image.signatures.keys == [] and image.provenance.source_ref is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("image", "complaint"),
    [
        ({"signatures": {}}, "name a key in image.signatures.keys, or image.signatures.keyless"),
        ({"signatures": {"keyless": {"trusted_root": "r.json", "identities": [{"issuer": GHA}]}}}, "exactly one of"),
        (
            {
                "signatures": {
                    "keyless": {
                        "trusted_root": "r.json",
                        "identities": [{"issuer": GHA, "subject": "a", "subject_regexp": "a"}],
                    }
                }
            },
            "exactly one of",
        ),
        (
            {
                "signatures": {
                    "keyless": {"trusted_root": "r.json", "identities": [{"issuer": GHA, "subject_regexp": "("}]}
                }
            },
            "not a valid pattern",
        ),
        ({"signatures": {"keyless": {"trusted_root": "r.json", "identities": []}}}, "identities"),
        (
            {
                "provenance": {
                    "source_repository": "https://github.com/o/r",
                    "identities": [{"issuer": GHA, "subject": "s"}],
                }
            },
            "provenance needs image.signatures.keyless",
        ),
        (
            {
                "signatures": {
                    "keyless": {"trusted_root": "r.json", "identities": [{"issuer": GHA, "subject": "s", "sub": 1}]}
                }
            },
            "unknown key",
        ),
    ],
)
def test_a_keyless_config_that_cannot_mean_one_thing_is_refused(image: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        _image(image)
