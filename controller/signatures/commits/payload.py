"""Split a raw commit object into the signed payload and its signature, exactly as git does.

Works on the bytes of the commit object, never on a parsed and re-serialised
commit: the smallest difference in re-serialisation would make a valid
signature fail, or worse, let a forged payload pass.

The manifest repositories are SHA-1 repositories, where git reads only the
``gpgsig`` header as the signature: a ``gpgsig-sha256`` header (the signature
of a SHA-256 repository) is an ordinary header, part of the signed payload, and
a commit carrying only that header is unsigned, as ``git verify-commit`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.errors import Reason, Refused

SIGNATURE_HEADER = b"gpgsig "


@dataclass(frozen=True)
class SignedCommit:
    """The payload git signs, and the armored signature (None when unsigned)."""

    payload: bytes
    signature: bytes | None


def split_commit(raw: bytes) -> SignedCommit:
    """Remove the signature header (and its continuation lines) from the commit headers.

    Headers end at the first empty line; everything from there (the message)
    stays byte for byte.  Two signature headers are refused rather than merged.
    """
    payload = bytearray()
    signature = bytearray()
    headers = 0
    in_signature = False
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        nxt = len(raw) if end < 0 else end + 1
        line = raw[pos:nxt]
        if line == b"\n" or line.startswith(b"\n"):
            payload += raw[pos:]
            break
        if in_signature and line.startswith(b" "):
            signature += line[1:]
        elif line.startswith(SIGNATURE_HEADER):
            headers += 1
            in_signature = True
            signature += line.split(b" ", 1)[1]
        else:
            in_signature = False
            payload += line
        pos = nxt
    if headers > 1:
        raise Refused("the commit carries two signature headers", code=Reason.MALFORMED_SIGNATURE)
    return SignedCommit(payload=bytes(payload), signature=bytes(signature) if headers else None)
