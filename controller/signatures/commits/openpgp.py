"""OpenPGP commit signatures, verified in-process with pysequoia (Sequoia-PGP).

The only module that imports ``pysequoia``.  Verification is split in two, so
the verdict cache can keep the first and never the second:

- ``check``: the cryptography.  Sequoia checks the signature and that the key
  was a valid signing key when the signature claims to have been made.
- ``judge``: the controller's own clock.  A certificate, or the subkey that
  signed, that is revoked (for any reason) or expired *now* signs nothing,
  whatever date the signature claims.

Revocations and bindings are read from the host's own trust file; a revocation
there is honoured even where Sequoia would not (a soft revocation after the
signature date), since refusing is the safe direction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pysequoia
from pysequoia.packet import Packet, PacketPile, SignatureType, Tag

from controller.errors import Reason, Refused
from controller.signatures.commits.packets import canonical_signature

_KEY_TAGS = (Tag.PublicKey, Tag.PublicSubkey, Tag.SecretKey, Tag.SecretSubkey)
_CURVES = {
    "2a8648ce3d030107": "ECDSA P-256",
    "2b81040022": "ECDSA P-384",
    "2b81040023": "ECDSA P-521",
    "2b06010401da470f01": "ed25519",
    "2b656f": "ed448",
}


@dataclass(frozen=True)
class OpenPgpCheck:
    """What the cryptography proved: this certificate's key made the signature."""

    certificate: str  # primary-key fingerprint, uppercase hex
    signing_key: str  # the (sub)key that signed, uppercase hex


@dataclass(frozen=True)
class OpenPgpSigner:
    """Who made a signature that is valid now."""

    fingerprint: str  # full primary-key fingerprint, uppercase hex
    user_id: str
    signing_key: str
    algorithm: str  # in the words gpg uses: "RSA 4096", "ed25519"


@dataclass
class _KeyState:
    """One key of a certificate, as its packets in the trust file describe it."""

    algorithm: str = "OpenPGP"
    created: datetime | None = None
    binding: tuple[datetime, datetime | None] | None = None  # (binding made, key expires)
    revoked: bool = False


class OpenPgpKeyring:
    """The armored certificates of the trust file."""

    def __init__(self, armored: bytes) -> None:
        try:
            self._certs = pysequoia.Cert.split_bytes(armored) if armored.strip() else []
        except Exception as exc:  # pysequoia raises plain errors with a Rust backtrace
            reason = f"OpenPGP trust file is unreadable: {_first_line(exc)}"
            raise Refused(reason, code=Reason.BAD_TRUST_POLICY) from None

    def __len__(self) -> int:
        return len(self._certs)

    def user_ids(self) -> dict[str, str]:
        """Each certificate's first user ID by primary fingerprint (uppercase hex); "" when it has none."""
        return {c.fingerprint.upper(): str(c.user_ids[0]) if c.user_ids else "" for c in self._certs}

    def verify(self, armored_signature: bytes, payload: bytes, *, now: datetime) -> OpenPgpSigner:
        """``check`` then ``judge``: refuse unless a trusted key that is live now made the signature."""
        return self.judge(self.check(armored_signature, payload, now=now), now=now)

    def check(self, armored_signature: bytes, payload: bytes, *, now: datetime) -> OpenPgpCheck:
        """The cryptography alone (cacheable while this keyring is unchanged); ``now`` only words a refusal."""
        try:
            sig = pysequoia.Sig.from_bytes(canonical_signature(armored_signature))
        except Exception as exc:
            raise Refused(f"OpenPGP signature is malformed: {_first_line(exc)}", code=Reason.BAD_SIGNATURE) from None
        try:
            result = pysequoia.verify(bytes=payload, store=lambda _ids: self._certs, signature=sig)
        except Exception:
            raise self._not_verified(sig, now=now) from None
        if not result.valid_sigs:
            raise Refused("OpenPGP signature is not by a trusted key", code=Reason.UNTRUSTED_SIGNER)
        valid = result.valid_sigs[0]
        return OpenPgpCheck(str(valid.certificate).upper(), str(valid.signing_key).upper())

    def judge(self, check: OpenPgpCheck, *, now: datetime) -> OpenPgpSigner:
        """Whether the key that made ``check`` may sign *now*, by the controller's clock."""
        cert = self._cert(check.certificate)
        if cert is None:
            raise Refused(f"OpenPGP key {check.certificate} is not in the trust file", code=Reason.UNTRUSTED_SIGNER)
        states = _key_states(cert)
        _check_live(cert, states.get(check.certificate, _KeyState()), now=now)
        if check.signing_key != check.certificate:
            _check_subkey_live(check.signing_key, states.get(check.signing_key, _KeyState()), now=now)
        return OpenPgpSigner(
            fingerprint=check.certificate,
            user_id=str(cert.user_ids[0]) if cert.user_ids else "",
            signing_key=check.signing_key,
            algorithm=states.get(check.signing_key, _KeyState()).algorithm,
        )

    def _cert(self, fingerprint: str) -> pysequoia.Cert | None:
        return next((c for c in self._certs if c.fingerprint.upper() == fingerprint), None)

    def _owner(self, issuer: str) -> tuple[str, str] | None:
        """(primary fingerprint, key fingerprint) of the key ``issuer`` names (fingerprint or key id)."""
        for cert in self._certs:
            for key in _key_states(cert):
                if issuer and key.endswith(issuer):
                    return cert.fingerprint.upper(), key
        return None

    def _not_verified(self, sig: pysequoia.Sig, *, now: datetime) -> Refused:
        """Why Sequoia found no valid signature, in words: our key or not, and if ours, what is wrong now."""
        issuer = str(sig.issuer_fingerprint or sig.issuer_key_id or "unknown").upper()
        owner = self._owner(issuer) if len(issuer) >= 16 else None
        if owner is None:
            return Refused(f"OpenPGP signature by {issuer} is not by a trusted key", code=Reason.UNTRUSTED_SIGNER)
        try:
            self.judge(OpenPgpCheck(*owner), now=now)
        except Refused as exc:
            return exc
        if str(sig.hash_algorithm).upper().endswith(("SHA1", "MD5", "RIPEMD160")):
            hash_name = str(sig.hash_algorithm).rsplit(".", 1)[-1]
            reason = f"OpenPGP signature by {issuer} uses {hash_name}, which is refused"
            return Refused(reason, code=Reason.BAD_SIGNATURE)
        if sig.created is not None and sig.created > now:
            return Refused(
                f"OpenPGP signature by {issuer} is dated in the future ({sig.created.isoformat()}, "
                "by the controller's clock)",
                code=Reason.BAD_SIGNATURE,
            )
        return Refused(
            f"OpenPGP signature by {issuer} does not verify against the trusted keys "
            "(a non-signing key, or the commit changed after signing)",
            code=Reason.UNTRUSTED_SIGNER,
        )


