"""The quarantine key's host digest, pinned: what earlier releases computed must still be recognised.

A quarantine is stored as a key that includes the host digest; a digest that changes on an upgrade
silently lifts every quarantine, and the release it held is tried again.  The expected values were
computed by the releases themselves (their ``controller.reconcile.host_digest``, today's
``controller.reconcile.quarantine.host_digest``, run on these configs): cd76640 (files only, before
keyless signatures) and 73b9bd7 (which also hashed the whole ``image`` and ``approvals`` settings).
The files named do not exist; the digest covers that too.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from controller.model.config import parse_config
from controller.reconcile.quarantine import earlier_host_digests, host_digest
from controller.records.status import QuarantineKey

GHA = "https://token.actions.githubusercontent.com"
BASE = Path("/nonexistent/prod/deploy-agent")
REPOSITORY = "registry.example/team/runtime"
COMMON = {
    "environment": "prod",
    "root": "/nonexistent",
    "source": {"url": "https://example.com/m.git"},
    "trust": {"allowed_signers": "trust/allowed_signers"},
    "image": {"repository": REPOSITORY},
}
KEYLESS = {
    "trusted_root": "trust/trusted_root.json",
    "identities": [{"issuer": GHA, "subject_regexp": "https://github.com/o/r/.+"}],
}
PROVENANCE = {
    "source_repository": "https://github.com/o/r",
    "source_ref": "refs/heads/main",
    "identities": [{"issuer": GHA, "subject": "https://github.com/o/r/.github/workflows/release.yml@refs/heads/main"}],
}
CASES = {
    "plain": COMMON,
    "keys+approvals": {
        **COMMON,
        "image": {"repository": REPOSITORY, "signatures": {"keys": ["trust/cosign.pub"]}},
        "approvals": {"threshold": 2, "approvers": "trust/approvers"},
    },
    "keyless+provenance": {
        **COMMON,
        "image": {
            "repository": REPOSITORY,
            "signatures": {"keys": ["trust/cosign.pub"], "keyless": KEYLESS},
            "provenance": PROVENANCE,
        },
    },
}


@pytest.mark.parametrize(
    ("case", "now", "cd76640", "r73b9bd7"),
    [
        ("plain", "6e36a46477d395fb", "e36b24aafeba67ca", "4be44f70a5be5c03"),
        ("keys+approvals", "2b6629c852f04ef1", "470df31331f26606", "b8ec1d960a3cd421"),
        ("keyless+provenance", "ecd63bb2a40f1f94", None, "4c247b66ed1d89b3"),  # cd76640 had no keyless
    ],
)
def test_the_host_digest_is_recognised_as_each_release_computed_it(
    case: str, now: str, cd76640: str | None, r73b9bd7: str
) -> None:
    config = parse_config(CASES[case], base=BASE)
    assert host_digest(config) == now
    earlier = earlier_host_digests(config)
    assert r73b9bd7 == earlier[1]
    if cd76640 is not None:
        assert cd76640 == earlier[0]


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("image", "repository"), "registry.example/team/other"),
        (("trust", "mode"), "head"),
        (("image", "provenance", "source_ref"), "refs/heads/release"),
        (("image", "signatures", "keyless", "identities"), [{"issuer": GHA, "subject": "https://github.com/o/r/x"}]),
    ],
)
def test_a_setting_a_verdict_depends_on_changes_the_digest(where: tuple[str, ...], value: object) -> None:
    raw = copy.deepcopy(CASES["keyless+provenance"])
    before = host_digest(parse_config(raw, base=BASE))
    section: dict[str, object] = raw
    for key in where[:-1]:
        section = section[key]  # type: ignore[assignment]
    section[where[-1]] = value
    assert host_digest(parse_config(raw, base=BASE)) != before


def test_a_setting_no_verdict_depends_on_changes_nothing() -> None:
    raw = copy.deepcopy(CASES["keyless+provenance"])
    before = host_digest(parse_config(raw, base=BASE))
    raw["health"] = {"timeout": 300}  # a rolled-back release is tried again with `sync --force`, not by this
    raw["source"] = {"url": "https://example.com/m.git", "interval": 30}
    assert host_digest(parse_config(raw, base=BASE)) == before


@pytest.mark.parametrize(
    "stored",
    [
        "content:" + "5" * 64,  # a refusal or rollback of a desired container, as every release wrote it
        "a" * 40 + ":0123456789abcdef",  # a head refused before its content was read, with the host digest
    ],
)
def test_a_stored_quarantine_key_reads_back_as_it_was_written(stored: str) -> None:
    key = QuarantineKey.parse(stored)
    assert key is not None
    assert str(key) == stored
    assert key.holds(stored)
    assert not key.holds(stored[:-1] + "0")


def test_a_quarantine_key_is_described_for_people_without_its_prefix() -> None:
    content = QuarantineKey.of_content("5" * 64).describe(head="a" * 40)
    head = QuarantineKey.of_head("b" * 40, "0123456789abcdef").describe(head=None)
    assert content.startswith(f"the content of {'a' * 12} (desired container sha256:{'5' * 16}…)")
    assert head.startswith(f"commit {'b' * 12} (refused before its content was read)")
    assert "content:" not in content
    assert QuarantineKey.parse(None) is None
