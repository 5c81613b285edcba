"""Before the pull: does the declared digest carry a cosign signature by a signer the host trusts?

The commit signature proves who approved a digest; this proves the bytes behind the digest came out
of a build holding a trusted key, or run by a trusted keyless identity (a GitHub Actions workflow).
Signatures are found where cosign puts them in the image's own repository (``layout``): the
classic ``sha256-<hex>.sig`` tag, and Sigstore bundles through the OCI 1.1 referrers API or, on
registries without it, the ``sha256-<hex>`` tag.  Every candidate is bounded (manifest and payload
sizes, layer and referrer counts) and checked by ``controller.signatures.images.cosign`` (keys),
``controller.signatures.images.keyless`` (classic keyless) or ``controller.signatures.images.bundles``
(keyless bundles); any one valid signature is enough.  With ``provenance`` set, a SLSA provenance
attestation of the digest must also name the configured source (``provenance``).  Only a
cryptographic verdict is ``Refused`` (and quarantines the release): no signature at all, or signatures
no configured signer made or that name another digest.  An answer that is no signature document —
garbage under status 200, a manifest without layers, a descriptor without a digest — is the
registry's fault, ``Retryable`` like an outage, so the release is deployed once the registry answers
properly again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Literal

from controller.errors import ConfigError, Refused, Retryable
from controller.model.config import ImageConfig, KeylessIdentityConfig
from controller.signatures.images.bundles import BundleTrust, Keyless, check_keyless_bundle
from controller.signatures.images.cosign import (
    MAX_PAYLOAD_BYTES,
    SIGN_PREDICATE_TYPE,
    CosignKey,
    check_image_bundle,
    check_simple_signing,
    load_cosign_keys,
)
from controller.signatures.images.keyless import CERTIFICATE_ANNOTATION, KeylessIdentity, check_classic_keyless
from controller.signatures.images.layout import (
    ImageReference,
    bounded_descriptor,
    bundle_documents,
    fault,
    first_valid,
    reraise,
    tagged_layers,
)
from controller.signatures.images.provenance import ImageSource, Provenance, verify_provenance
from controller.signatures.images.trusted_root import load_trusted_root
from controller.signatures.registry import RegistryClient

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
__all__ = ["ImageReference", "ImageVerdict", "ImageVerifier", "Keyless", "Provenance", "registry_for", "verify_image"]


@dataclass(frozen=True)
class ImageVerdict:
    """A digest whose signature verified: who signed it, and in which format."""

    digest: str
    image_signer: str  # the key's SHA-256 fingerprint, or a keyless "identity (issuer host)"
    key_path: str  # the key file, or the trusted root a keyless signature was checked against
    format: Literal["classic", "bundle"]
    source: ImageSource | None = None  # what the provenance attestation names, when image.provenance is set


@dataclass(frozen=True)
class Signers:
    """Everything one check accepts: any configured key, any keyless identity."""

    keys: Sequence[CosignKey] = ()
    keyless: Keyless | None = None


@dataclass(frozen=True)
class ImageVerifier:
    """The check ``image.signatures`` and ``image.provenance`` describe, with its files read at each use.

    Keys and the trusted root are read for every check, so a rotated key or a refreshed root counts
    from the next pass; nothing here reaches the network but the registry it is handed.
    """

    keys: tuple[str, ...] = ()
    trusted_root: str | None = None
    identities: tuple[KeylessIdentity, ...] = ()
    provenance: Provenance | None = None

    @classmethod
    def from_config(cls, image: ImageConfig) -> ImageVerifier:
        """The verifier for a config's ``image`` section (paths already absolute)."""
        signatures, wanted = image.signatures, image.provenance
        keyless = signatures.keyless if signatures else None
        provenance = None
        if wanted is not None:
            provenance = Provenance(wanted.source_repository, wanted.source_ref, _identities(wanted.identities))
        return cls(
            keys=tuple(signatures.keys) if signatures else (),
            trusted_root=keyless.trusted_root if keyless else None,
            identities=_identities(keyless.identities) if keyless else (),
            provenance=provenance,
        )

    def verify(self, reference: str, *, registry: RegistryClient, now: datetime) -> ImageVerdict:
        """``verify_image`` with the configured keys and keyless identities; ``ConfigError`` for a bad file."""
        keyless = None
        if self.trusted_root is not None:
            keyless = Keyless(
                load_trusted_root(Path(self.trusted_root), now=now),
                BundleTrust.load(self.trusted_root),
                self.identities,
            )
        keys = load_cosign_keys(self.keys)
        return verify_image(reference, keys=keys, keyless=keyless, provenance=self.provenance, registry=registry)

    def trusts(self, signer: str) -> bool:
        """Whether a recorded image signer is still a configured key or keyless identity."""
        if any(identity.names(signer) for identity in self.identities):
            return True
        try:
            return any(key.fingerprint == signer for key in load_cosign_keys(self.keys))
        except ConfigError:
            return False  # the check itself says what is wrong with the keys