def _check_live(cert: pysequoia.Cert, primary: _KeyState, *, now: datetime) -> None:
    fpr = cert.fingerprint.upper()
    if cert.is_revoked or primary.revoked:
        raise Refused(f"OpenPGP key {fpr} is revoked", code=Reason.REVOKED_KEY)
    if cert.expiration is not None and cert.expiration <= now:
        raise Refused(f"OpenPGP key {fpr} expired at {cert.expiration.isoformat()}", code=Reason.EXPIRED_KEY)


def _check_subkey_live(key: str, state: _KeyState, *, now: datetime) -> None:
    """A signing subkey revoked (for any reason) or expired by ``now`` is refused."""
    if state.revoked:
        raise Refused(f"OpenPGP signing subkey {key} is revoked", code=Reason.REVOKED_KEY)
    expires = state.binding[1] if state.binding else None
    if expires is not None and expires <= now:
        raise Refused(f"OpenPGP signing subkey {key} expired at {expires.isoformat()}", code=Reason.EXPIRED_KEY)


def _key_states(cert: pysequoia.Cert) -> dict[str, _KeyState]:
    """Every key of ``cert`` by uppercase fingerprint: algorithm, newest binding, revoked."""
    states: dict[str, _KeyState] = {}
    current: _KeyState | None = None
    for packet in _packets(cert):
        if packet.tag in _KEY_TAGS:
            current = states.setdefault((packet.fingerprint or "").upper(), _KeyState())
            current.algorithm = _algorithm(packet)
            current.created = packet.key_created
        elif current is not None and packet.tag == Tag.Signature:
            _apply_signature(current, packet)
    return states


def _packets(cert: pysequoia.Cert) -> Iterator[Packet]:
    yield from PacketPile.from_bytes(bytes(cert))


def _apply_signature(state: _KeyState, packet: Packet) -> None:
    kind = packet.signature_type
    if kind in (SignatureType.KeyRevocation, SignatureType.SubkeyRevocation):
        state.revoked = True
    elif kind == SignatureType.SubkeyBinding:
        made, period = packet.signature_created, packet.key_validity_period
        if made is not None and state.created is not None and (state.binding is None or made > state.binding[0]):
            state.binding = (made, state.created + period if period else None)


def _algorithm(packet: Packet) -> str:
    """``RSA 4096``, ``ed25519``, ``ECDSA P-256``: what ``gpg --list-keys`` shows."""
    body = packet.body or b""
    algo = body[5] if len(body) > 7 and body[0] == 4 else None
    if algo in (1, 2, 3, 17):
        name = "RSA" if algo != 17 else "DSA"
        return f"{name} {int.from_bytes(body[6:8], 'big')}"
    if algo in (18, 19, 22) and len(body) > 6:
        oid = body[7 : 7 + body[6]].hex()
        return _CURVES.get(oid, str(packet.key_algorithm).rsplit(".", 1)[-1])
    return str(packet.key_algorithm).rsplit(".", 1)[-1]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
