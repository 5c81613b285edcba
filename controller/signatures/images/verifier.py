"""Before the pull: does the declared digest carry a cosign signature by a key the host trusts?

The commit signature proves who approved a digest; this proves the bytes behind the digest came out
of a build holding a trusted key.  Signatures are found where cosign puts them in the image's own
repository: the classic ``sha256-<hex>.sig`` tag, and Sigstore bundles through the OCI 1.1 referrers
API or, on registries without it, the ``sha256-<hex>`` tag.  Every candidate is bounded (manifest and
payload sizes, layer and referrer counts) and checked by ``controller.signatures.images.cosign``.  Only a
cryptographic verdict is ``Refused`` (and quarantines the release): no signature at all, or signatures
no configured key made or that name another digest.  An answer that is no signature document — garbage
under status 200, a manifest without layers, a descriptor without a digest — is the registry's fault,
``Retryable`` like an outage, so the release is deployed once the registry answers properly again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from controller.errors import Reason, Refused, Retryable
from controller.signatures.images.cosign import (
    BUNDLE_MEDIA_TYPES,
    MAX_BUNDLE_BYTES,
    MAX_PAYLOAD_BYTES,
    CosignKey,
    Unreadable,
    check_image_bundle,
    check_simple_signing,
)
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
    image_signer: str  # the key's SHA-256 fingerprint, recorded next to the commit signer
    key_path: str
    format: Literal["classic", "bundle"]


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


def registry_for(reference: str, *, credentials: dict[str, str] | None, timeout: float = 10.0) -> RegistryClient:
    """A registry client for ``reference``'s host with the pull's credentials (``registry_auth``)."""
    username, password = (credentials or {}).get("username"), (credentials or {}).get("password")
    return RegistryClient(ImageReference.parse(reference).host, username=username, password=password, timeout=timeout)


def verify_image(reference: str, *, keys: Sequence[CosignKey], registry: RegistryClient) -> ImageVerdict:
    """The first valid signature of ``reference``'s digest by one of ``keys``.

    Raises ``Refused`` (code ``ImageUnsigned`` when no signature exists at all,
    ``UntrustedImageSignature`` with every candidate's reason otherwise), or the first
    ``Retryable`` when the registry failed for a candidate and no other one verified.
    """
    image = ImageReference.parse(reference)
    if image.host != registry.host:
        raise ValueError(f"registry client for {registry.host} cannot check {image.host}")
    reasons: list[str] = []
    fault: Retryable | None = None
    for candidate in _candidates(image, registry, keys=keys):
        try:
            return candidate()
        except Unreadable as exc:  # before any key judged it: the registry served no signature document
            fault = fault or Retryable(f"registry {image.host}: {exc}", code=Reason.REGISTRY_UNAVAILABLE)
        except Refused as exc:
            reasons.extend(exc.reasons)
        except Retryable as exc:
            fault = fault or exc
    if fault is not None:  # a signature may hide behind the fault: no verdict until the registry answers
        raise fault
    if not reasons:
        raise Refused(f"image {image.digest} carries no cosign signature", code=Reason.IMAGE_UNSIGNED)
    raise Refused(
        [f"image {image.digest} carries no valid cosign signature by a configured key", *_unique(reasons)],
        code=Reason.UNTRUSTED_IMAGE_SIGNATURE,
    )


Candidate = Callable[[], ImageVerdict]  # one signature, checked later so one refusal hides no other


def _candidates(image: ImageReference, registry: RegistryClient, *, keys: Sequence[CosignKey]) -> Iterator[Candidate]:
    """Classic signatures first (cheapest), then bundles; a broken container is one refused candidate."""
    try:
        yield from _classic(image, registry, keys=keys)
    except (Refused, Retryable) as exc:
        yield partial(_reraise, exc)
    try:
        yield from _bundles(image, registry, keys=keys)
    except (Refused, Retryable) as exc:
        yield partial(_reraise, exc)


def _classic(image: ImageReference, registry: RegistryClient, *, keys: Sequence[CosignKey]) -> Iterator[Candidate]:
    tag = image.digest.replace(":", "-") + ".sig"
    answer = registry.manifest(image.repository, tag, max_bytes=MAX_MANIFEST_BYTES)
    if answer is None:
        return
    layers = _list(_manifest(answer.body, what=f"signature manifest {tag}"), "layers", what=f"signature manifest {tag}")
    if len(layers) > MAX_SIGNATURE_LAYERS:
        raise _refused(f"signature manifest {tag} has {len(layers)} layers, more than {MAX_SIGNATURE_LAYERS}")
    for layer in layers:
        yield partial(_check_classic_layer, layer, image, registry, keys=keys)


def _check_classic_layer(
    layer: object, image: ImageReference, registry: RegistryClient, *, keys: Sequence[CosignKey]
) -> ImageVerdict:
    descriptor = _descriptor(layer, max_size=MAX_PAYLOAD_BYTES, what="signature layer")
    if descriptor.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
        raise _fault(f"signature layer has media type {str(descriptor.get('mediaType'))[:80]!r}")
    annotations = descriptor.get("annotations")
    signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(signature, str):
        raise _fault(f"signature layer has no {SIGNATURE_ANNOTATION} annotation")
    payload = registry.blob(image.repository, descriptor["digest"], max_bytes=MAX_PAYLOAD_BYTES)
    key = check_simple_signing(payload, signature, digest=image.digest, keys=keys)
    return ImageVerdict(image.digest, key.fingerprint, key.path, "classic")


def _bundles(image: ImageReference, registry: RegistryClient, *, keys: Sequence[CosignKey]) -> Iterator[Candidate]:
    index = registry.referrers(
        image.repository, image.digest, artifact_type=BUNDLE_MEDIA_TYPES[0], max_bytes=MAX_MANIFEST_BYTES
    ) or registry.manifest(image.repository, image.digest.replace(":", "-"), max_bytes=MAX_MANIFEST_BYTES)
    if index is None:
        return
    referrers = _list(_manifest(index.body, what="referrers index"), "manifests", what="referrers index")
    if len(referrers) > MAX_REFERRERS:
        raise _refused(f"referrers index lists {len(referrers)} manifests, more than {MAX_REFERRERS}")
    for entry in referrers:
        if isinstance(entry, dict) and entry.get("artifactType") in BUNDLE_MEDIA_TYPES:
            yield partial(_check_bundle_referrer, entry, image, registry, keys=keys)


def _check_bundle_referrer(
    entry: object, image: ImageReference, registry: RegistryClient, *, keys: Sequence[CosignKey]
) -> ImageVerdict:
    descriptor = _descriptor(entry, max_size=MAX_MANIFEST_BYTES, what="bundle referrer")
    answer = registry.manifest(image.repository, descriptor["digest"], max_bytes=MAX_MANIFEST_BYTES)
    if answer is None:
        raise _fault(f"bundle manifest {descriptor['digest']} is listed but missing")
    manifest = _manifest(answer.body, what="bundle manifest")
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image.digest:
        raise _fault("bundle manifest's subject is not the declared image")
    layers = [
        layer
        for layer in _list(manifest, "layers", what="bundle manifest")[:4]
        if isinstance(layer, dict) and layer.get("mediaType") in BUNDLE_MEDIA_TYPES
    ]
    if len(layers) != 1:
        raise _fault("bundle manifest holds no single bundle layer")
    layer = _descriptor(layers[0], max_size=MAX_BUNDLE_BYTES, what="bundle layer")
    bundle = registry.blob(image.repository, layer["digest"], max_bytes=MAX_BUNDLE_BYTES)
    key = check_image_bundle(bundle, digest=image.digest, keys=keys)
    return ImageVerdict(image.digest, key.fingerprint, key.path, "bundle")


def _manifest(body: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _fault(f"{what} is not JSON") from None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise _fault(f"{what} is not an OCI manifest")
    return document


def _list(document: dict[str, Any], name: str, *, what: str) -> list[Any]:
    value = document.get(name)
    if not isinstance(value, list):
        raise _fault(f"{what} has no {name!r} list")
    return value


def _descriptor(value: object, *, max_size: int, what: str) -> dict[str, Any]:
    """A descriptor whose digest is a sha256 and whose declared size is within ``max_size``."""
    if not isinstance(value, dict) or not re.fullmatch(r"sha256:[0-9a-f]{64}", str(value.get("digest"))):
        raise _fault(f"{what} has no valid sha256 digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_size:
        raise _fault(f"{what} declares size {str(size)[:20]}, outside 0..{max_size} bytes")
    return value


def _reraise(exc: Refused | Retryable) -> ImageVerdict:
    raise exc


def _unique(reasons: list[str]) -> list[str]:
    return list(dict.fromkeys(reasons))[:8]


def _refused(reason: str) -> Refused:
    """Over a count cap: refused like an answer over its size cap (``RegistryAnswerTooLarge``)."""
    return Refused(reason, code=Reason.UNTRUSTED_IMAGE_SIGNATURE)


def _fault(reason: str) -> Retryable:
    """The registry's answer is no signature document: retried like an outage, never a verdict."""
    return Retryable(f"registry answer is not a valid signature document: {reason}", code=Reason.REGISTRY_UNAVAILABLE)
