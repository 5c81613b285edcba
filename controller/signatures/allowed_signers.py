"""git's ``allowed_signers`` file (ssh-keygen(1), ALLOWED SIGNERS), parsed without ``ssh-keygen``.

Each line: ``principals [options] keytype base64-key [comment]``.  Options
are ``namespaces="…"``, ``valid-after="…"``, ``valid-before="…"`` and
``cert-authority`` (refused for now: certificates are not supported).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from controller.errors import Refused

_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-sha2-|sk-)")
_TIME = re.compile(r"(\d{8})(\d{4})?(\d{2})?(Z)?")  # fullmatch: `$` also matches before a newline


@dataclass(frozen=True)
class AllowedSigner:
    """One line of the file."""

    principals: tuple[str, ...]
    key: str  # "type base64", comment dropped
    namespaces: tuple[str, ...] | None
    valid_after: datetime | None
    valid_before: datetime | None
    line: int

    def allows_namespace(self, namespace: str) -> bool:
        """Whether the ``namespaces`` option (absent: any) admits ``namespace``."""
        return self.namespaces is None or any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    def validity_reason(self, now: datetime) -> str | None:
        """Why the key is not valid at ``now``, or None."""
        if self.valid_after is not None and now < self.valid_after:
            return f"is valid only after {self.valid_after.isoformat()}"
        if self.valid_before is not None and now >= self.valid_before:
            return f"expired at {self.valid_before.isoformat()}"
        return None


def _bad(line: int, reason: str) -> Refused:
    return Refused(f"allowed_signers line {line}: {reason}", code="BadTrustPolicy")


def parse_allowed_signers(text: str) -> list[AllowedSigner]:
    """Parse the whole file; a malformed or unsupported line refuses the file."""
    signers = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            signers.append(_parse_line(line, number))
    return signers


def _parse_line(line: str, number: int) -> AllowedSigner:
    tokens = _tokens(line, number)
    if len(tokens) < 3:
        raise _bad(number, "expected 'principals [options] keytype key'")
    principals = tuple(p for p in tokens[0].strip('"').split(",") if p)
    rest = tokens[1:]
    options: dict[str, str | None] = {}
    if not _KEY_TYPE.match(rest[0]):
        options = _options(rest[0], number)
        rest = rest[1:]
    if len(rest) < 2 or not _KEY_TYPE.match(rest[0]):
        raise _bad(number, "expected a key type such as ssh-ed25519")
    if "cert-authority" in options:
        raise _bad(number, "cert-authority entries are not supported; list the signing keys themselves")
    unknown = set(options) - {"namespaces", "valid-after", "valid-before"}
    if unknown:
        raise _bad(number, f"unknown option '{sorted(unknown)[0]}'")
    return AllowedSigner(
        principals=principals,
        key=f"{rest[0]} {_key_blob(rest[1], number)}",
        namespaces=_namespaces(options.get("namespaces")),
        valid_after=_time(options.get("valid-after"), number),
        valid_before=_time(options.get("valid-before"), number),
        line=number,
    )


def _tokens(line: str, number: int) -> list[str]:
    """Split on whitespace outside double quotes."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(char)
    if quoted:
        raise _bad(number, "unbalanced quotes")
    if current:
        tokens.append("".join(current))
    return tokens


def _options(text: str, number: int) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for part in re.findall(r'(?:[^,"]|"[^"]*")+', text):
        name, sep, value = part.partition("=")
        if sep and not (len(value) >= 2 and value[0] == value[-1] == '"'):
            raise _bad(number, f"option '{name}' needs a quoted value")
        options[name.lower()] = value[1:-1] if sep else None
    return options


def _namespaces(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _key_blob(text: str, number: int) -> str:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(number, "the key is not valid base64") from None
    return text


def _time(value: str | None, number: int) -> datetime | None:
    """``YYYYMMDD[HHMM[SS]][Z]``; without ``Z`` it is the host's local time, as in OpenSSH."""
    if value is None:
        return None
    match = _TIME.fullmatch(value)
    if not match:
        raise _bad(number, f"time '{value}' is not YYYYMMDD[HHMM[SS]][Z]")
    date, hhmm, ss, zulu = match.groups()
    try:
        parsed = datetime.strptime(date + (hhmm or "0000") + (ss or "00"), "%Y%m%d%H%M%S")
    except ValueError:
        raise _bad(number, f"time '{value}' is not a real date") from None
    return parsed.replace(tzinfo=UTC) if zulu else parsed.astimezone(UTC)


def parse_public_keys(text: str) -> set[str]:
    """``type base64`` of every SSH key line, plus uppercase OpenPGP fingerprints (revocation list)."""
    keys = set()
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if _KEY_TYPE.match(fields[0]) and len(fields) >= 2:
            keys.add(f"{fields[0]} {fields[1]}")
        else:
            keys.add("".join(fields).upper())
    return keys
