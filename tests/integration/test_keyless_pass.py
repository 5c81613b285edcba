"""Keyless image signatures and build provenance in the pass (docs/design.md §14), end to end.

The real engine, registry and git; images signed keylessly in both cosign formats by the test's own
Sigstore instance (``tests/sigstore_instance.py``), its ``trusted_root.json`` pinned on the host,
provenance attached as GitHub's artifact attestations push it.  Nothing but 127.0.0.1 is reached.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testbed import ControllerHost as Host
from tests.integration.test_image_pass import SignedHost
from tests.sigstore_instance import (
    GHA,
    SigstoreInstance,
    Tamper,
    attach_provenance,
    attest_classic,
    push_unpullable_image,
    sign_bundle_keyless,
    sign_classic_keyless,
)

SOURCE = "https://github.com/ceerkle/dreichor-trading"
RELEASE = f"{SOURCE}/.github/workflows/release.yml@refs/heads/main"
TAGGED = f"{SOURCE}/.github/workflows/release.yml@refs/tags/v1.4.2"
SHOWN = f"{RELEASE} (token.actions.githubusercontent.com)"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAG_RUN = {
    "repository": SOURCE,
    "ref": "refs/tags/v9",
    "commit": "f" * 40,
    "build_signer": TAGGED,
}  # what Fulcio writes


class KeylessHost(SignedHost):
    """The prod controller with ``image.signatures.keyless`` (and ``image.provenance``) over its own repository."""

    def __init__(self, host: Host, images: dict[str, str], tmp: Path, *, provenance: bool) -> None:
        super().__init__(host, images, tmp)
        self.instance = SigstoreInstance()
        agent = host.configs["prod"].parent
        self.root = self.instance.trusted_root(agent / "trust" / "sigstore" / "trusted_root.json")
        identities = [
            {"issuer": GHA, "subject": RELEASE},
            {"issuer": GHA, "subject_regexp": rf"{SOURCE}/\.github/workflows/release\.yml@refs/tags/v[0-9.]+"},
        ]
        image: dict[str, object] = {
            "repository": self.a.split("@")[0],
            "signatures": {"keyless": {"trusted_root": "trust/sigstore/trusted_root.json", "identities": identities}},
        }
        if provenance:
            image["provenance"] = {
                "source_repository": SOURCE,
                "source_ref": "refs/heads/main",
                "identities": [{"issuer": GHA, "subject_regexp": rf"{SOURCE}/.+"}],
            }
        lines = host.configs["prod"].read_text().splitlines()
        lines = [f"image: {json.dumps(image)}" if line.startswith("image:") else line for line in lines]
        host.configs["prod"].write_text("\n".join(lines) + "\n")

    def provenance(self, pinned: str, *, repository: str = SOURCE, ref: str = "refs/heads/main") -> None:
        attach_provenance(
            self.writer, pinned, self.instance, subject=RELEASE, repository=repository, ref=ref, commit=COMMIT
        )


@pytest.fixture
def keyless(controller_host: Host, images: dict[str, str], tmp_path: Path) -> KeylessHost:
    return KeylessHost(controller_host, images, tmp_path, provenance=True)


def test_keyless_signed_images_are_deployed_with_identity_and_source_recorded(
    keyless: KeylessHost, capsys: pytest.CaptureFixture[str]
) -> None:
    host = keyless.host
    sign_classic_keyless(keyless.writer, keyless.a, keyless.instance, subject=RELEASE)
    attest_classic(  # classic cosign attest here; image b below has GitHub's bundle attestation
        keyless.writer,
        keyless.a,
        keyless.instance,
        subject=RELEASE,
        repository=SOURCE,
        ref="refs/heads/main",
        commit=COMMIT,
    )
    host.publish("keyless image a", prod=keyless.a)
    code, out = keyless.cli(capsys, "plan", "--json")
    assert code == 0 and json.loads(out)["image_signer"] == SHOWN
    assert host.sync() == 0 and host.image() == keyless.a
    applied = host.status().applied
    assert applied is not None and applied.image_signer == SHOWN
    source = {"repository": SOURCE, "ref": "refs/heads/main", "commit": COMMIT, "build_signer": RELEASE}
    assert applied.image_source is not None and applied.image_source.model_dump() == source
    event = host.audit()[-1]
    assert (event["event"], event["image_signer"], event["image_source"]) == ("applied", SHOWN, source)
    code, out = keyless.cli(capsys, "verify-image", keyless.a, "--json")
    assert code == 0 and json.loads(out)["image_signer"] == SHOWN and json.loads(out)["image_source"] == source
    code, out = keyless.cli(capsys, "verify")
    assert code == 0 and f"image signed by {SHOWN}" in out

    # the bundle format, signed by a tag build the regexp identity admits
    sign_bundle_keyless(keyless.writer, keyless.b, keyless.instance, subject=TAGGED)
    keyless.provenance(keyless.b)
    host.publish("keyless image b", prod=keyless.b)
    assert host.sync() == 0 and host.image() == keyless.b
    applied = host.status().applied
    assert applied is not None and applied.image_signer == f"{TAGGED} (token.actions.githubusercontent.com)"


ATTACKS = {
    "wrong identity": lambda bed: sign_classic_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE.replace("release.yml", "ci.yml")
    ),
    "wrong issuer": lambda bed: sign_bundle_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, issuer="https://token.example"
    ),
    "wrong instance": lambda bed: sign_classic_keyless(bed.writer, bed.b, SigstoreInstance(), subject=RELEASE),
    "expired certificate": lambda bed: sign_classic_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(expired=True)
    ),
    "tampered SET": lambda bed: sign_classic_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(set=True)
    ),
    "tampered inclusion proof": lambda bed: sign_bundle_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(proof=True)
    ),
    "tampered signature": lambda bed: sign_bundle_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(signature=True)
    ),
    "tampered payload": lambda bed: sign_classic_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(payload=True)
    ),
    "another digest": lambda bed: sign_bundle_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(digest=bed.a.split("@")[1])
    ),
    "chain only in the annotation": lambda bed: sign_classic_keyless(
        bed.writer, bed.b, bed.instance, subject=RELEASE, tamper=Tamper(chain_outside_root=True)
    ),
    "provenance for another repository": lambda bed: (
        sign_classic_keyless(bed.writer, bed.b, bed.instance, subject=RELEASE),
        bed.provenance(bed.b, repository=f"{SOURCE}-fork"),
    ),
    "provenance for another ref": lambda bed: (
        sign_classic_keyless(bed.writer, bed.b, bed.instance, subject=RELEASE),
        bed.provenance(bed.b, ref="refs/heads/experiment"),
    ),
    "classic provenance for another ref": lambda bed: (
        sign_classic_keyless(bed.writer, bed.b, bed.instance, subject=RELEASE),
        attest_classic(bed.writer, bed.b, bed.instance, subject=RELEASE, repository=SOURCE, ref="refs/tags/v0"),
    ),
    # N1: anyone who can push a tag runs release.yml from their own commit; the statement says main
    "provenance of a tag run claiming main (bundle)": lambda bed: (
        sign_classic_keyless(bed.writer, bed.b, bed.instance, subject=RELEASE),
        attach_provenance(
            bed.writer,
            bed.b,
            bed.instance,
            subject=TAGGED,
            repository=SOURCE,
            ref="refs/heads/main",
            commit=COMMIT,
            source=TAG_RUN,
        ),
    ),
    "provenance of a tag run claiming main (classic)": lambda bed: (
        sign_classic_keyless(bed.writer, bed.b, bed.instance, subject=RELEASE),
        attest_classic(
            bed.writer,
            bed.b,
            bed.instance,
            subject=TAGGED,
            repository=SOURCE,
            ref="refs/heads/main",
            commit=COMMIT,
            source=TAG_RUN,
        ),
    ),
}


REASONS = {  # the reason each refusal must give, so none passes for another reason
    "wrong identity": r"workflows/ci\.yml@refs/heads/main' \(issuer .*\) is not a configured identity",
    "wrong issuer": r"issuer 'https://token\.example'\) is not a configured identity",
    "wrong instance": r"Rekor log [0-9a-f]+ is not in the trusted root",
    "expired certificate": r"does not chain to a Fulcio CA",
    "tampered SET": r"signed entry timestamp does not verify",
    "tampered inclusion proof": r"invalid log entry|root hash",
    "tampered signature": r"DSSE: invalid signature",
    "tampered payload": r"logs another payload",
    "another digest": r"bundle statement names .*not the declared",
    "chain only in the annotation": r"does not chain to a Fulcio CA",
    "provenance for another repository": r"names source repository .*-fork",
    "provenance for another ref": r"names source ref 'refs/heads/experiment'",
    "classic provenance for another ref": r"names source ref 'refs/tags/v0'",
    "provenance of a tag run claiming main (bundle)": r"names source ref 'refs/tags/v9', not 'refs/heads/main'",
    "provenance of a tag run claiming main (classic)": r"names source ref 'refs/tags/v9', not 'refs/heads/main'",
}


def test_every_keyless_attack_is_refused_before_the_pull_and_quarantined(
    keyless: KeylessHost, capsys: pytest.CaptureFixture[str]
) -> None:
    """One deployed image, then each attack on the next one, each in its own repository path for image b."""
    host = keyless.host
    sign_classic_keyless(keyless.writer, keyless.a, keyless.instance, subject=RELEASE)
    keyless.provenance(keyless.a)
    host.publish("keyless image a", prod=keyless.a)
    assert host.sync() == 0
    before = host.running()
    repository = keyless.b.removeprefix(f"{keyless.writer.host}/").split("@")[0]
    for serial, (attack, sign) in enumerate(ATTACKS.items()):
        # an image of its own per attack: what an earlier attack pushed must not vouch for it
        keyless.b = push_unpullable_image(keyless.writer, repository, seed=str(serial))
        sign(keyless)
        if "provenance" not in attack:
            keyless.provenance(keyless.b)
        host.publish(f"attack: {attack}", prod=keyless.b)
        code, out = keyless.cli(capsys, "sync")
        status = host.status()
        assert code == 3, f"{attack}: {out}"
        code, out = keyless.cli(capsys, "verify-image", keyless.b)  # every reason in full, not the status's summary
        assert code == 3 and re.search(REASONS[attack], out), f"{attack}: {out}"
        assert status.last_attempt is not None and status.last_attempt.code == "UntrustedImageSignature", attack
        assert host.running()["Id"] == before["Id"] and host.image() == keyless.a, attack
        assert host.sync() == 3 and host.running()["Id"] == before["Id"], attack  # held: the quarantine answers
        assert host.status().quarantined is not None, attack


def test_a_missing_trusted_root_holds_the_pass_naming_the_file_and_is_no_quarantine(
    keyless: KeylessHost,
) -> None:
    host = keyless.host
    sign_classic_keyless(keyless.writer, keyless.a, keyless.instance, subject=RELEASE)
    keyless.provenance(keyless.a)
    host.publish("keyless image a", prod=keyless.a)
    kept = keyless.root.read_bytes()
    keyless.root.unlink()
    assert host.sync() == 1
    status = host.status()
    assert status.last_attempt is not None and str(keyless.root) in status.last_attempt.reason
    assert status.quarantined is None
    keyless.root.write_bytes(kept)
    assert host.sync() == 0 and host.image() == keyless.a
