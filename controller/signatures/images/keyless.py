"""Keyless cosign signatures: a Fulcio certificate and a Rekor entry, checked offline against a pinned root.

A keyless signature carries no long-lived key: the signer's key sits in a short-lived certificate
that Fulcio issued for an OIDC identity (a GitHub Actions workflow, a person's e-mail), and the
Rekor transparency log's timestamp proves the signature was made while the certificate was valid.
Everything is judged against the host's pinned ``trusted_root.json`` (Sigstore's format, read by
``controller.signatures.images.trusted_root``): the Fulcio CAs, the CT log keys and the Rekor keys,
each with the time it was valid.  Nothing is fetched.

This module says who a certificate names (``identity_of``) and whether that is one
of the configured ``identities``, and verifies cosign's *classic* ``.sig`` format, which
sigstore-python does not read: the simple-signing payload, its signature, the certificate in
``dev.sigstore.cosign/certificate`` and the Rekor signed entry timestamp (SET) in
``dev.sigstore.cosign/bundle``.  The ``dev.sigstore.cosign/chain`` annotation is offered by the
signer, so it is never used: the chain comes from the trusted root.  Bundles are
``controller.signatures.images.bundles``' business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from controller.errors import Reason, Refused
from controller.signatures.images.cosign import Unreadable, check_simple_signing_payload, check_statement, pae
from controller.signatures.images.trusted_root import CertificateAuthority, TrustedRoot
from controller.untrusted import bounded

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw bytes
ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # a DER UTF8String
OTHERNAME_SAN = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
# Fulcio writes these from the OIDC token of the workflow run, not from anything the workflow says.
BUILD_SIGNER_URI = ObjectIdentifier("1.3.6.1.4.1.57264.1.9")
SOURCE_REPOSITORY_URI = ObjectIdentifier("1.3.6.1.4.1.57264.1.12")
SOURCE_REPOSITORY_DIGEST = ObjectIdentifier("1.3.6.1.4.1.57264.1.13")
SOURCE_REPOSITORY_REF = ObjectIdentifier("1.3.6.1.4.1.57264.1.14")
MAX_ANNOTATION_BYTES = 32 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KeylessIdentity:
    """One ``identities`` entry: the issuer exactly, the subject exactly or by a full-match pattern."""

    issuer: str
    subject: str | None = None
    subject_regexp: str | None = None

    def matches(self, subject: str, issuer: str) -> bool:
        """Whether a certificate naming ``subject`` (a SAN) and ``issuer`` is this identity."""
        if issuer != self.issuer:
            return False
        if self.subject is not None:
            return subject == self.subject
        return self.subject_regexp is not None and re.fullmatch(self.subject_regexp, subject) is not None

    def names(self, recorded: str) -> bool:
        """Whether a recorded ``identity (issuer host)`` signer is this identity (a changed policy is not)."""
        subject, _, host = recorded.rpartition(" (")
        return bool(subject) and host == f"{_host(self.issuer)})" and self.matches(subject, self.issuer)


@dataclass(frozen=True)
class KeylessSigner:
    """Who a verified keyless signature names, shown as ``identity (issuer host)``; its certificate kept."""

    subject: str
    issuer: str
    certificate: x509.Certificate | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return bounded(f"{self.subject} ({_host(self.issuer)})")


@dataclass(frozen=True)
class CertificateSource:
    """The source a Fulcio certificate names (Source Repository URI, Ref, Digest; Build Signer URI).

    Fulcio copies them from the workflow run's OIDC token, so they say which repository, ref and
    commit the run was started from, whatever the workflow later writes into a statement.
    """

    repository: str | None
    ref: str | None
    commit: str | None
    build_signer: str | None


def source_of_certificate(certificate: x509.Certificate) -> CertificateSource:
    """The certificate's source extensions (each ``None`` when absent); ``Refused`` when one is no UTF8String."""

    def read(oid: ObjectIdentifier) -> str | None:
        try:
            raw = certificate.extensions.get_extension_for_oid(oid).value.value  # type: ignore[attr-defined]
        except x509.ExtensionNotFound:
            return None
        return _der_utf8(raw, what=f"extension {oid.dotted_string}")

    return CertificateSource(
        repository=read(SOURCE_REPOSITORY_URI),
        ref=read(SOURCE_REPOSITORY_REF),
        commit=read(SOURCE_REPOSITORY_DIGEST),
        build_signer=read(BUILD_SIGNER_URI),
    )


