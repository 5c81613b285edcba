"""Where cosign and GitHub put a digest's signatures and attestations in a registry, read within bounds.

The image's own repository holds them: the classic tags ``sha256-<hex>.sig`` (signatures) and
``sha256-<hex>.att`` (attestations), whose layers each carry one, and Sigstore bundles as OCI 1.1
artifacts about the digest, listed by the referrers API or, on registries without it, an index at the
tag ``sha256-<hex>``.  Every document is bounded (manifest and blob sizes, layer and referrer counts).
Whoever can push to the image repository can add candidates, so a cap broken is the registry's
fault, never a verdict: the candidates within the cap are still checked (a valid signature among
them lets the release through), and when none of them verifies the pass is retried
(``Retryable``, ``RegistryAnswerTooLarge``) with a sentence saying that a valid signature may be
among those not checked — a correctly signed release is held, never quarantined.  One that is no
signature document at all (garbage under status 200, a manifest without layers, a descriptor
without a digest) is the registry's fault and ``Retryable`` like an outage
(``controller.signatures.registry``), so a release is deployed once the registry answers properly
again.  What the documents *say* is judged elsewhere:
``verifier`` (signatures) and ``provenance`` (attestations).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, TypeVar

from controller.errors import Reason, Refused, Retryable
from controller.signatures.images.cosign import BUNDLE_MEDIA_TYPES, MAX_BUNDLE_BYTES, Unreadable
from controller.signatures.registry import RegistryClient

MAX_MANIFEST_BYTES = 256 * 1024
MAX_SIGNATURE_LAYERS = 32
MAX_REFERRERS = 16
_REFERENCE = re.compile(r"^(?P<host>[^/@]+)/(?P<repository>[a-z0-9._/-]+)@(?P<digest>sha256:[0-9a-f]{64})$")


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


def tagged_layers(
    image: ImageReference, registry: RegistryClient, *, suffix: str, what: str
) -> tuple[list[Any], Retryable | None]:
    """The layers of the manifest at ``sha256-<hex>.<suffix>`` (none when the tag is absent), at most the cap.

    Past the cap, the fault to raise when none of the layers kept verifies.
    """
    tag = image.digest.replace(":", "-") + f".{suffix}"
    answer = registry.manifest(image.repository, tag, max_bytes=MAX_MANIFEST_BYTES)
    if answer is None:
        return [], None
    layers = list_field(manifest_document(answer.body, what=f"{what} {tag}"), "layers", what=f"{what} {tag}")
    if len(layers) <= MAX_SIGNATURE_LAYERS:
        return layers, None
    return layers[:MAX_SIGNATURE_LAYERS], over_cap(f"{what} {tag} has {len(layers)} layers", MAX_SIGNATURE_LAYERS)


def bundle_documents(image: ImageReference, registry: RegistryClient) -> Iterator[Callable[[], bytes]]:
    """Each bundle listed for the digest (at most the cap), read only when asked; a broken listing yields a fault."""
    try:
        index = registry.referrers(
            image.repository, image.digest, artifact_type=BUNDLE_MEDIA_TYPES[0], max_bytes=MAX_MANIFEST_BYTES
        ) or registry.manifest(image.repository, image.digest.replace(":", "-"), max_bytes=MAX_MANIFEST_BYTES)
        if index is None:
            return
        referrers = list_field(
            manifest_document(index.body, what="referrers index"), "manifests", what="referrers index"
        )
    except (Refused, Retryable) as exc:
        yield partial(reraise, exc)
        return
    bundles = [e for e in referrers if isinstance(e, dict) and e.get("artifactType") in BUNDLE_MEDIA_TYPES]
    for entry in bundles[:MAX_REFERRERS]:
        yield partial(read_bundle, entry, image, registry)
    if len(bundles) > MAX_REFERRERS:
        yield partial(reraise, over_cap(f"referrers index lists {len(bundles)} bundles", MAX_REFERRERS))


def over_cap(what: str, cap: int) -> Retryable:
    """A count cap broken: the registry's fault, retried, saying a valid signature may be past the cap."""
    return Retryable(
        f"registry fault: {what}, more than the {cap} checked; none of those verified, and a valid "
        "signature may be among the rest (anyone who can push to the image repository can add candidates)",
        code=Reason.REGISTRY_ANSWER_TOO_LARGE,
    )


