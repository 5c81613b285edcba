"""SSH signatures (OpenSSH PROTOCOL.sshsig), verified in-process with ``cryptography``.

git signs with ``ssh-keygen -Y sign -n git``; verifying by spawning
``ssh-keygen`` per commit would cost a process per poll.  This module reads
the armored SSHSIG blob, rebuilds the signed data (magic, namespace, reserved,
hash algorithm, H(payload) — no version) and checks it with the embedded key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from controller.errors import Reason, Refused

BEGIN = b"-----BEGIN SSH SIGNATURE-----"
END = b"-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
NAMESPACE = b"git"
_HASHES = {b"sha256": hashlib.sha256, b"sha512": hashlib.sha512}
_CURVES: dict[bytes, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    b"ecdsa-sha2-nistp256": (ec.SECP256R1(), hashes.SHA256()),
    b"ecdsa-sha2-nistp384": (ec.SECP384R1(), hashes.SHA384()),
    b"ecdsa-sha2-nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_RSA_HASHES: dict[bytes, hashes.HashAlgorithm] = {
    b"rsa-sha2-256": hashes.SHA256(),
    b"rsa-sha2-512": hashes.SHA512(),
}


def _bad(reason: str) -> Refused:
    return Refused(f"SSH signature {reason}", code=Reason.BAD_SIGNATURE)


class _Reader:
    """Reads SSH wire-format fields (RFC 4251 ``string``, ``uint32``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _bad("is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass(frozen=True)
class SshSignature:
    """A parsed SSHSIG blob."""

    public_key: bytes
    namespace: bytes
    hash_algorithm: bytes
    signature: bytes

    @property
    def key_type(self) -> str:
        """The embedded key's type, e.g. ``ssh-ed25519``."""
        return _Reader(self.public_key).string().decode("ascii", "replace")

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` of the embedded key, as ``ssh-keygen -l`` prints it."""
        digest = hashlib.sha256(self.public_key).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def public_key_line(self) -> str:
        """The embedded key as ``type base64``, the form allowed_signers uses."""
        return f"{self.key_type} {base64.b64encode(self.public_key).decode()}"


def parse_armored(armored: bytes) -> SshSignature:
    """Parse ``-----BEGIN SSH SIGNATURE-----`` … into its fields; refuse anything malformed."""
    text = armored.strip()
    if not text.startswith(BEGIN) or not text.endswith(END):
        raise _bad("is not armored as '-----BEGIN SSH SIGNATURE-----'")
    body = b"".join(text[len(BEGIN) : -len(END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("is not valid base64") from None
    reader = _Reader(blob)
    if reader.take(6) != MAGIC:
        raise _bad("does not start with the SSHSIG magic")
    if reader.uint32() != 1:
        raise _bad("has an unsupported version")
    public_key = reader.string()
    namespace = reader.string()
    reader.string()  # the reserved field: signed, but it carries nothing
    hash_algorithm = reader.string()
    parsed = SshSignature(public_key, namespace, hash_algorithm, reader.string())
    if not reader.done():
        raise _bad("has trailing bytes")
    return parsed


def verify(
    sig: SshSignature, payload: bytes, *, namespace: bytes = NAMESPACE, reserved: bytes = b"", what: str = "the commit"
) -> None:
    """Check ``sig`` over ``payload`` for ``namespace`` with its embedded key; raise ``Refused`` when it does not hold.

    The namespace keeps one signature from serving two purposes: a commit signature (``git``)
    is no approval (``dreichor-approval``), however it was copied.
    """
    if sig.namespace != namespace:
        made, wanted = sig.namespace.decode("utf-8", "replace"), namespace.decode()
        raise _bad(f"was made for namespace '{made}', not '{wanted}'")
    digest = _HASHES.get(sig.hash_algorithm)
    if digest is None:
        raise _bad(f"uses unsupported hash '{sig.hash_algorithm.decode('ascii', 'replace')}'")
    signed = MAGIC + _string(sig.namespace) + _string(reserved) + _string(sig.hash_algorithm)
    signed += _string(digest(payload).digest())
    outer = _Reader(sig.signature)
    sig_format, raw = outer.string(), outer.string()
    _require(outer.done(), "has trailing bytes after its signature")
    try:
        _verify_raw(sig.public_key, sig_format, raw, signed)
    except InvalidSignature:
        raise _bad(f"does not match {what} (changed after signing?)") from None
    except (ValueError, TypeError, OverflowError):
        raise _bad("carries a malformed key or signature") from None


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _verify_raw(public_key: bytes, sig_format: bytes, raw: bytes, signed: bytes) -> None:
    key = _Reader(public_key)
    key_type = key.string()
    if key_type == b"ssh-ed25519":
        _require(sig_format == key_type, "format does not match its ed25519 key")
        ed_key = Ed25519PublicKey.from_public_bytes(key.string())
        _require(key.done(), "has trailing bytes after its key")
        ed_key.verify(raw, signed)
    elif key_type in _CURVES:
        _require(sig_format == key_type, "format does not match its ECDSA key")
        curve, hash_alg = _CURVES[key_type]
        key.string()  # curve name, implied by the key type
        point = ec.EllipticCurvePublicKey.from_encoded_point(curve, key.string())
        parts = _Reader(raw)
        r, s = parts.mpint(), parts.mpint()
        _require(key.done() and parts.done(), "has trailing bytes after its key or signature")
        point.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hash_alg))
    elif key_type == b"ssh-rsa":
        _require(sig_format in _RSA_HASHES, "uses ssh-rsa with SHA-1, which is refused")
        exponent, modulus = key.mpint(), key.mpint()
        _require(key.done(), "has trailing bytes after its key")
        public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        _require(public.key_size >= 2048, "uses an RSA key shorter than 2048 bits")
        public.verify(raw, signed, padding.PKCS1v15(), _RSA_HASHES[sig_format])
    else:
        raise _bad(f"uses unsupported key type '{key_type.decode('ascii', 'replace')}'")


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _bad(reason)