def _host(issuer: str) -> str:
    return re.sub(r"^https?://", "", issuer).split("/")[0]


def identity_of(certificate: x509.Certificate) -> KeylessSigner:
    """The certificate's SAN and OIDC issuer (the v2 extension first); ``Refused`` when it lacks one."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _refused("keyless certificate has no subject alternative name") from None
    names = [
        *san.get_values_for_type(x509.UniformResourceIdentifier),
        *san.get_values_for_type(x509.RFC822Name),
        *(
            o.value.decode(errors="replace")
            for o in san.get_values_for_type(x509.OtherName)
            if o.type_id == OTHERNAME_SAN
        ),
    ]
    if len(names) != 1:
        raise _refused(f"keyless certificate names {len(names)} identities, not one")
    return KeylessSigner(names[0], _issuer(certificate))


def match_identity(certificate: x509.Certificate, identities: Sequence[KeylessIdentity]) -> KeylessSigner:
    """The certificate's identity when one of ``identities`` takes it; else ``Refused`` naming it."""
    signer = identity_of(certificate)
    if not any(identity.matches(signer.subject, signer.issuer) for identity in identities):
        who = f"{bounded(signer.subject)!r} (issuer {bounded(signer.issuer)!r})"
        raise _refused(f"keyless signer {who} is not a configured identity")
    return replace(signer, certificate=certificate)


def check_classic_keyless(
    payload: bytes,
    annotations: Mapping[str, object],
    *,
    digest: str,
    root: TrustedRoot,
    identities: Sequence[KeylessIdentity],
) -> KeylessSigner:
    """The identity behind a classic ``.sig`` layer whose certificate, SET and payload all hold."""
    text = _text(annotations, "dev.cosignproject.cosign/signature")
    signature, certificate, entry = _offered(annotations, signature=text)
    integrated = _verify_set(entry, root)
    _bind_entry(entry, payload=payload, signature=signature, certificate=certificate)
    verify_certificate(certificate, root=root, at=integrated)
    signer = match_identity(certificate, identities)
    if not _verifies(certificate.public_key(), signature, payload):
        raise _refused("classic keyless signature does not verify under its certificate's key")
    check_simple_signing_payload(payload, digest=digest)
    return signer


def check_classic_attestation(
    envelope: bytes,
    annotations: Mapping[str, object],
    *,
    digest: str,
    root: TrustedRoot,
    identities: Sequence[KeylessIdentity],
    predicate_types: Sequence[str],
) -> tuple[KeylessSigner, dict[str, Any]]:
    """Signer and statement of a classic ``.att`` layer (``cosign attest``): a DSSE envelope, certificate and SET.

    The Rekor ``intoto`` entry must log this envelope's hash and this certificate, as cosign checks it.
    """
    _, certificate, entry = _offered(annotations, signature=None)
    integrated = _verify_set(entry, root)
    _bind_intoto(entry, envelope=envelope, certificate=certificate)
    verify_certificate(certificate, root=root, at=integrated)
    signer = match_identity(certificate, identities)
    payload_type, payload = _open_envelope(envelope, certificate)
    return signer, check_statement(payload_type, payload, digest=digest, predicate_types=predicate_types)


def _offered(
    annotations: Mapping[str, object], *, signature: str | None
) -> tuple[bytes, x509.Certificate, dict[str, Any]]:
    """The signature, certificate and Rekor bundle a classic layer offers, read before anything is judged.

    An annotation that is missing or over its size is a verdict (``Refused``); one that cannot be
    read at all (not base64, not PEM, not a Rekor bundle) is no signature document: ``Unreadable``,
    the registry's fault, retried like an outage.
    """
    certificate_text = _text(annotations, CERTIFICATE_ANNOTATION)
    bundle_text = _text(annotations, BUNDLE_ANNOTATION)
    try:
        decoded = b"" if signature is None else _b64(signature, what="classic signature")
        return decoded, _certificate(certificate_text), _rekor_bundle(bundle_text)
    except Refused as exc:
        raise Unreadable(exc.reasons, code=Reason.BAD_IMAGE_SIGNATURE) from None


