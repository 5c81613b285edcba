"""Cosign signatures on the real test registry: images signed through its API, then verified."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from controller.errors import Reason, Refused, Retryable
from controller.signatures.images.cosign import fingerprint, load_cosign_key
from controller.signatures.images.verifier import ImageVerdict, verify_image
from controller.signatures.registry import RegistryClient
from testbed import LocalRegistry
from tests.cosign_signing import (
    REGISTRY_MANIFEST_LIMIT,
    RegistryWriter,
    SigningKey,
    make_signing_key,
    sign_bundle,
    sign_classic,
    simple_signing_payload,
)

_serial = itertools.count()


@pytest.fixture
def writer(registry: LocalRegistry) -> RegistryWriter:
    return RegistryWriter(registry.host)


@pytest.fixture
def image(writer: RegistryWriter, images: dict[str, str]) -> str:
    """A real test image, copied into a repository of its own so no other test sees its signatures."""
    return writer.copy_image(images["plain"], f"signed/case{next(_serial)}")


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return make_signing_key(tmp_path / "trusted")


def _verify(pinned: str, registry: LocalRegistry, *keys: SigningKey) -> ImageVerdict:
    trusted = [load_cosign_key(k.public_path) for k in keys]
    return verify_image(pinned, keys=trusted, registry=RegistryClient(registry.host, timeout=5))


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_a_classic_signature_verifies_and_names_the_signing_key(
    image: str, writer: RegistryWriter, registry: LocalRegistry, tmp_path: Path, kind: str
) -> None:
    key = make_signing_key(tmp_path, kind=kind)
    sign_classic(writer, image, key)
    verdict = _verify(image, registry, make_signing_key(tmp_path / "other"), key)
    assert verdict.image_signer == fingerprint(key.private.public_key())
    assert (verdict.digest, verdict.format) == (image.split("@")[1], "classic")


def test_a_bundle_found_at_the_fallback_tag_verifies(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey
) -> None:
    sign_bundle(writer, image, key)
    verdict = _verify(image, registry, key)
    assert (verdict.image_signer, verdict.format) == (fingerprint(key.private.public_key()), "bundle")


def test_an_unsigned_image_is_refused(image: str, registry: LocalRegistry, key: SigningKey) -> None:
    with pytest.raises(Refused, match="carries no cosign signature") as caught:
        _verify(image, registry, key)
    assert caught.value.code == "ImageUnsigned"


def test_signatures_by_another_key_are_refused(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey, tmp_path: Path
) -> None:
    stranger = make_signing_key(tmp_path / "stranger")
    sign_classic(writer, image, stranger)
    sign_bundle(writer, image, stranger)
    with pytest.raises(Refused, match="does not verify under any configured key") as caught:
        _verify(image, registry, key)
    assert caught.value.code == "UntrustedImageSignature"
    assert len(caught.value.reasons) == 3  # the summary, the classic and the bundle candidate


def test_a_signature_borrowed_from_another_image_is_refused(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey, images: dict[str, str]
) -> None:
    other_digest = images["healthy-a"].split("@")[1]
    sign_classic(writer, image, key, payload=simple_signing_payload(image, digest=other_digest))
    with pytest.raises(Refused, match=f"names '{other_digest}', not the declared"):
        _verify(image, registry, key)


def test_a_tampered_payload_is_refused(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey
) -> None:
    signed = simple_signing_payload(image)
    sign_classic(writer, image, key, payload=signed, uploaded=signed.replace(b'"optional":null', b'"optional":{}'))
    with pytest.raises(Refused, match="does not verify"):
        _verify(image, registry, key)


def test_the_largest_signature_manifest_the_registry_serves_is_a_registry_fault_unread(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey
) -> None:
    # docker-registry stores and serves at most 4 MiB per manifest; the 50 MB case needs a
    # hostile server and is in tests/unit/test_image_signatures.py.
    sign_classic(writer, image, key, padding_bytes=REGISTRY_MANIFEST_LIMIT - 4096)
    with pytest.raises(Retryable, match="larger than") as caught:
        _verify(image, registry, key)
    assert caught.value.code == Reason.REGISTRY_ANSWER_TOO_LARGE


def test_a_signature_manifest_of_10000_layers_is_a_registry_fault(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey
) -> None:
    sign_classic(writer, image, key, layers=10_000)
    with pytest.raises(Retryable, match=r"larger than \d+ bytes") as caught:
        _verify(image, registry, key)
    assert caught.value.code == Reason.REGISTRY_ANSWER_TOO_LARGE


def test_a_valid_signature_among_a_few_layers_too_many_still_counts(
    image: str, writer: RegistryWriter, registry: LocalRegistry, key: SigningKey
) -> None:
    sign_classic(writer, image, key, layers=40)  # 40 copies of the valid signature: the first counts
    assert _verify(image, registry, key).image_signer == fingerprint(key.private.public_key())
