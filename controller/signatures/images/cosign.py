"""Cosign signatures over image digests, checked with the public keys the host trusts.

Pure functions over bytes: which registry documents hold the signatures is the business of
``controller.signatures.images.verifier``.  Two formats exist.  The classic one signs a *simple-signing*
payload (JSON naming the image digest and the type ``cosign container image signature``); the
Sigstore bundle v0.3 signs a DSSE envelope around an in-toto statement whose subject is the image
digest and whose predicate type is cosign's signing type.  Either way a signature only counts when
it verifies under a configured key *and* its signed content names exactly the declared digest: a
valid signature lifted from another image must not vouch for this one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from controller.errors import ConfigError, Reason, Refused

SIMPLE_SIGNING_TYPE = "cosign container image signature"
SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
BUNDLE_MEDIA_TYPES = ("application/vnd.dev.sigstore.bundle.v0.3+json",)
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_BUNDLE_BYTES = 256 * 1024
MAX_KEY_BYTES = 64 * 1024
MAX_ENVELOPE_SIGNATURES = 8
BAD_IMAGE_SIGNATURE = Reason.BAD_IMAGE_SIGNATURE
_PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class CosignKey:
    """One trusted public key and the fingerprint that names it in status and audit."""

    path: str
    key: PublicKey
    fingerprint: str  # "SHA256:" + unpadded base64 of the SHA-256 of the DER SubjectPublicKeyInfo

    def verifies(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` over ``data`` was made with this key (its curve fixes the hash)."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                digest = hashes.SHA384() if self.key.curve.key_size == 384 else hashes.SHA256()
                self.key.verify(signature, data, ec.ECDSA(digest))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.key.verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


def load_cosign_keys(paths: Sequence[str]) -> tuple[CosignKey, ...]:
    """Read the configured PEM public keys; an unusable one is a ``ConfigError`` naming the file."""
    return tuple(load_cosign_key(Path(path)) for path in paths)


def load_cosign_key(path: Path) -> CosignKey:
    """One PEM public key (text before the PEM block is allowed, as ``certtool`` writes it)."""
    try:
        data = path.read_bytes()[: MAX_KEY_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read cosign key {path}: {exc.strerror}") from None
    start = data.find(_PEM_BEGIN)
    if len(data) > MAX_KEY_BYTES or start < 0:
        raise ConfigError(f"cosign key {path} holds no PEM public key")
    try:
        key = serialization.load_pem_public_key(data[start:])
    except ValueError:
        raise ConfigError(f"cosign key {path} is not a readable PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in ("secp256r1", "secp384r1"):
        raise ConfigError(f"cosign key {path} uses curve {key.curve.name}; only P-256 and P-384 are supported")
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ConfigError(f"cosign key {path} is neither ECDSA, RSA nor Ed25519")
    return CosignKey(str(path), key, fingerprint(key))


def fingerprint(key: PublicKey) -> str:
    """``SHA256:`` and the unpadded base64 SHA-256 of the key's DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def check_simple_signing(payload: bytes, signature_b64: str, *, digest: str, keys: Sequence[CosignKey]) -> CosignKey:
    """The key that signed a classic payload naming ``digest``; otherwise ``Refused`` saying why."""
    signer = _signer(_b64(signature_b64, what="classic signature"), payload, keys)
    if signer is None:
        raise _refused("classic signature does not verify under any configured key")
    check_simple_signing_payload(payload, digest=digest)
    return signer


def check_simple_signing_payload(payload: bytes, *, digest: str) -> None:
    """A verified classic payload must be cosign's simple signing of exactly ``digest``."""
    try:
        document = _json_object(payload, what="classic payload")
        critical = _field(document, "critical", dict, what="classic payload")
        image = _field(critical, "image", dict, what="classic payload")
        named = _field(image, "docker-manifest-digest", str, what="classic payload")
    except Unreadable as exc:
        raise verdict(exc) from None
    kind = critical.get("type")
    if kind != SIMPLE_SIGNING_TYPE:
        raise _refused(f"classic payload has type {_show(kind)}, not {SIMPLE_SIGNING_TYPE!r}")
    if named != digest:
        raise _refused(f"classic payload names {_show(named)}, not the declared {digest}")


def check_image_bundle(bundle: bytes, *, digest: str, keys: Sequence[CosignKey]) -> CosignKey:
    """The key that signed a bundle whose in-toto statement is cosign's signature of ``digest``."""
    payload_type, payload, signer = open_dsse_bundle(bundle, keys=keys)
    check_statement(payload_type, payload, digest=digest, predicate_types=(SIGN_PREDICATE_TYPE,))
    return signer


