"""Where an image came from: the source a verified SLSA provenance attestation names.

A keyless signature says *who* built an image (a workflow identity); the build provenance says
*from what*: the source repository, the ref and the commit.  GitHub's artifact attestations
(``actions/attest-build-provenance``) write SLSA provenance v1 with the GitHub Actions build type;
``cosign attest --type slsaprovenance`` from the SLSA generator writes v0.2.  ``verify_provenance``
finds the digest's attestations (classic ``.att`` layers, then bundles; ``layout``), has each one's
keyless signature, signer and subject digest verified (``keyless``, ``bundles``) against
``provenance.identities``, and takes the first whose *signing certificate* names the configured
``source_repository`` (and ``source_ref`` when set): Fulcio writes the Source Repository URI, Ref
and Digest from the run's OIDC token, while the statement is text the workflow wrote itself (a
workflow run from a pushed tag could claim ``refs/heads/main``).  A statement that names a source
must agree with its certificate, else it is refused.  The result, ``ImageSource``, is what the
status records as ``applied.image_source``: the chain from the manifest commit to the image to the
application commit it was built from.  As for signatures, an attestation the registry serves broken
(a layer of another media type, annotations or a bundle that cannot be read, a listed manifest that is
missing) is the registry's fault and ``Retryable``; only a verdict on a readable attestation refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller.errors import Reason, Refused, Retryable
from controller.signatures.images.bundles import Keyless, check_keyless_bundle
from controller.signatures.images.cosign import MAX_BUNDLE_BYTES
from controller.signatures.images.keyless import (
    CertificateSource,
    KeylessIdentity,
    KeylessSigner,
    check_classic_attestation,
    source_of_certificate,
)
from controller.signatures.images.layout import (
    ImageReference,
    bounded_descriptor,
    bundle_documents,
    fault,
    first_valid,
    refused,
    reraise,
    tagged_layers,
)
from controller.signatures.registry import RegistryClient
from controller.untrusted import bounded

SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
PREDICATE_TYPES = (SLSA_V1, SLSA_V02)
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"  # a classic ``.att`` layer
_GIT_URI = re.compile(r"^git\+(?P<repository>https://[^@]+?)(?:\.git)?@(?P<ref>refs/[^\s]+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class ImageSource:
    """The repository, ref and commit an image was built from (by its provenance's certificate), bounded."""

    repository: str
    ref: str | None
    commit: str | None
    build_signer: str | None = None

    def as_record(self) -> dict[str, str | None]:
        """The ``applied.image_source`` object of the status file."""
        record = {"repository": self.repository, "ref": self.ref, "commit": self.commit}
        return record | ({"build_signer": self.build_signer} if self.build_signer else {})


@dataclass(frozen=True)
class Provenance:
    """Who may sign the provenance attestation, and the source it must name."""

    repository: str
    ref: str | None
    identities: tuple[KeylessIdentity, ...]


def source_of(statement: dict[str, Any]) -> ImageSource:
    """The source a verified SLSA provenance statement names; ``Refused`` when it names none."""
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise _refused("provenance statement has no predicate")
    if statement.get("predicateType") == SLSA_V1:
        return _source_v1(predicate)
    return _source_v02(predicate)


def check_source(
    statement: dict[str, Any], certificate: CertificateSource, *, repository: str, ref: str | None
) -> ImageSource:
    """The source the certificate names when it is ``repository`` (and ``ref``) and the statement agrees.

    ``Refused`` naming both when the certificate names another source or none, or when the
    statement's own text names another repository, ref or commit than its certificate.
    """
    if certificate.repository is None:
        raise _refused("provenance certificate names no source repository (Fulcio extension 1.3.6.1.4.1.57264.1.12)")
    source = ImageSource(
        bounded(certificate.repository),
        _bounded(certificate.ref),
        _bounded(certificate.commit),
        _bounded(certificate.build_signer),
    )
    if _normal(certificate.repository) != _normal(repository):
        raise _refused(f"provenance names source repository {source.repository!r}, not {repository!r}")
    if ref is not None and certificate.ref != ref:
        raise _refused(f"provenance names source ref {source.ref!r}, not {ref!r}")
    _agree(statement, certificate, source)
    return source


def _agree(statement: dict[str, Any], certificate: CertificateSource, source: ImageSource) -> None:
    """A statement that names a source names the certificate's: else its text is not the build's."""
    try:
        claimed = source_of(statement)
    except Refused:
        return  # the statement names no source: the certificate's stands alone
    for what, said, known, shown in (
        ("repository", _normal(claimed.repository), _normal(str(certificate.repository)), source.repository),
        ("ref", claimed.ref, certificate.ref, source.ref),
        ("commit", claimed.commit, certificate.commit, source.commit),
    ):
        if said is not None and known is not None and said != known:
            raise _refused(
                f"provenance statement names source {what} {bounded(str(said))!r}, "
                f"but its signing certificate says {shown!r}"
            )


def _source_v1(predicate: dict[str, Any]) -> ImageSource:
    """SLSA v1: GitHub's workflow parameters first, else the first git resolved dependency."""
    definition = _dict(predicate.get("buildDefinition"))
    workflow = _dict(_dict(definition.get("externalParameters")).get("workflow"))
    dependencies = [d for d in definition.get("resolvedDependencies") or [] if isinstance(d, dict)][:16]
    git = next((d for d in dependencies if _GIT_URI.match(str(d.get("uri", "")))), None)
    commit = _commit(_dict(git.get("digest")).get("gitCommit")) if git else None
    if isinstance(workflow.get("repository"), str):
        ref = workflow.get("ref")
        return ImageSource(workflow["repository"], ref if isinstance(ref, str) else None, commit)
    if git is None:
        raise _refused("provenance names no source repository")
    match = _GIT_URI.match(str(git["uri"]))
    assert match is not None  # noqa: S101 - chosen by this pattern above
    return ImageSource(match["repository"], match["ref"], commit)


def _source_v02(predicate: dict[str, Any]) -> ImageSource:
    """SLSA v0.2: the invocation's config source (``git+https://…@refs/…``) and its sha1."""
    config = _dict(_dict(predicate.get("invocation")).get("configSource"))
    match = _GIT_URI.match(str(config.get("uri", "")))
    if match is None:
        raise _refused("provenance names no git config source")
    return ImageSource(match["repository"], match["ref"], _commit(_dict(config.get("digest")).get("sha1")))


def verify_provenance(
    image: ImageReference, registry: RegistryClient, *, keyless: Keyless, policy: Provenance
) -> ImageSource:
    """The source named by the first SLSA provenance of the digest that verifies and fits ``policy``.

    Classic ``cosign attest`` layers (``sha256-<hex>.att``) first, then bundles (GitHub's artifact
    attestations, ``cosign attest`` with bundles), each signed keylessly by one of ``policy.identities``.
    A registry fault in one attestation hides no other: it is raised (``Retryable``) only when none fits.
    """
    return first_valid(
        (
            partial(_fitting, attestation, policy)
            for attestation in _attestations(image, registry, keyless=keyless, policy=policy)
        ),
        host=image.host,
        nothing=f"image {image.digest} carries no provenance attestation",
        invalid=f"image {image.digest} carries no valid provenance attestation for {policy.repository}",
    )


def _fitting(attestation: Attestation, policy: Provenance) -> ImageSource:
    signer, statement = attestation()
    if signer.certificate is None:
        raise _refused("provenance signer has no certificate to name its source")
    certificate = source_of_certificate(signer.certificate)
    return check_source(statement, certificate, repository=policy.repository, ref=policy.ref)


# one verified attestation's signer and in-toto statement, or Refused
Attestation = Callable[[], tuple[KeylessSigner, dict[str, Any]]]


def _attestations(
    image: ImageReference, registry: RegistryClient, *, keyless: Keyless, policy: Provenance
) -> Iterator[Attestation]:
    try:
        yield from _classic_attestations(image, registry, keyless=keyless, policy=policy)
    except (Refused, Retryable) as exc:
        yield partial(reraise, exc)
    for bundle in bundle_documents(image, registry):
        yield partial(_bundle_statement, bundle, image, keyless=keyless, policy=policy)


def _classic_attestations(
    image: ImageReference, registry: RegistryClient, *, keyless: Keyless, policy: Provenance
) -> Iterator[Attestation]:
    layers, over = tagged_layers(image, registry, suffix="att", what="attestation manifest")
    for layer in layers:
        yield partial(_check_attestation_layer, layer, image, registry, keyless=keyless, policy=policy)
    if over is not None:
        yield partial(reraise, over)


def _check_attestation_layer(
    layer: object, image: ImageReference, registry: RegistryClient, *, keyless: Keyless, policy: Provenance
) -> tuple[KeylessSigner, dict[str, Any]]:
    descriptor = bounded_descriptor(layer, max_size=MAX_BUNDLE_BYTES, what="attestation layer")
    if descriptor.get("mediaType") != DSSE_MEDIA_TYPE:
        raise fault(f"attestation layer has media type {str(descriptor.get('mediaType'))[:80]!r}")
    annotations = descriptor.get("annotations")
    if not isinstance(annotations, dict):
        raise fault("attestation layer has no annotations")
    envelope = registry.blob(image.repository, descriptor["digest"], max_bytes=MAX_BUNDLE_BYTES)
    return check_classic_attestation(
        envelope,
        annotations,
        digest=image.digest,
        root=keyless.root,
        identities=policy.identities,
        predicate_types=PREDICATE_TYPES,
    )


def _bundle_statement(
    read: Callable[[], bytes], image: ImageReference, *, keyless: Keyless, policy: Provenance
) -> tuple[KeylessSigner, dict[str, Any]]:
    signer, statement = check_keyless_bundle(
        read(),
        digest=image.digest,
        trust=keyless.bundles,
        identities=policy.identities,
        predicate_types=PREDICATE_TYPES,
    )
    if statement is None:
        raise refused("a message-signature bundle is no provenance attestation")
    return signer, statement


def _commit(value: object) -> str | None:
    return value if isinstance(value, str) and _COMMIT.match(value) else None


def _normal(repository: str) -> str:
    return repository.strip().removesuffix("/").removesuffix(".git").lower()


def _bounded(text: str | None) -> str | None:
    return None if text is None else bounded(text)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _refused(reason: str) -> Refused:
    return Refused(reason, code=Reason.UNTRUSTED_IMAGE_SIGNATURE)
