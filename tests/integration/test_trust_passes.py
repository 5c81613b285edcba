"""The trust policy in full reconcile passes: a bad revoked_keys file stops every pass; signers in words."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from testbed import ControllerHost, ssh_fingerprint


@pytest.fixture
def host(controller_host: ControllerHost) -> ControllerHost:
    """A host whose prod controller has deployed image A."""
    assert controller_host.sync() == 0
    return controller_host


def _with_revoked_keys(host: ControllerHost) -> Path:
    config = host.configs["prod"]
    config.write_text(
        config.read_text().replace(
            "trust: {allowed_signers: trust/allowed_signers}",
            "trust: {allowed_signers: trust/allowed_signers, revoked_keys: trust/revoked_keys}",
        )
    )
    return config.parent / "trust" / "revoked_keys"


def test_an_unreadable_revoked_keys_line_refuses_every_pass_until_fixed(
    host: ControllerHost, images: dict[str, str]
) -> None:
    revoked = _with_revoked_keys(host)
    revoked.write_text("# retired\nthe old deploy key\n")
    host.publish("b", prod=images["healthy-b"])
    for _ in range(2):
        assert host.sync() == 3
        reason = host.status().last_attempt.reason  # type: ignore[union-attr]
        assert f"{revoked} line 2: " in reason
    assert host.image() == images["healthy-a"]
    revoked.write_text("# retired\n0x968479A1AFF927E37D1A566BB5690EEEBB952194  # an old key\n")
    assert host.sync() == 0 and host.image() == images["healthy-b"]


def test_status_audit_and_logs_name_the_signer_in_the_same_words(
    host: ControllerHost, images: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    words = f"{host.key.principal} (ssh-ed25519 {ssh_fingerprint(host.key)})"
    caplog.set_level(logging.INFO, logger="dreichor.verification")
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0  # the command line's own log handler leaves pytest's in place
    assert host.status().applied.signer == words  # type: ignore[union-attr]
    applied = [event for event in host.audit() if event.get("event") == "applied"]
    assert applied and applied[-1]["signer"] == words
    assert [getattr(r, "signer", None) for r in caplog.records] == [words]