def check_statement(
    payload_type: str, payload: bytes, *, digest: str, predicate_types: Sequence[str]
) -> dict[str, Any]:
    """A verified DSSE payload must be an in-toto statement of one of ``predicate_types`` about ``digest``."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise _refused(f"bundle envelope carries {_show(payload_type)}, not an in-toto statement")
    try:
        statement = _json_object(payload, what="bundle statement")
        subjects = _field(statement, "subject", list, what="bundle statement")
    except Unreadable as exc:
        raise verdict(exc) from None
    if statement.get("_type") not in STATEMENT_TYPES:
        raise _refused(f"bundle statement has type {_show(statement.get('_type'))}")
    if statement.get("predicateType") not in predicate_types:
        raise _refused(
            f"bundle statement has predicate type {_show(statement.get('predicateType'))}, not {predicate_types[0]!r}"
        )
    named = [
        s.get("digest", {}).get("sha256")
        for s in subjects[:16]
        if isinstance(s, dict) and isinstance(s.get("digest"), dict)
    ]
    if f"{digest.removeprefix('sha256:')}" not in named or not digest.startswith("sha256:"):
        raise _refused(f"bundle statement names {_show(named)}, not the declared {digest}")
    return statement


def open_dsse_bundle(bundle: bytes, *, keys: Sequence[CosignKey]) -> tuple[str, bytes, CosignKey]:
    """Payload type, payload and signer of a bundle's DSSE envelope, once its signature verifies."""
    document = _bundle(bundle)
    if "dsseEnvelope" not in document and isinstance(document.get("messageSignature"), dict):
        # A well-formed bundle of a kind no image check takes: a verdict, not the registry's fault.
        raise _refused("bundle is a message signature; a key-based image signature is a DSSE in-toto statement")
    envelope = _field(document, "dsseEnvelope", dict, what="bundle")
    payload = _b64(_field(envelope, "payload", str, what="bundle envelope"), what="bundle envelope payload")
    payload_type = _field(envelope, "payloadType", str, what="bundle envelope")
    signed = pae(payload_type.encode(), payload)
    for entry in _field(envelope, "signatures", list, what="bundle envelope")[:MAX_ENVELOPE_SIGNATURES]:
        if isinstance(entry, dict) and isinstance(entry.get("sig"), str):
            signer = _signer(_b64(entry["sig"], what="bundle envelope signature"), signed, keys)
            if signer is not None:
                return payload_type, payload, signer
    raise _refused("bundle envelope signature does not verify under any configured key")


def check_message_bundle(bundle: bytes, *, artifact: bytes, keys: Sequence[CosignKey]) -> CosignKey:
    """The key behind a ``messageSignature`` bundle over ``artifact`` (blobs, not images)."""
    message = _field(_bundle(bundle), "messageSignature", dict, what="bundle")
    declared = _field(message, "messageDigest", dict, what="bundle message")
    algorithm = {"SHA2_256": hashlib.sha256, "SHA2_384": hashlib.sha384}.get(str(declared.get("algorithm")))
    if algorithm is None or _b64(str(declared.get("digest")), what="bundle digest") != algorithm(artifact).digest():
        raise _refused("bundle message digest does not match the artifact")
    signer = _signer(
        _b64(_field(message, "signature", str, what="bundle message"), what="bundle signature"), artifact, keys
    )
    if signer is None:
        raise _refused("bundle message signature does not verify under any configured key")
    return signer


def _bundle(bundle: bytes) -> dict[str, Any]:
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise _unreadable(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    document = _json_object(bundle, what="bundle")
    if document.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise _unreadable(f"bundle has media type {_show(document.get('mediaType'))}, not a bundle v0.3")
    return document


def pae(payload_type: bytes, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature actually covers."""
    return b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(payload), payload)


def _signer(signature: bytes, data: bytes, keys: Sequence[CosignKey]) -> CosignKey | None:
    return next((key for key in keys if key.verifies(signature, data)), None)


def _json_object(data: bytes, *, what: str) -> dict[str, Any]:
    if len(data) > MAX_PAYLOAD_BYTES * 4:
        raise _unreadable(f"{what} is too large")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise _unreadable(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise _unreadable(f"{what} is not a JSON object")
    return document


def _field(document: dict[str, Any], name: str, kind: type, *, what: str) -> Any:
    value = document.get(name)
    if not isinstance(value, kind):
        raise _unreadable(f"{what} has no valid {name!r}")
    return value


def _b64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _unreadable(f"{what} is not base64") from None


def _show(value: object) -> str:
    return repr(value)[:120]


def _refused(reason: str) -> Refused:
    return Refused(reason, code=BAD_IMAGE_SIGNATURE)


class Unreadable(Refused):
    """A signature document that cannot be read at all: before any key judged it, the registry's fault.

    ``controller.signatures.images.verifier`` retries it like an outage; once a key has verified
    the document, unreadable signed content is a verdict (``verdict``) and quarantines.
    """


def _unreadable(reason: str) -> Unreadable:
    return Unreadable(reason, code=BAD_IMAGE_SIGNATURE)


def verdict(exc: Unreadable) -> Refused:
    """The same reasons as a plain refusal: the content was signed by a trusted key, so it is judged."""
    return Refused(exc.reasons, code=BAD_IMAGE_SIGNATURE)