def read_bundle(entry: object, image: ImageReference, registry: RegistryClient) -> bytes:
    """The bundle a referrer entry points at, once its manifest is about this digest and holds one bundle."""
    descriptor = bounded_descriptor(entry, max_size=MAX_MANIFEST_BYTES, what="bundle referrer")
    answer = registry.manifest(image.repository, descriptor["digest"], max_bytes=MAX_MANIFEST_BYTES)
    if answer is None:
        raise fault(f"bundle manifest {descriptor['digest']} is listed but missing")
    manifest = manifest_document(answer.body, what="bundle manifest")
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image.digest:
        raise fault("bundle manifest's subject is not the declared image")
    layers = [
        layer
        for layer in list_field(manifest, "layers", what="bundle manifest")[:4]
        if isinstance(layer, dict) and layer.get("mediaType") in BUNDLE_MEDIA_TYPES
    ]
    if len(layers) != 1:
        raise fault("bundle manifest holds no single bundle layer")
    layer = bounded_descriptor(layers[0], max_size=MAX_BUNDLE_BYTES, what="bundle layer")
    return registry.blob(image.repository, layer["digest"], max_bytes=MAX_BUNDLE_BYTES)


def manifest_document(body: bytes, *, what: str) -> dict[str, Any]:
    """A JSON OCI manifest or index (schema version 2)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise fault(f"{what} is not JSON") from None
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise fault(f"{what} is not an OCI manifest")
    return document


def list_field(document: dict[str, Any], name: str, *, what: str) -> list[Any]:
    """A field that must be a list."""
    value = document.get(name)
    if not isinstance(value, list):
        raise fault(f"{what} has no {name!r} list")
    return value


def bounded_descriptor(value: object, *, max_size: int, what: str) -> dict[str, Any]:
    """A descriptor whose digest is a sha256 and whose declared size is within ``max_size``."""
    if not isinstance(value, dict) or not re.fullmatch(r"sha256:[0-9a-f]{64}", str(value.get("digest"))):
        raise fault(f"{what} has no valid sha256 digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_size:
        raise fault(f"{what} declares size {str(size)[:20]}, outside 0..{max_size} bytes")
    return value


def reraise(exc: Refused | Retryable) -> NoReturn:
    """Raise ``exc`` when a deferred candidate is tried (a broken container is one refused candidate)."""
    raise exc


def unique(reasons: list[str]) -> list[str]:
    """Reasons without repeats, at most eight."""
    return list(dict.fromkeys(reasons))[:8]


def refused(reason: str) -> Refused:
    """A verdict on a readable document: it is no signature the policy accepts."""
    return Refused(reason, code=Reason.UNTRUSTED_IMAGE_SIGNATURE)


def fault(reason: str) -> Retryable:
    """The registry's answer is no signature document: retried like an outage, never a verdict."""
    return Retryable(f"registry answer is not a valid signature document: {reason}", code=Reason.REGISTRY_UNAVAILABLE)


T = TypeVar("T")


def first_valid(candidates: Iterable[Callable[[], T]], *, host: str, nothing: str, invalid: str) -> T:
    """The first candidate that verifies; a refusal or a registry fault in one hides no other.

    With none valid: the registry's first fault (``Retryable``: a valid one may hide behind it),
    else ``Refused`` — ``ImageUnsigned`` saying ``nothing`` when there was no candidate at all,
    ``UntrustedImageSignature`` saying ``invalid`` with every candidate's reason otherwise.  A
    document no signer could judge (``Unreadable``) is the registry's fault, not a verdict.
    """
    reasons: list[str] = []
    outage: Retryable | None = None
    for candidate in candidates:
        try:
            return candidate()
        except Unreadable as exc:
            outage = outage or Retryable(f"registry {host}: {exc}", code=Reason.REGISTRY_UNAVAILABLE)
        except Refused as exc:
            reasons.extend(exc.reasons)
        except Retryable as exc:  # a broken count cap says most: a valid signature may be past it
            over_cap = exc.code == Reason.REGISTRY_ANSWER_TOO_LARGE
            outage = exc if outage is None or (over_cap and outage.code != exc.code) else outage
    if outage is not None:
        raise outage
    if not reasons:
        raise Refused(nothing, code=Reason.IMAGE_UNSIGNED)
    raise Refused([invalid, *unique(reasons)], code=Reason.UNTRUSTED_IMAGE_SIGNATURE)