def _open_envelope(envelope: bytes, certificate: x509.Certificate) -> tuple[str, bytes]:
    """A DSSE envelope's payload type and payload, once one of its signatures verifies under the certificate."""
    try:
        document = json.loads(envelope)
        payload_type = document["payloadType"]
        payload = _b64(document["payload"], what="attestation payload")
        signatures = [s["sig"] for s in document["signatures"][:8] if isinstance(s.get("sig"), str)]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise _refused("attestation layer is not a DSSE envelope") from None
    if not isinstance(payload_type, str):
        raise _refused("attestation envelope has no payload type")
    signed = pae(payload_type.encode(), payload)
    if not any(
        _verifies(certificate.public_key(), _b64(sig, what="attestation signature"), signed) for sig in signatures
    ):
        raise _refused("attestation envelope signature does not verify under its certificate's key")
    return payload_type, payload


def _bind_intoto(entry: dict[str, Any], *, envelope: bytes, certificate: x509.Certificate) -> None:
    """The logged ``intoto`` entry (0.0.1 or 0.0.2) must be this envelope's hash and this certificate."""
    try:
        body = json.loads(_b64(entry["Payload"]["body"], what="Rekor entry body"))
        spec, version = body["spec"], body.get("apiVersion")
        content = spec["content"]
        signatures = content["envelope"]["signatures"] if version == "0.0.2" else [spec]
        logged_key = signatures[0]["publicKey"]
        logged_hash = content["hash"]
    except (ValueError, TypeError, KeyError, IndexError):
        raise _refused("Rekor entry body is not an intoto entry") from None
    if body.get("kind") != "intoto" or version not in ("0.0.1", "0.0.2"):
        raise _refused("Rekor entry is not an intoto 0.0.1 or 0.0.2 entry")
    if logged_hash != {"algorithm": "sha256", "value": hashlib.sha256(envelope).hexdigest()}:
        raise _refused("Rekor entry logs another attestation than the one offered")
    if _certificate(_b64(str(logged_key), what="Rekor entry key").decode(errors="replace")) != certificate:
        raise _refused("Rekor entry logs another certificate than the one offered")


def verify_certificate(certificate: x509.Certificate, *, root: TrustedRoot, at: datetime) -> None:
    """Chained to a Fulcio CA of ``root`` valid at ``at``, valid itself then, for code signing, with a valid SCT."""
    for authority in root.authorities:
        if not authority.valid.holds(at):
            continue
        try:
            chain = _verify_chain(certificate, authority, at=at)
        except (VerificationError, ValueError):
            continue
        _verify_usage(certificate)
        _verify_sct(certificate, issuer=chain[0], root=root)
        return
    raise _refused(
        f"keyless certificate does not chain to a Fulcio CA of the trusted root valid at {at:%Y-%m-%dT%H:%M:%SZ}"
    )


def _verify_chain(certificate: x509.Certificate, authority: CertificateAuthority, *, at: datetime) -> list[Any]:
    """The verified chain above ``certificate`` (issuer first), or ``VerificationError``."""
    # Fulcio certificates are for code signing, an EKU the Web PKI client profile would refuse.
    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store([authority.chain[-1]]))
        .time(at)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    return list(verifier.verify(certificate, list(authority.chain[:-1])).chain[1:])


def _verify_usage(certificate: x509.Certificate) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise _refused("keyless certificate has no key usage for code signing") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise _refused("keyless certificate is not for code signing")


def _verify_sct(certificate: x509.Certificate, *, issuer: x509.Certificate, root: TrustedRoot) -> None:
    """An embedded SCT by a CT log of the root, over this certificate's precertificate."""
    try:
        scts = certificate.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value
    except x509.ExtensionNotFound:
        raise _refused("keyless certificate carries no signed certificate timestamp") from None
    issuer_key_hash = hashlib.sha256(
        issuer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).digest()
    tbs = certificate.tbs_precertificate_bytes
    for sct in scts:
        signed = (
            b"\x00\x00"
            + ((sct.timestamp.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)).to_bytes(8, "big")
            + b"\x00\x01"
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + len(sct.extension_bytes).to_bytes(2, "big")
            + sct.extension_bytes
        )
        for log in root.ct_keys:
            if log.log_id == sct.log_id and _verifies(log.key, sct.signature, signed):
                return
    raise _refused("keyless certificate's signed certificate timestamp does not verify under a CT log key")


