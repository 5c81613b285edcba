"""Keyless signatures made by the test's own Sigstore instance: what passes and every attack that must not.

Both formats go through the project's verifiers: the classic ``.sig`` layer through
``keyless.check_classic_keyless`` (on ``cryptography``), the bundle v0.3 through
``bundles.check_keyless_bundle`` (sigstore-python under our own identity policy).  The end-to-end
pass with the real registry and engine is ``tests/integration/test_keyless_pass.py``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.errors import Refused
from controller.signatures.images.bundles import BundleTrust, check_keyless_bundle
from controller.signatures.images.keyless import (
    KeylessIdentity,
    check_classic_attestation,
    check_classic_keyless,
    source_of_certificate,
)
from controller.signatures.images.provenance import PREDICATE_TYPES, check_source
from controller.signatures.images.trusted_root import load_trusted_root
from controller.signatures.images.verifier import ImageVerifier
from tests.cosign_signing import simple_signing_payload
from tests.sigstore_instance import (
    GHA,
    SigstoreInstance,
    Tamper,
    classic_attestation_layer,
    classic_keyless_layer,
    cosign_statement,
    keyless_bundle,
    provenance_statement,
)

SOURCE = "https://github.com/ceerkle/dreichor-trading"
WORKFLOW = f"{SOURCE}/.github/workflows/release.yml@refs/heads/main"
PINNED = "127.0.0.1:5000/team/runtime@sha256:" + "ab" * 32
DIGEST = PINNED.split("@")[1]
OTHER = "sha256:" + "cd" * 32
EXACT = KeylessIdentity(GHA, subject=WORKFLOW)
PATTERN = KeylessIdentity(
    GHA, subject_regexp=r"https://github\.com/ceerkle/dreichor-trading/\.github/workflows/release\.yml@refs/.+"
)


@pytest.fixture(scope="module")
def instance() -> SigstoreInstance:
    return SigstoreInstance()


@pytest.fixture(scope="module")
def root_file(instance: SigstoreInstance, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return instance.trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")


def _classic(
    instance: SigstoreInstance, root_file: Path, *, subject: str, issuer: str, identity: KeylessIdentity, tamper: Tamper
) -> str:
    signed = simple_signing_payload(PINNED, digest=tamper.digest)
    annotations = classic_keyless_layer(instance, signed, subject=subject, issuer=issuer, tamper=tamper)
    stored = signed.replace(b'"optional":null', b'"optional":{}') if tamper.payload else signed
    return str(
        check_classic_keyless(
            stored,
            annotations,
            digest=DIGEST,
            root=load_trusted_root(root_file, now=datetime.now(UTC)),
            identities=[identity],
        )
    )


def _bundle(
    instance: SigstoreInstance, root_file: Path, *, subject: str, issuer: str, identity: KeylessIdentity, tamper: Tamper
) -> str:
    bundle = keyless_bundle(
        instance,
        cosign_statement("team/runtime", tamper.digest or DIGEST),
        subject=subject,
        issuer=issuer,
        tamper=tamper,
    )
    signer, _ = check_keyless_bundle(
        bundle,
        digest=DIGEST,
        trust=BundleTrust.load(str(root_file)),
        identities=[identity],
        predicate_types=("https://sigstore.dev/cosign/sign/v1",),
    )
    return str(signer)


CASES: list[tuple[str, dict[str, object], str]] = [  # "!reason": refused for that reason
    ("identity match", {}, f"{WORKFLOW} (token.actions.githubusercontent.com)"),
    ("regexp match", {"identity": PATTERN}, f"{WORKFLOW} (token.actions.githubusercontent.com)"),
    (
        "regexp must match the whole SAN",
        {
            "subject": WORKFLOW + "/evil",
            "identity": PATTERN.__class__(
                GHA,
                subject_regexp=r"https://github\.com/ceerkle/dreichor-trading/\.github/workflows/release\.yml@refs/heads/main",
            ),
        },
        "!is not a configured identity",
    ),
    ("wrong identity", {"subject": WORKFLOW.replace("release.yml", "test.yml")}, "!is not a configured identity"),
    (
        "wrong issuer",
        {"issuer": "https://token.actions.githubusercontent.com.evil.example"},
        "!is not a configured identity",
    ),
    (
        "certificate expired at signing time",
        {"tamper": Tamper(expired=True)},
        "!does not chain|not valid at validation time",
    ),
    ("SCT for another certificate", {"tamper": Tamper(sct=True)}, "!SCT|certificate transparency|timestamp"),
    ("tampered SET", {"tamper": Tamper(set=True)}, "!signed entry timestamp does not verify|SET: invalid"),
    ("tampered signature", {"tamper": Tamper(signature=True)}, "!another signature|DSSE: invalid signature"),
    ("tampered payload", {"tamper": Tamper(payload=True)}, "!another payload|DSSE: invalid signature"),
    ("another digest", {"tamper": Tamper(digest=OTHER)}, "!names .*not the declared"),
]


@pytest.mark.parametrize("verify", [_classic, _bundle], ids=["classic", "bundle"])
@pytest.mark.parametrize(("case", "row", "expected"), CASES, ids=[case[0] for case in CASES])
def test_keyless_signatures_pass_only_for_the_configured_identity_and_intact_evidence(
    instance: SigstoreInstance, root_file: Path, verify: object, case: str, row: dict[str, object], expected: str
) -> None:
    arguments = {"subject": WORKFLOW, "issuer": GHA, "identity": EXACT, "tamper": Tamper(), **row}
    if expected.startswith("!"):  # a refusal, and the reason it must give
        with pytest.raises(Refused, match=expected[1:]):
            verify(instance, root_file, **arguments)  # type: ignore[operator]
    else:
        assert verify(instance, root_file, **arguments) == expected  # type: ignore[operator]


def test_a_tampered_inclusion_proof_is_refused(instance: SigstoreInstance, root_file: Path) -> None:
    with pytest.raises(Refused, match=r"root hash|inclusion"):
        _bundle(instance, root_file, subject=WORKFLOW, issuer=GHA, identity=EXACT, tamper=Tamper(proof=True))


def test_a_chain_offered_in_the_annotation_but_not_in_the_root_is_refused(
    instance: SigstoreInstance, root_file: Path
) -> None:
    with pytest.raises(Refused, match="does not chain to a Fulcio CA"):
        _classic(
            instance, root_file, subject=WORKFLOW, issuer=GHA, identity=EXACT, tamper=Tamper(chain_outside_root=True)
        )


@pytest.mark.parametrize("verify", [_classic, _bundle], ids=["classic", "bundle"])
def test_a_signature_from_another_instance_is_refused(root_file: Path, verify: object) -> None:
    with pytest.raises(Refused):
        verify(SigstoreInstance(), root_file, subject=WORKFLOW, issuer=GHA, identity=EXACT, tamper=Tamper())  # type: ignore[operator]


MAIN = {"repository": SOURCE, "ref": "refs/heads/main", "commit": "c" * 40, "build_signer": WORKFLOW}
TAG_RUN = {**MAIN, "ref": "refs/tags/v9", "commit": "d" * 40, "build_signer": WORKFLOW.replace("heads/main", "tags/v9")}


def _provenance_of(
    instance: SigstoreInstance, root_file: Path, *, form: str, source: dict[str, str], **says: str
) -> Any:
    """Verify a provenance attestation whose statement says ``says`` and whose certificate names ``source``."""
    claimed = {"repository": SOURCE, "ref": "refs/heads/main", "commit": "c" * 40, **says}
    statement = provenance_statement("team/runtime", DIGEST, **claimed)
    subject = source.get("build_signer") or WORKFLOW
    identity = KeylessIdentity(GHA, subject=subject)
    if form == "bundle":
        return check_keyless_bundle(
            keyless_bundle(instance, statement, subject=subject, source=source),
            digest=DIGEST,
            trust=BundleTrust.load(str(root_file)),
            identities=[identity],
            predicate_types=PREDICATE_TYPES,
        )
    envelope, annotations = classic_attestation_layer(instance, statement, subject=subject, source=source)
    return check_classic_attestation(
        envelope,
        annotations,
        digest=DIGEST,
        root=load_trusted_root(root_file, now=datetime.now(UTC)),
        identities=[identity],
        predicate_types=PREDICATE_TYPES,
    )


@pytest.mark.parametrize("form", ["bundle", "classic"])
@pytest.mark.parametrize(
    ("source", "says", "ref", "verdict"),
    [
        (MAIN, {}, "refs/heads/main", None),
        (MAIN, {}, None, None),
        # N1: a run from a pushed tag whose statement claims main and another commit
        (TAG_RUN, {}, "refs/heads/main", "provenance names source ref 'refs/tags/v9', not 'refs/heads/main'"),
        (TAG_RUN, {}, None, "statement names source ref 'refs/heads/main', but its signing certificate says"),
        (MAIN, {"commit": "e" * 40}, None, "statement names source commit '" + "e" * 40),
        (MAIN, {"repository": "https://github.com/ceerkle/other"}, None, "statement names source repository"),
        ({**MAIN, "repository": "https://github.com/ceerkle/other"}, {}, None, "names source repository"),
        ({"build_signer": WORKFLOW}, {}, None, "certificate names no source repository"),
    ],
    ids=[
        "main",
        "main-any-ref",
        "tag-claims-main",
        "tag-claims-main-no-ref",
        "other-commit",
        "statement-repo",
        "certificate-repo",
        "no-source-extensions",
    ],
)
def test_provenance_source_comes_from_the_signing_certificate(
    instance: SigstoreInstance,
    root_file: Path,
    form: str,
    source: dict[str, str],
    says: dict[str, str],
    ref: str | None,
    verdict: str | None,
) -> None:
    signer, statement = _provenance_of(instance, root_file, form=form, source=source, **says)
    certificate = source_of_certificate(signer.certificate)

    def checked() -> dict[str, str | None]:
        return check_source(statement, certificate, repository=SOURCE, ref=ref).as_record()

    if verdict is None:
        assert checked() == MAIN  # what the certificate says, Build Signer URI included
    else:
        with pytest.raises(Refused, match=re.escape(verdict)):
            checked()


def test_a_cosign_signature_bundle_is_no_provenance(instance: SigstoreInstance, root_file: Path) -> None:
    with pytest.raises(Refused, match="predicate type"):
        check_keyless_bundle(
            keyless_bundle(instance, cosign_statement("team/runtime", DIGEST), subject=WORKFLOW),
            digest=DIGEST,
            trust=BundleTrust.load(str(root_file)),
            identities=[EXACT],
            predicate_types=PREDICATE_TYPES,
        )


def test_a_recorded_keyless_signer_stays_trusted_only_while_an_identity_still_names_it() -> None:
    verifier = ImageVerifier(identities=(EXACT, PATTERN))
    assert verifier.trusts(f"{WORKFLOW} (token.actions.githubusercontent.com)")
    assert verifier.trusts(f"{WORKFLOW.replace('heads/main', 'tags/v1')} (token.actions.githubusercontent.com)")
    assert not verifier.trusts(f"{WORKFLOW} (token.example)")  # another issuer host
    assert not verifier.trusts(f"{WORKFLOW.replace('release', 'ci')} (token.actions.githubusercontent.com)")
    assert not ImageVerifier(identities=(KeylessIdentity(GHA, subject="x"),)).trusts(
        f"{WORKFLOW} (token.actions.githubusercontent.com)"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (None, None),
        ("another ref", "names source ref 'refs/heads/feature'"),
        ("envelope", "logs another attestation"),
        ("identity", "is not a configured identity"),
    ],
)
def test_a_classic_cosign_attestation_gives_the_source_only_when_intact_and_by_an_identity(
    instance: SigstoreInstance, root_file: Path, change: str | None, reason: str | None
) -> None:
    ref = "refs/heads/feature" if change == "another ref" else "refs/heads/main"
    statement = provenance_statement("team/runtime", DIGEST, repository=SOURCE, ref=ref, commit="c" * 40)
    subject = WORKFLOW.replace("release", "ci") if change == "identity" else WORKFLOW
    envelope, annotations = classic_attestation_layer(instance, statement, subject=subject)
    if change == "envelope":
        envelope = envelope.replace(b'"keyid": ""', b'"keyid": "x"')

    def source() -> dict[str, str | None]:
        signer, verified = check_classic_attestation(
            envelope,
            annotations,
            digest=DIGEST,
            root=load_trusted_root(root_file, now=datetime.now(UTC)),
            identities=[EXACT],
            predicate_types=PREDICATE_TYPES,
        )
        assert signer.certificate is not None
        certificate = source_of_certificate(signer.certificate)
        return check_source(verified, certificate, repository=SOURCE, ref="refs/heads/main").as_record()

    if reason is None:
        assert source() == {
            "repository": SOURCE,
            "ref": "refs/heads/main",
            "commit": "c" * 40,
            "build_signer": WORKFLOW,
        }
    else:
        with pytest.raises(Refused, match=re.escape(reason)):
            source()
