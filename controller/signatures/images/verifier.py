"""Before the pull: does the declared digest carry a cosign signature by a signer the host trusts?

The commit signature proves who approved a digest; this proves the bytes behind the digest came out
of a build holding a trusted key, or run by a trusted keyless identity (a GitHub Actions workflow).
Signatures are found where cosign puts them in the image's own repository: the classic
``sha256-<hex>.sig`` tag, and Sigstore bundles through the OCI 1.1 referrers API or, on registries
without it, the ``sha256-<hex>`` tag.  Every candidate is bounded (manifest and payload sizes, layer
and referrer counts) and checked by ``controller.signatures.images.cosign`` (keys),
``controller.signatures.images.keyless`` (classic keyless) or ``controller.signatures.images.bundles``
(keyless bundles); any one valid signature is enough.  With ``provenance`` set, a SLSA provenance
attestation among the referrers must also name the digest and the configured source
(``controller.signatures.images.provenance``).  No valid signature is ``Refused``; a registry that
cannot answer usably is ``Retryable``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, NoReturn

from controller.config import ImageConfig, KeylessIdentityConfig
from controller.errors import ConfigError, Reason, Refused
from controller.signatures.images.bundles import BundleTrust, check_keyless_bundle
from controller.signatures.images.cosign import (
    BUNDLE_MEDIA_TYPES,
    MAX_BUNDLE_BYTES,
    MAX_PAYLOAD_BYTES,
    SIGN_PREDICATE_TYPE,
    CosignKey,
    check_image_bundle,
    check_simple_signing,
    load_cosign_keys,
)
from controller.signatures.images.keyless import CERTIFICATE_ANNOTATION, KeylessIdentity, check_classic_keyless
from controller.signatures.images.provenance import PREDICATE_TYPES, ImageSource, check_source
from controller.signatures.images.trusted_root import TrustedRoot, load_trusted_root
from controller.signatures.registry import RegistryClient

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
MAX_MANIFEST_BYTES = 256 * 1024
MAX_SIGNATURE_LAYERS = 32
MAX_REFERRERS = 16
_REFERENCE = re.compile(r"^(?P<host>[^/@]+)/(?P<repository>[a-z0-9._/-]+)@(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class ImageVerdict:
    """A digest whose signature verified: who signed it, and in which format."""

    digest: str
    image_signer: str  # the key's SHA-256 fingerprint, or a keyless "identity (issuer host)"
    key_path: str  # the key file, or the trusted root a keyless signature was checked against
    format: Literal["classic", "bundle"]
    source: ImageSource | None = None  # what the provenance attestation names, when image.provenance is set


@dataclass(frozen=True)
class Keyless:
    """Keyless signers the host trusts: the pinned root (read for both formats) and the identities."""

    root: TrustedRoot
    bundles: BundleTrust
    identities: tuple[KeylessIdentity, ...]


@dataclass(frozen=True)
class Provenance:
    """Who may sign the provenance attestation, and the source it must name."""

    repository: str
    ref: str | None
    identities: tuple[KeylessIdentity, ...]


@dataclass(frozen=True)
class Signers:
    """Everything one check accepts: any configured key, any keyless identity."""

    keys: Sequence[CosignKey] = ()
    keyless: Keyless | None = None


@dataclass(frozen=True)
class ImageReference:
    """``host/repository@sha256:…`` split into what the registry API needs."""

    host: str
    repository: str
    digest: str

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        """Split a pinned reference; anything but ``host/path@sha256:<64 hex>`` is refused."""
        match = _REFERENCE.match(reference)
        if match is None:
            raise Refused(
                f"{reference!r} is not a pinned reference host/repository@sha256:<hex>", code=Reason.BAD_REFERENCE
            )
        return cls(match["host"], match["repository"], match["digest"])


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
    ``UntrustedImageSignature`` with every candidate's reason otherwise) and lets the
    registry client's ``Retryable`` through.  With ``provenance``, the verdict names the source.
    """
    image = ImageReference.parse(reference)
    if image.host != registry.host:
        raise ValueError(f"registry client for {registry.host} cannot check {image.host}")
    signers = Signers(keys, keyless)
    reasons: list[str] = []
    for candidate in _candidates(image, registry, signers=signers):
        try:
            verdict = candidate()
        except Refused as exc:
            reasons.extend(exc.reasons)
            continue
        if provenance is None or keyless is None:
            return verdict
        return replace(verdict, source=verify_provenance(image, registry, trust=keyless.bundles, policy=provenance))
    if not reasons:
        raise Refused(f"image {image.digest} carries no cosign signature", code=Reason.IMAGE_UNSIGNED)
    raise Refused(
        [f"image {image.digest} carries no valid cosign signature by a configured {_whom(signers)}", *_unique(reasons)],
        code=Reason.UNTRUSTED_IMAGE_SIGNATURE,
    )


