"""The host's ``revoked_keys`` file, read strictly: a line we cannot read never leaves a key trusted.

Two forms.  An OpenSSH KRL (``ssh-keygen -k``, what git's
``gpg.ssh.revocationFile`` takes) is read as a KRL.  Otherwise each line is one
of: an SSH public key (``type base64 [comment]``), an ``allowed_signers`` line
(its key counts), or an OpenPGP fingerprint (40 hex digits; spaces, a ``0x``
prefix and a trailing ``# comment`` allowed).  Anything else refuses the whole
trust policy, naming the file and the line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from controller.errors import Reason, Refused
from controller.signatures.commits.allowed_signers import parse_line

KRL_MAGIC = b"SSHKRL\n\x00"
_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-sha2-|sk-)[a-z0-9@.-]+$")
_HEX = re.compile(r"^[0-9A-F]+$")
_CERTIFICATES, _EXPLICIT_KEY, _SHA1, _SIGNATURE, _SHA256 = 1, 2, 3, 4, 5


@dataclass
class Revocations:
    """Revoked SSH keys (by blob and by hash) and OpenPGP fingerprints."""

    ssh_blobs: set[bytes] = field(default_factory=set)
    ssh_sha1: set[bytes] = field(default_factory=set)
    ssh_sha256: set[bytes] = field(default_factory=set)
    openpgp: set[str] = field(default_factory=set)

    def revokes_ssh(self, blob: bytes) -> bool:
        """Whether the SSH public key ``blob`` (wire format) is revoked."""
        return (
            blob in self.ssh_blobs
            or hashlib.sha1(blob).digest() in self.ssh_sha1  # noqa: S324 KRLs name keys by SHA-1 too
            or hashlib.sha256(blob).digest() in self.ssh_sha256
        )

    def revokes_openpgp(self, *fingerprints: str) -> bool:
        """Whether any of the (uppercase) OpenPGP fingerprints is revoked."""
        return any(f in self.openpgp for f in fingerprints)


def parse_revoked_keys(data: bytes, *, path: Path | None = None) -> Revocations:
    """Read a KRL or the line format; refuse the policy on anything unreadable."""
    name = str(path) if path else "revoked_keys"
    if data.startswith(KRL_MAGIC):
        return _parse_krl(data, name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(name, None, "is neither an OpenSSH KRL nor UTF-8 text") from None
    revoked = Revocations()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            _parse_text_line(revoked, line, name=name, number=number)
    return revoked


def _bad(name: str, number: int | None, sentence: str) -> Refused:
    where = f"{name} line {number}" if number else name
    return Refused(f"{where}: {sentence}", code=Reason.BAD_TRUST_POLICY)


def _parse_text_line(revoked: Revocations, line: str, *, name: str, number: int) -> None:
    fields = line.split()
    if _KEY_TYPE.match(fields[0]):
        revoked.ssh_blobs.add(_ssh_blob(fields, name=name, number=number))
        return
    fingerprint = _fingerprint(line)
    if fingerprint is not None:
        revoked.openpgp.add(_checked_fingerprint(fingerprint, name=name, number=number))
        return
    try:
        entry = parse_line(line, number)
    except Refused as exc:
        raise _bad(
            name,
            number,
            "is not an SSH public key, an allowed_signers line or an OpenPGP fingerprint "
            f"(as an allowed_signers line: {str(exc).split(': ', 1)[-1]})",
        ) from None
    revoked.ssh_blobs.add(_ssh_blob(entry.key.split(), name=name, number=number))


def _ssh_blob(fields: list[str], *, name: str, number: int) -> bytes:
    """The wire-format key of ``type base64``; its embedded type must be the one written."""
    if len(fields) < 2:
        raise _bad(name, number, f"the {fields[0]} key has no base64 key after its type")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise _bad(name, number, "the SSH key is not valid base64") from None
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != fields[0].encode():
        raise _bad(name, number, f"the key is not a {fields[0]} key")
    return blob


def _fingerprint(line: str) -> str | None:
    """Hex digits of a fingerprint line (``0x`` and spaces dropped, ``# comment`` cut), else None."""
    text = line.split("#", 1)[0].strip().upper()
    text = text[2:] if text.startswith("0X") else text
    text = "".join(text.split())
    return text if text and _HEX.match(text) else None


def _checked_fingerprint(hex_digits: str, *, name: str, number: int) -> str:
    if len(hex_digits) in (40, 64):
        return hex_digits
    if len(hex_digits) in (8, 16):
        raise _bad(name, number, f"{hex_digits} is a key id, not a fingerprint; write all 40 hex digits")
    raise _bad(name, number, f"an OpenPGP fingerprint has 40 hex digits, not {len(hex_digits)}")


class _KrlReader:
    """SSH wire-format fields of a KRL (PROTOCOL.krl)."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _bad(self.name, None, "is a truncated OpenSSH KRL")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def string(self) -> bytes:
        return self.take(struct.unpack(">I", self.take(4))[0])

    def done(self) -> bool:
        return self.pos >= len(self.data)


def _parse_krl(data: bytes, name: str) -> Revocations:
    """Keys revoked explicitly or by SHA-1/SHA-256 hash; certificate sections revoke nothing we trust."""
    reader = _KrlReader(data, name)
    reader.take(len(KRL_MAGIC))
    if struct.unpack(">I", reader.take(4))[0] != 1:
        raise _bad(name, None, "is an OpenSSH KRL of a format version other than 1")
    reader.take(8 + 8 + 8)  # krl_version, generated_date, flags
    reader.string()  # reserved
    reader.string()  # comment
    revoked = Revocations()
    while not reader.done():
        section, body = reader.take(1)[0], _KrlReader(reader.string(), name)
        if section == _SIGNATURE:
            reader.string()  # a signature section carries two strings: the key, then the signature
        target = {_EXPLICIT_KEY: revoked.ssh_blobs, _SHA1: revoked.ssh_sha1, _SHA256: revoked.ssh_sha256}.get(section)
        if target is not None:
            while not body.done():
                target.add(body.string())
        elif section not in (_CERTIFICATES, _SIGNATURE):
            raise _bad(name, None, f"is an OpenSSH KRL with an unknown section type {section}")
    return revoked
