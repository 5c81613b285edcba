"""OpenPGP signature packets re-encoded with minimal MPIs, before the strict parser reads them.

GitHub's web-flow key writes RSA signature values with a declared bit length of
4096 even when the value's top bits are zero (a non-minimal MPI, RFC 4880
§3.2).  GnuPG reads such a packet; Sequoia refuses it as malformed.  The MPI
length prefix is not part of the signed hash (§5.2.4 hashes the packet up to
the hashed subpackets), so rewriting it changes nothing that is verified: the
signature value, as a number, stays the same, and a wrong value still fails.

Anything this module does not understand is returned unchanged, so the parser
behind it gives its own verdict.
"""

from __future__ import annotations

import base64
import binascii

_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_END = b"-----END PGP SIGNATURE-----"
_SIGNATURE_TAG = 2


class _Unparsable(Exception):
    """The bytes are not the simple signature packets this module rewrites."""


def canonical_signature(armored: bytes) -> bytes:
    """The signature with every MPI minimally encoded, as binary packets (or ``armored`` unchanged)."""
    try:
        packets = _dearmor(armored)
        return b"".join(_packet(_SIGNATURE_TAG, _canonical_body(body)) for body in _signature_bodies(packets))
    except _Unparsable:
        return armored


def _dearmor(armored: bytes) -> bytes:
    text = armored.strip()
    if not text.startswith(_BEGIN) or not text.endswith(_END):
        raise _Unparsable
    lines = text[len(_BEGIN) : -len(_END)].strip().splitlines()
    blank = next((i for i, line in enumerate(lines) if not line.strip()), None)
    body = [line.strip() for line in lines[blank + 1 if blank is not None else 0 :]]
    body = [line for line in body if line and not line.startswith(b"=")]  # the optional CRC-24 line
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise _Unparsable from None


def _signature_bodies(data: bytes) -> list[bytes]:
    """The bodies of the packets in ``data``; only signature packets with definite lengths."""
    bodies = []
    pos = 0
    while pos < len(data):
        tag, start, length = _header(data, pos)
        if tag != _SIGNATURE_TAG or start + length > len(data):
            raise _Unparsable
        bodies.append(data[start : start + length])
        pos = start + length
    if not bodies:
        raise _Unparsable
    return bodies


def _header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body start, body length) of the packet at ``pos``."""
    first = data[pos]
    if not first & 0x80:
        raise _Unparsable
    if first & 0x40:  # new format
        return first & 0x3F, *_new_length(data, pos + 1)
    tag, kind = (first >> 2) & 0x0F, first & 0x03
    if kind == 3:  # indeterminate length
        raise _Unparsable
    size = 1 << kind
    return tag, pos + 1 + size, int.from_bytes(_take(data, pos + 1, size), "big")


def _new_length(data: bytes, pos: int) -> tuple[int, int]:
    octet = _take(data, pos, 1)[0]
    if octet < 192:
        return pos + 1, octet
    if octet < 224:
        second = _take(data, pos + 1, 1)[0]
        return pos + 2, ((octet - 192) << 8) + second + 192
    if octet == 255:
        return pos + 5, int.from_bytes(_take(data, pos + 1, 4), "big")
    raise _Unparsable  # partial body lengths: not in a signature packet


def _take(data: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(data):
        raise _Unparsable
    return data[pos : pos + n]


def _canonical_body(body: bytes) -> bytes:
    """A v4 signature body with its trailing MPIs minimal; other versions unchanged."""
    if not body or body[0] != 4:
        return body
    hashed_end = 6 + int.from_bytes(_take(body, 4, 2), "big")
    unhashed_end = hashed_end + 2 + int.from_bytes(_take(body, hashed_end, 2), "big")
    pos = unhashed_end + 2  # the left 16 bits of the hash
    _take(body, unhashed_end, 2)
    mpis = []
    while pos < len(body):
        bits = int.from_bytes(_take(body, pos, 2), "big")
        value = int.from_bytes(_take(body, pos + 2, (bits + 7) // 8), "big")
        pos += 2 + (bits + 7) // 8
        mpis.append(_mpi(value))
    return body[: unhashed_end + 2] + b"".join(mpis)


def _mpi(value: int) -> bytes:
    bits = value.bit_length()
    return bits.to_bytes(2, "big") + value.to_bytes((bits + 7) // 8, "big")


def _packet(tag: int, body: bytes) -> bytes:
    """A new-format packet header with a five-octet length, then ``body``."""
    return bytes([0xC0 | tag, 255]) + len(body).to_bytes(4, "big") + body