def verify_provenance(
    image: ImageReference, registry: RegistryClient, *, trust: BundleTrust, policy: Provenance
) -> ImageSource:
    """The source named by the first SLSA provenance among the digest's bundles that verifies and fits ``policy``."""
    reasons: list[str] = []
    for bundle in _bundle_documents(image, registry):
        try:
            _signer, statement = check_keyless_bundle(
                bundle(),
                digest=image.digest,
                trust=trust,
                identities=policy.identities,
                predicate_types=PREDICATE_TYPES,
            )
            assert statement is not None  # noqa: S101 - provenance predicates are DSSE statements
            return check_source(statement, repository=policy.repository, ref=policy.ref)
        except Refused as exc:
            reasons.extend(exc.reasons)
    if not reasons:
        raise Refused(f"image {image.digest} carries no provenance attestation", code=Reason.IMAGE_UNSIGNED)
    raise Refused(
        [f"image {image.digest} carries no valid provenance attestation for {policy.repository}", *_unique(reasons)],
        code=Reason.UNTRUSTED_IMAGE_SIGNATURE,
    )


Candidate = Callable[[], ImageVerdict]  # one signature, checked later so one refusal hides no other


def _candidates(image: ImageReference, registry: RegistryClient, *, signers: Signers) -> Iterator[Candidate]:
    """Classic signatures first (cheapest), then bundles; a broken container is one refused candidate."""
    try:
        yield from _classic(image, registry, signers=signers)
    except Refused as exc:
        yield partial(_reraise, exc)
    for bundle in _bundle_documents(image, registry):
        yield partial(_check_bundle, bundle, image, signers=signers)


def _classic(image: ImageReference, registry: RegistryClient, *, signers: Signers) -> Iterator[Candidate]:
    tag = image.digest.replace(":", "-") + ".sig"
    answer = registry.manifest(image.repository, tag, max_bytes=MAX_MANIFEST_BYTES)
    if answer is None:
        return
    layers = _list(_manifest(answer.body, what=f"signature manifest {tag}"), "layers", what=f"signature manifest {tag}")
    if len(layers) > MAX_SIGNATURE_LAYERS:
        raise _refused(f"signature manifest {tag} has {len(layers)} layers, more than {MAX_SIGNATURE_LAYERS}")
    for layer in layers:
        yield partial(_check_classic_layer, layer, image, registry, signers=signers)


def _check_classic_layer(
    layer: object, image: ImageReference, registry: RegistryClient, *, signers: Signers
) -> ImageVerdict:
    descriptor = _descriptor(layer, max_size=MAX_PAYLOAD_BYTES, what="signature layer")
    if descriptor.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
        raise _refused(f"signature layer has media type {str(descriptor.get('mediaType'))[:80]!r}")
    annotations = descriptor.get("annotations")
    signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(signature, str):
        raise _refused(f"signature layer has no {SIGNATURE_ANNOTATION} annotation")
    payload = registry.blob(image.repository, descriptor["digest"], max_bytes=MAX_PAYLOAD_BYTES)
    keyless = signers.keyless
    if keyless is not None and isinstance(annotations, dict) and CERTIFICATE_ANNOTATION in annotations:
        signer = check_classic_keyless(
            payload, annotations, digest=image.digest, root=keyless.root, identities=keyless.identities
        )
        return ImageVerdict(image.digest, str(signer), keyless.root.path, "classic")
    key = check_simple_signing(payload, signature, digest=image.digest, keys=signers.keys)
    return ImageVerdict(image.digest, key.fingerprint, key.path, "classic")


