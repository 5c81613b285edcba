"""Every real keyless fixture in ``tests/data/sigstore`` gets the verdict its README records, through our verifiers.

The fixtures are what the world makes (sigstore-python, the conformance suite, cosign, GitHub's
``gh attestation`` tests, containers/image); ``tests/data/SOURCES.md`` names each origin.  The table
below is the verdict table of issue 24: a row says which verifier, which trusted root, which
identity and which digest, and whether the signature must pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.errors import ConfigError, Refused
from controller.signatures.images.bundles import BundleTrust, check_keyless_bundle
from controller.signatures.images.keyless import (
    CertificateSource,
    KeylessIdentity,
    check_classic_keyless,
    source_of_certificate,
)
from controller.signatures.images.provenance import check_source
from controller.signatures.images.trusted_root import load_trusted_root

DATA = Path(__file__).parent.parent / "data" / "sigstore"
PG = "trusted_root/public-good.from-sigstore-python-4.5.1-wheel.json"
STAGING = "trusted_root/staging.from-sigstore-python-4.5.1-wheel.json"
GHA = "https://token.actions.githubusercontent.com"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
RFC8785 = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
SIGN = "https://sigstore.dev/cosign/sign/v1"
SLSA = ("https://slsa.dev/provenance/v1", "https://slsa.dev/provenance/v0.2")
COSIGN_ATTESTATION = "https://cosign.sigstore.dev/attestation/v1"
OCI_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
GH_ISSUER = "https://github.com/login/oauth"


def _digest(artifact: str) -> str:
    return "sha256:" + hashlib.sha256((DATA / artifact).read_bytes()).hexdigest()


def _bundle_verdict(
    bundle: str, *, root: str, identity: KeylessIdentity, digest: str, predicates: tuple[str, ...] = (SIGN,)
) -> str:
    try:
        check_keyless_bundle(
            (DATA / bundle).read_bytes(),
            digest=digest,
            trust=BundleTrust.load(str(DATA / root)),
            identities=[identity],
            predicate_types=predicates,
        )
    except Refused:
        return "FAIL"
    return "PASS"


def _beacon(case: str, *, root: str = PG, artifact: str = "conformance/a.txt") -> dict[str, object]:
    return {
        "bundle": f"conformance/{case}/bundle.sigstore.json",
        "root": root,
        "identity": KeylessIdentity(GHA, subject=BEACON),
        "digest": _digest(artifact),
        "predicates": (SIGN, *SLSA),
    }


BUNDLE_TABLE: list[tuple[str, dict[str, object], str]] = [
    (
        "github wheel, PG root",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": PG,
            "identity": KeylessIdentity(GHA, subject=RFC8785),
            "digest": _digest("sigstore-python/bundle_v3_github.whl"),
        },
        "PASS",
    ),
    (
        "github wheel, regexp identity",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": PG,
            "identity": KeylessIdentity(
                GHA, subject_regexp=r"https://github\.com/trailofbits/rfc8785\.py/.+@refs/tags/v[0-9.]+"
            ),
            "digest": _digest("sigstore-python/bundle_v3_github.whl"),
        },
        "PASS",
    ),
    (
        "github wheel, regexp matching only a prefix",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": PG,
            "identity": KeylessIdentity(GHA, subject_regexp=r"https://github\.com/trailofbits/rfc8785\.py"),
            "digest": _digest("sigstore-python/bundle_v3_github.whl"),
        },
        "FAIL",
    ),
    (
        "github wheel, another identity",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": PG,
            "identity": KeylessIdentity(GHA, subject=RFC8785.replace("v0.1.2", "v0.1.3")),
            "digest": _digest("sigstore-python/bundle_v3_github.whl"),
        },
        "FAIL",
    ),
    (
        "github wheel, another issuer",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": PG,
            "identity": KeylessIdentity(GH_ISSUER, subject=RFC8785),
            "digest": _digest("sigstore-python/bundle_v3_github.whl"),
        },
        "FAIL",
    ),
    (
        "github wheel, staging root",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": STAGING,
            "identity": KeylessIdentity(GHA, subject=RFC8785),
            "digest": _digest("sigstore-python/bundle_v3_github.whl"),
        },
        "FAIL",
    ),
    (
        "github wheel, another digest",
        {
            "bundle": "sigstore-python/bundle_v3_github.whl.sigstore",
            "root": PG,
            "identity": KeylessIdentity(GHA, subject=RFC8785),
            "digest": _digest("conformance/a.txt"),
        },
        "FAIL",
    ),
    (
        "staging v0.3 bundle, staging root",
        {
            "bundle": "sigstore-python/bundle_v3.txt.sigstore",
            "root": STAGING,
            "identity": KeylessIdentity(GH_ISSUER, subject="william@yossarian.net"),
            "digest": _digest("sigstore-python/bundle_v3.txt"),
        },
        "PASS",
    ),
    (
        "staging v0.3 bundle, PG root",
        {
            "bundle": "sigstore-python/bundle_v3.txt.sigstore",
            "root": PG,
            "identity": KeylessIdentity(GH_ISSUER, subject="william@yossarian.net"),
            "digest": _digest("sigstore-python/bundle_v3.txt"),
        },
        "FAIL",
    ),
    ("conformance happy-path-v0.2", _beacon("happy-path-v0.2"), "PASS"),
    ("conformance happy-path-v0.3", _beacon("happy-path-v0.3"), "PASS"),
    ("conformance happy-path-intoto-in-dsse-v3", _beacon("happy-path-intoto-in-dsse-v3"), "PASS"),
    (
        "conformance rekor2-happy-path",
        _beacon("rekor2-happy-path", root="conformance/rekor2-happy-path/trusted_root.json"),
        "PASS",
    ),
    (
        "conformance rekor2-dsse-happy-path",
        _beacon("rekor2-dsse-happy-path", root="conformance/rekor2-dsse-happy-path/trusted_root.json"),
        "PASS",
    ),
    (
        "conformance intoto-with-custom-trust-root (Rekor intoto kind: refused by sigstore-python 4.5.1)",
        _beacon(
            "intoto-with-custom-trust-root",
            root="conformance/intoto-with-custom-trust-root/trusted_root.json",
            artifact="conformance/intoto-with-custom-trust-root/artifact",
        ),
        "FAIL",
    ),
    ("conformance set-invalid-signature_fail", _beacon("set-invalid-signature_fail"), "FAIL"),
    ("conformance checkpoint-wrong-roothash_fail", _beacon("checkpoint-wrong-roothash_fail"), "FAIL"),
    ("conformance signature-mismatch_fail", _beacon("signature-mismatch_fail"), "FAIL"),
    ("conformance bundle-from-wrong-instance_fail", _beacon("bundle-from-wrong-instance_fail"), "FAIL"),
    ("conformance inclusion-proof-corrupted-hash_fail", _beacon("inclusion-proof-corrupted-hash_fail"), "FAIL"),
    (
        "conformance wrong-material_fail",
        _beacon("wrong-material_fail", artifact="conformance/wrong-material_fail/artifact"),
        "FAIL",
    ),
    ("conformance dsse-mismatch-envelope_fail", _beacon("dsse-mismatch-envelope_fail"), "FAIL"),
    (
        "conformance intoto-expired-certificate_fail",
        _beacon(
            "intoto-expired-certificate_fail",
            root="conformance/intoto-expired-certificate_fail/trusted_root.json",
            artifact="conformance/intoto-expired-certificate_fail/artifact",
        ),
        "FAIL",
    ),
    (
        "conformance intoto-set-outside-signing-cert-validity_fail",
        _beacon(
            "intoto-set-outside-signing-cert-validity_fail",
            root="conformance/intoto-set-outside-signing-cert-validity_fail/trusted_root.json",
            artifact="conformance/intoto-set-outside-signing-cert-validity_fail/artifact",
        ),
        "FAIL",
    ),
    (
        "cosign OCI attestation, its digest",
        {
            "bundle": "cosign/oci-attestation.sigstore.json",
            "root": "cosign/trusted_root_pgi.json",
            "identity": KeylessIdentity(GH_ISSUER, subject="cody@soyland.com"),
            "digest": OCI_DIGEST,
            "predicates": (COSIGN_ATTESTATION,),
        },
        "PASS",
    ),
    (
        "cosign OCI attestation, another digest",
        {
            "bundle": "cosign/oci-attestation.sigstore.json",
            "root": "cosign/trusted_root_pgi.json",
            "identity": KeylessIdentity(GH_ISSUER, subject="cody@soyland.com"),
            "digest": OCI_DIGEST[:-1] + "b",
            "predicates": (COSIGN_ATTESTATION,),
        },
        "FAIL",
    ),
    (
        "gh attestation, custom issuer required to be GHA",
        {
            "bundle": "gh-cli-attestation/custom-issuer.sigstore.json",
            "root": PG,
            "identity": KeylessIdentity(
                GHA, subject="https://github.com/too-legit/attest/.github/workflows/integration.yml@refs/heads/main"
            ),
            "digest": _digest("gh-cli-attestation/custom-issuer-artifact"),
            "predicates": SLSA,
        },
        "FAIL",
    ),
    (
        "gh attestation, custom issuer as its own",
        {
            "bundle": "gh-cli-attestation/custom-issuer.sigstore.json",
            "root": PG,
            "identity": KeylessIdentity(
                GHA + "/hammer-time",
                subject="https://github.com/too-legit/attest/.github/workflows/integration.yml@refs/heads/main",
            ),
            "digest": _digest("gh-cli-attestation/custom-issuer-artifact"),
            "predicates": SLSA,
        },
        "PASS",
    ),
    (
        "gh attestation, sigstore-js npm provenance (Rekor intoto kind: refused by sigstore-python 4.5.1)",
        {
            "bundle": "gh-cli-attestation/sigstore-js-2.1.0-bundle.json",
            "root": PG,
            "identity": KeylessIdentity(
                GHA, subject_regexp=r"https://github\.com/sigstore/sigstore-js/\.github/workflows/release\.yml@.*"
            ),
            "digest": "sha256:" + "0" * 64,
            "predicates": SLSA,
        },
        "FAIL",
    ),
    (
        "gh attestation, private repository (GitHub's own root, no log entry)",
        {
            "bundle": "gh-cli-attestation/github_provenance_demo-0.0.12-py3-none-any-bundle.jsonl",
            "root": PG,
            "identity": KeylessIdentity(
                GHA, subject="https://github.com/actions/attest-demo/.github/workflows/build-python.yml@refs/heads/main"
            ),
            "digest": "sha256:" + "0" * 64,
            "predicates": SLSA,
        },
        "FAIL",
    ),
]


@pytest.mark.parametrize(("case", "row", "verdict"), BUNDLE_TABLE, ids=[row[0] for row in BUNDLE_TABLE])
def test_each_real_bundle_gets_its_recorded_verdict(case: str, row: dict[str, object], verdict: str) -> None:
    assert _bundle_verdict(**row) == verdict, case  # type: ignore[arg-type]


CLASSIC = DATA / "containers-image" / "dir-img-cosign-fulcio-rekor-valid"
MITR = KeylessIdentity(GH_ISSUER, subject="mitr@redhat.com")


def _classic(
    *, root: str = PG, identity: KeylessIdentity = MITR, digest: str | None = None, change: str | None = None
) -> str:
    document = json.loads((CLASSIC / "signature-1").read_bytes().removeprefix(b"\0sigstore-json\n"))
    annotations = dict(document["annotations"])
    if change == "signature":
        signature = bytearray(base64.b64decode(annotations["dev.cosignproject.cosign/signature"]))
        signature[-1] ^= 1
        annotations["dev.cosignproject.cosign/signature"] = base64.b64encode(bytes(signature)).decode()
    if change == "set":
        entry = json.loads(annotations["dev.sigstore.cosign/bundle"])
        entry["Payload"]["integratedTime"] += 1
        annotations["dev.sigstore.cosign/bundle"] = json.dumps(entry)
    try:
        check_classic_keyless(
            base64.b64decode(document["payload"]),
            annotations,
            digest=digest or "sha256:" + hashlib.sha256((CLASSIC / "manifest.json").read_bytes()).hexdigest(),
            root=load_trusted_root(DATA / root, now=datetime.now(UTC)),
            identities=[identity],
        )
    except Refused:
        return "FAIL"
    return "PASS"


CLASSIC_TABLE: list[tuple[str, dict[str, object], str]] = [
    ("containers/image classic, PG root", {}, "PASS"),
    ("classic, another issuer", {"identity": KeylessIdentity(GHA, subject="mitr@redhat.com")}, "FAIL"),
    ("classic, another identity", {"identity": KeylessIdentity(GH_ISSUER, subject="someone@redhat.com")}, "FAIL"),
    (
        "classic, regexp identity",
        {"identity": KeylessIdentity(GH_ISSUER, subject_regexp=r"[a-z]+@redhat\.com")},
        "PASS",
    ),
    ("classic, another digest", {"digest": "sha256:" + "1" * 64}, "FAIL"),
    ("classic, changed signature", {"change": "signature"}, "FAIL"),
    ("classic, changed SET", {"change": "set"}, "FAIL"),
    ("classic, staging root", {"root": STAGING}, "FAIL"),
    ("classic, older public-good root", {"root": "trusted_root/public-good.sigstore-go-examples.json"}, "PASS"),
]


@pytest.mark.parametrize(("case", "row", "verdict"), CLASSIC_TABLE, ids=[row[0] for row in CLASSIC_TABLE])
def test_the_real_classic_keyless_signature_gets_its_recorded_verdict(
    case: str, row: dict[str, object], verdict: str
) -> None:
    assert _classic(**row) == verdict, case  # type: ignore[arg-type]


def test_a_missing_trusted_root_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nowhere.json"))):
        load_trusted_root(tmp_path / "nowhere.json", now=datetime.now(UTC))


def test_an_unreadable_trusted_root_is_refused_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "trusted_root.json"
    garbage.write_text("{not json")
    with pytest.raises(ConfigError, match=r"trusted_root\.json is not a readable"):
        load_trusted_root(garbage, now=datetime.now(UTC))


def test_an_expired_trusted_root_is_refused_naming_the_file(tmp_path: Path) -> None:
    document = json.loads((DATA / PG).read_text())
    for part in (*document["certificateAuthorities"], *(log["publicKey"] for log in document["tlogs"])):
        part["validFor"]["end"] = "2025-01-01T00:00:00Z"
    stale = tmp_path / "trusted_root.json"
    stale.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=re.escape(f"{stale} has expired")):
        load_trusted_root(stale, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert load_trusted_root(stale, now=datetime(2024, 6, 1, tzinfo=UTC)).path == str(stale)


# -- N1: the source is the certificate's, never the statement's text ---------------------------------

BEACON_REPOSITORY = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon"


def _real_provenance(case: str) -> tuple[object, dict[str, object]]:
    signer, statement = check_keyless_bundle(
        (DATA / f"conformance/{case}/bundle.sigstore.json").read_bytes(),
        digest=_digest("conformance/a.txt"),
        trust=BundleTrust.load(str(DATA / PG)),
        identities=[KeylessIdentity(GHA, subject=BEACON)],
        predicate_types=SLSA,
    )
    assert statement is not None
    return signer, statement


def test_the_real_github_certificates_name_their_source_in_fulcio_extensions() -> None:
    signer, _ = _real_provenance("happy-path-intoto-in-dsse-v3")
    assert source_of_certificate(signer.certificate) == CertificateSource(  # type: ignore[attr-defined]
        repository=BEACON_REPOSITORY,
        ref="refs/heads/main",
        commit="82a3bfe6dd50fe9c71d6315eae66da15307856cf",
        build_signer=BEACON,
    )
    wheel, _ = check_keyless_bundle(
        (DATA / "sigstore-python/bundle_v3_github.whl.sigstore").read_bytes(),
        digest=_digest("sigstore-python/bundle_v3_github.whl"),
        trust=BundleTrust.load(str(DATA / PG)),
        identities=[KeylessIdentity(GHA, subject=RFC8785)],
        predicate_types=(SIGN,),
    )
    source = source_of_certificate(wheel.certificate)  # type: ignore[arg-type]
    assert (source.repository, source.ref) == ("https://github.com/trailofbits/rfc8785.py", "refs/tags/v0.1.2")
    assert source.build_signer == RFC8785 and source.commit is not None and len(source.commit) == 40


def test_a_real_statement_naming_another_source_than_its_certificate_is_refused() -> None:
    """The conformance bundle's statement names loosebazooka/aa-test; its certificate, the beacon repository."""
    signer, statement = _real_provenance("happy-path-intoto-in-dsse-v3")
    certificate = source_of_certificate(signer.certificate)  # type: ignore[attr-defined]
    with pytest.raises(Refused, match=re.escape("names source repository 'https://github.com/sigstore-conformance/")):
        check_source(statement, certificate, repository="https://github.com/loosebazooka/aa-test", ref=None)
    with pytest.raises(
        Refused, match=re.escape("statement names source repository 'https://github.com/loosebazooka/aa-test'")
    ):
        check_source(statement, certificate, repository=BEACON_REPOSITORY, ref="refs/heads/main")
