"""OpenPGP commit signatures, verified in-process with pysequoia (Sequoia-PGP).

The only module that imports ``pysequoia``.  Sequoia checks the signature and
that the key was a valid signing key when the signature was made; this module
adds the controller's own-clock rule: a certificate that is revoked or expired
*now* is refused, whatever date the signature claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pysequoia
from pysequoia.packet import PacketPile, SignatureType, Tag

from controller.errors import Refused


@dataclass(frozen=True)
class OpenPgpSigner:
    """Who made a valid OpenPGP signature."""

    fingerprint: str  # full primary-key fingerprint, uppercase hex
    user_id: str
    signing_key: str
    algorithm: str


class OpenPgpKeyring:
    """The armored certificates of the trust file."""

    def __init__(self, armored: bytes) -> None:
        try:
            self._certs = pysequoia.Cert.split_bytes(armored) if armored.strip() else []
        except Exception as exc:  # pysequoia raises plain errors with a Rust backtrace
            raise Refused(f"OpenPGP trust file is unreadable: {_first_line(exc)}", code="BadTrustPolicy") from None

    def __len__(self) -> int:
        return len(self._certs)

    def verify(self, armored_signature: bytes, payload: bytes, *, now: datetime) -> OpenPgpSigner:
        """Verify a detached signature over ``payload``; refuse unless a trusted, live key made it."""
        try:
            sig = pysequoia.Sig.from_bytes(armored_signature)
            result = pysequoia.verify(bytes=payload, store=lambda _ids: self._certs, signature=sig)
        except Exception as exc:
            raise _not_verified(armored_signature, exc) from None
        if not result.valid_sigs:
            raise Refused("OpenPGP signature is not by a trusted key", code="UntrustedSigner")
        valid = result.valid_sigs[0]
        cert = next(c for c in self._certs if c.fingerprint.lower() == str(valid.certificate).lower())
        self._check_live(cert, now=now)
        _check_subkey_live(cert, str(valid.signing_key), now=now)
        return OpenPgpSigner(
            fingerprint=cert.fingerprint.upper(),
            user_id=str(cert.user_ids[0]) if cert.user_ids else "",
            signing_key=str(valid.signing_key).upper(),
            algorithm=str(sig.key_algorithm),
        )

    @staticmethod
    def _check_live(cert: pysequoia.Cert, *, now: datetime) -> None:
        fpr = cert.fingerprint.upper()
        if cert.is_revoked:
            raise Refused(f"OpenPGP key {fpr} is revoked", code="RevokedKey")
        if cert.expiration is not None and cert.expiration <= now:
            raise Refused(f"OpenPGP key {fpr} expired at {cert.expiration.isoformat()}", code="ExpiredKey")


def _check_subkey_live(cert: pysequoia.Cert, signing_key: str, *, now: datetime) -> None:
    """A signing subkey whose binding expired by ``now`` is refused (Sequoia judges it at signing time)."""
    if signing_key.lower() == cert.fingerprint.lower():
        return  # the primary key: covered by the certificate's own expiry
    created: datetime | None = None
    expiry: tuple[datetime, datetime | None] | None = None  # (binding made, key expires)
    current = False
    for packet in PacketPile.from_bytes(bytes(cert)):
        if packet.tag in (Tag.PublicKey, Tag.PublicSubkey, Tag.SecretKey, Tag.SecretSubkey):
            current = (packet.fingerprint or "").lower() == signing_key.lower()
            created = packet.key_created if current else created
        elif current and packet.tag == Tag.Signature and packet.signature_type == SignatureType.SubkeyBinding:
            made = packet.signature_created
            period = packet.key_validity_period
            if made is not None and created is not None and (expiry is None or made > expiry[0]):
                expiry = (made, created + period if period else None)
    if expiry is not None and expiry[1] is not None and expiry[1] <= now:
        raise Refused(
            f"OpenPGP signing subkey {signing_key.upper()} expired at {expiry[1].isoformat()}", code="ExpiredKey"
        )


def _not_verified(armored_signature: bytes, exc: Exception) -> Refused:
    try:
        issuer = str(pysequoia.Sig.from_bytes(armored_signature).issuer_fingerprint or "unknown").upper()
    except Exception:
        return Refused(f"OpenPGP signature is malformed: {_first_line(exc)}", code="BadSignature")
    return Refused(
        f"OpenPGP signature by {issuer} does not verify against the trusted keys "
        "(untrusted, expired, revoked or non-signing key, or the commit changed after signing)",
        code="UntrustedSigner",
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