def _identities(entries: Sequence[KeylessIdentityConfig]) -> tuple[KeylessIdentity, ...]:
    return tuple(KeylessIdentity(e.issuer, subject=e.subject, subject_regexp=e.subject_regexp) for e in entries)


def registry_for(reference: str, *, credentials: dict[str, str] | None, timeout: float = 10.0) -> RegistryClient:
    """A registry client for ``reference``'s host with the pull's credentials (``registry_auth``)."""
    username, password = (credentials or {}).get("username"), (credentials or {}).get("password")
    return RegistryClient(ImageReference.parse(reference).host, username=username, password=password, timeout=timeout)


def verify_image(
    reference: str,
    *,
    keys: Sequence[CosignKey] = (),
    keyless: Keyless | None = None,
    provenance: Provenance | None = None,
    registry: RegistryClient,
) -> ImageVerdict:
    """The first valid signature of ``reference``'s digest by one of ``keys`` or ``keyless`` identities.

    Raises ``Refused`` (code ``ImageUnsigned`` when no signature exists at all,
    ``UntrustedImageSignature`` with every candidate's reason otherwise), or the first
    ``Retryable`` when the registry failed for a candidate and no other one verified.
    With ``provenance``, the verdict names the source.
    """
    image = ImageReference.parse(reference)
    if image.host != registry.host:
        raise ValueError(f"registry client for {registry.host} cannot check {image.host}")
    signers = Signers(keys, keyless)
    verdict = first_valid(
        _candidates(image, registry, signers=signers),
        host=image.host,
        nothing=f"image {image.digest} carries no cosign signature",
        invalid=f"image {image.digest} carries no valid cosign signature by a configured {_whom(signers)}",
    )
    if provenance is None or keyless is None:
        return verdict
    return replace(verdict, source=verify_provenance(image, registry, keyless=keyless, policy=provenance))


Candidate = Callable[[], ImageVerdict]  # one signature, checked later so one refusal hides no other


def _candidates(image: ImageReference, registry: RegistryClient, *, signers: Signers) -> Iterator[Candidate]:
    """Classic signatures first (cheapest), then bundles; a broken container is one refused candidate."""
    try:
        yield from _classic(image, registry, signers=signers)
    except (Refused, Retryable) as exc:
        yield partial(reraise, exc)
    for bundle in bundle_documents(image, registry):
        yield partial(_check_bundle, bundle, image, signers=signers)


def _classic(image: ImageReference, registry: RegistryClient, *, signers: Signers) -> Iterator[Candidate]:
    layers, over = tagged_layers(image, registry, suffix="sig", what="signature manifest")
    for layer in layers:
        yield partial(_check_classic_layer, layer, image, registry, signers=signers)
    if over is not None:
        yield partial(reraise, over)


def _check_classic_layer(
    layer: object, image: ImageReference, registry: RegistryClient, *, signers: Signers
) -> ImageVerdict:
    descriptor = bounded_descriptor(layer, max_size=MAX_PAYLOAD_BYTES, what="signature layer")
    if descriptor.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
        raise fault(f"signature layer has media type {str(descriptor.get('mediaType'))[:80]!r}")
    annotations = descriptor.get("annotations")
    signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(signature, str):
        raise fault(f"signature layer has no {SIGNATURE_ANNOTATION} annotation")
    payload = registry.blob(image.repository, descriptor["digest"], max_bytes=MAX_PAYLOAD_BYTES)
    keyless = signers.keyless
    if keyless is not None and isinstance(annotations, dict) and CERTIFICATE_ANNOTATION in annotations:
        signer = check_classic_keyless(
            payload, annotations, digest=image.digest, root=keyless.root, identities=keyless.identities
        )
        return ImageVerdict(image.digest, str(signer), keyless.root.path, "classic")
    key = check_simple_signing(payload, signature, digest=image.digest, keys=signers.keys)
    return ImageVerdict(image.digest, key.fingerprint, key.path, "classic")


def _check_bundle(read: Callable[[], bytes], image: ImageReference, *, signers: Signers) -> ImageVerdict:
    """A key-based bundle (``publicKey`` material) under the keys, any other under the keyless identities."""
    bundle = read()
    keyless = signers.keyless
    if keyless is not None and not _names_public_key(bundle):
        signer, _statement = check_keyless_bundle(
            bundle,
            digest=image.digest,
            trust=keyless.bundles,
            identities=keyless.identities,
            predicate_types=(SIGN_PREDICATE_TYPE,),
        )
        return ImageVerdict(image.digest, str(signer), keyless.root.path, "bundle")
    key = check_image_bundle(bundle, digest=image.digest, keys=signers.keys)
    return ImageVerdict(image.digest, key.fingerprint, key.path, "bundle")


def _names_public_key(bundle: bytes) -> bool:
    try:
        material = json.loads(bundle).get("verificationMaterial")
    except (ValueError, AttributeError, RecursionError):
        return True  # the key-based reader says what is wrong with it
    return isinstance(material, dict) and "publicKey" in material


def _whom(signers: Signers) -> str:
    if signers.keyless is None:
        return "key"
    return "key or keyless identity" if signers.keys else "keyless identity"