def _bundle_documents(image: ImageReference, registry: RegistryClient) -> Iterator[Callable[[], bytes]]:
    """Each bundle listed for the digest, read only when asked; a broken listing yields one refusal."""
    try:
        index = registry.referrers(
            image.repository, image.digest, artifact_type=BUNDLE_MEDIA_TYPES[0], max_bytes=MAX_MANIFEST_BYTES
        ) or registry.manifest(image.repository, image.digest.replace(":", "-"), max_bytes=MAX_MANIFEST_BYTES)
        if index is None:
            return
        referrers = _list(_manifest(index.body, what="referrers index"), "manifests", what="referrers index")
        if len(referrers) > MAX_REFERRERS:
            raise _refused(f"referrers index lists {len(referrers)} manifests, more than {MAX_REFERRERS}")
    except Refused as exc:
        yield partial(_reraise, exc)
        return
    for entry in referrers:
        if isinstance(entry, dict) and entry.get("artifactType") in BUNDLE_MEDIA_TYPES:
            yield partial(_read_bundle, entry, image, registry)


def _read_bundle(entry: object, image: ImageReference, registry: RegistryClient) -> bytes:
    descriptor = _descriptor(entry, max_size=MAX_MANIFEST_BYTES, what="bundle referrer")
    answer = registry.manifest(image.repository, descriptor["digest"], max_bytes=MAX_MANIFEST_BYTES)
    if answer is None:
        raise _refused(f"bundle manifest {descriptor['digest']} is listed but missing")
    manifest = _manifest(answer.body, what="bundle manifest")
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image.digest:
        raise _refused("bundle manifest's subject is not the declared image")
    layers = [
        layer
        for layer in _list(manifest, "layers", what="bundle manifest")[:4]
        if isinstance(layer, dict) and layer.get("mediaType") in BUNDLE_MEDIA_TYPES
    ]
    if len(layers) != 1:
        raise _refused("bundle manifest holds no single bundle layer")
    layer = _descriptor(layers[0], max_size=MAX_BUNDLE_BYTES, what="bundle layer")
    return registry.blob(image.repository, layer["digest"], max_bytes=MAX_BUNDLE_BYTES)


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


def _manifest(body: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _refused(f"{what} is not JSON") from None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise _refused(f"{what} is not an OCI manifest")
    return document


def _list(document: dict[str, Any], name: str, *, what: str) -> list[Any]:
    value = document.get(name)
    if not isinstance(value, list):
        raise _refused(f"{what} has no {name!r} list")
    return value


def _descriptor(value: object, *, max_size: int, what: str) -> dict[str, Any]:
    """A descriptor whose digest is a sha256 and whose declared size is within ``max_size``."""
    if not isinstance(value, dict) or not re.fullmatch(r"sha256:[0-9a-f]{64}", str(value.get("digest"))):
        raise _refused(f"{what} has no valid sha256 digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_size:
        raise _refused(f"{what} declares size {str(size)[:20]}, outside 0..{max_size} bytes")
    return value


def _whom(signers: Signers) -> str:
    if signers.keyless is None:
        return "key"
    return "key or keyless identity" if signers.keys else "keyless identity"


def _reraise(exc: Refused) -> NoReturn:
    raise exc


def _unique(reasons: list[str]) -> list[str]:
    return list(dict.fromkeys(reasons))[:8]


def _refused(reason: str) -> Refused:
    return Refused(reason, code=Reason.UNTRUSTED_IMAGE_SIGNATURE)