def _verify_set(entry: dict[str, Any], root: TrustedRoot) -> datetime:
    """The integrated time a Rekor key of the root signed for this entry (its SET)."""
    body = entry["Payload"]
    canonical = json.dumps(
        {
            "body": body["body"],
            "integratedTime": body["integratedTime"],
            "logID": body["logID"],
            "logIndex": body["logIndex"],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    integrated = datetime.fromtimestamp(body["integratedTime"], tz=UTC)
    set_signature = _b64(entry["SignedEntryTimestamp"], what="Rekor signed entry timestamp")
    for key in root.rekor_keys:
        if key.log_id.hex() == body["logID"] and key.valid.holds(integrated):
            if _verifies(key.key, set_signature, canonical):
                return integrated
            raise _refused("Rekor signed entry timestamp does not verify under the log's key")
    raise _refused(f"Rekor log {str(body['logID'])[:64]} is not in the trusted root at the entry's time")


def _bind_entry(entry: dict[str, Any], *, payload: bytes, signature: bytes, certificate: x509.Certificate) -> None:
    """The logged ``hashedrekord`` must be this payload's hash, this signature and this certificate."""
    try:
        body = json.loads(_b64(entry["Payload"]["body"], what="Rekor entry body"))
        spec = body["spec"]
        logged_hash = spec["data"]["hash"]
        logged_signature = _b64(spec["signature"]["content"], what="Rekor entry signature")
        logged_key = _b64(spec["signature"]["publicKey"]["content"], what="Rekor entry key")
    except (ValueError, TypeError, KeyError):
        raise _refused("Rekor entry body is not a hashedrekord") from None
    if (body.get("kind"), body.get("apiVersion")) != ("hashedrekord", "0.0.1"):
        raise _refused("Rekor entry is not a hashedrekord 0.0.1")
    if logged_hash != {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}:
        raise _refused("Rekor entry logs another payload than the one signed here")
    if logged_signature != signature:
        raise _refused("Rekor entry logs another signature than the one offered")
    if _certificate(logged_key.decode(errors="replace")) != certificate:
        raise _refused("Rekor entry logs another certificate than the one offered")


def _rekor_bundle(text: str) -> dict[str, Any]:
    try:
        entry = json.loads(text)
        payload = entry["Payload"]
        if not (
            isinstance(entry["SignedEntryTimestamp"], str)
            and isinstance(payload["body"], str)
            and isinstance(payload["integratedTime"], int)
            and isinstance(payload["logIndex"], int)
            and isinstance(payload["logID"], str)
        ):
            raise TypeError
        datetime.fromtimestamp(payload["integratedTime"], tz=UTC)  # a time no clock can hold is no entry
        base64.b64decode(entry["SignedEntryTimestamp"], validate=True)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError, OSError):
        raise _refused(f"{BUNDLE_ANNOTATION} annotation is not a Rekor bundle") from None
    return dict(entry)


def _certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise _refused("keyless certificate is not a PEM certificate") from None


def _issuer(certificate: x509.Certificate) -> str:
    extensions = certificate.extensions
    try:
        raw = extensions.get_extension_for_oid(ISSUER_V2).value.value  # type: ignore[attr-defined]
        return _der_utf8(raw, what="issuer")
    except x509.ExtensionNotFound:
        pass
    try:
        return bytes(extensions.get_extension_for_oid(ISSUER_V1).value.value).decode()  # type: ignore[attr-defined]
    except (x509.ExtensionNotFound, UnicodeDecodeError):
        raise _refused("keyless certificate names no OIDC issuer") from None


def _der_utf8(raw: bytes, *, what: str) -> str:
    """A DER UTF8String (tag 12, short or long length) as text."""
    if len(raw) < 2 or raw[0] != 0x0C:
        raise _refused(f"keyless certificate's {what} is not a UTF8String")
    length, offset = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
    if offset + length != len(raw):
        raise _refused(f"keyless certificate's {what} has a broken length")
    return raw[offset:].decode(errors="replace")


def _verifies(key: object, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            digest = hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA256()
            key.verify(signature, data, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, rsa.RSAPublicKey):
            from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415 - rare key kind

            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _text(annotations: Mapping[str, object], name: str) -> str:
    value = annotations.get(name)
    if not isinstance(value, str) or len(value) > MAX_ANNOTATION_BYTES:
        raise _refused(f"signature layer has no usable {name} annotation")
    return value


def _b64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise _refused(f"{what} is not base64") from None


def _refused(reason: str) -> Refused:
    return Refused(reason, code=Reason.BAD_IMAGE_SIGNATURE)
