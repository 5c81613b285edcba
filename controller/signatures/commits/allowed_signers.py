"""git's ``allowed_signers`` file (ssh-keygen(1), ALLOWED SIGNERS), parsed without ``ssh-keygen``.

Each line: ``principals [options] keytype base64-key [comment]``.  Options
are ``namespaces="…"``, ``valid-after="…"``, ``valid-before="…"`` and
``cert-authority`` (refused for now: certificates are not supported).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from controller.errors import Reason, Refused

_KEY_TYPE = re.compile(r"^(ssh-|ecdsa-sha2-|sk-)")


@dataclass(frozen=True)
class AllowedSigner:
    """One line of the file."""

    principals: tuple[str, ...]
    key: str  # "type base64", comment dropped
    namespaces: str | None  # OpenSSH pattern list, as written
    valid_after: datetime | None
    valid_before: datetime | None
    line: int

    def allows_namespace(self, namespace: str) -> bool:
        """Whether the ``namespaces`` option (absent: any) admits ``namespace``."""
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)

    def validity_reason(self, now: datetime) -> str | None:
        """Why the key is not valid at ``now``, or None."""
        if self.valid_after is not None and now < self.valid_after:
            return f"is valid only after {self.valid_after.isoformat()}"
        if self.valid_before is not None and now >= self.valid_before:
            return f"expired at {self.valid_before.isoformat()}"
        return None


def _bad(line: int, reason: str) -> Refused:
    """A line of the file refused, by number."""
    return Refused(f"allowed_signers line {line}: {reason}", code=Reason.BAD_TRUST_POLICY)


def parse_allowed_signers(text: str) -> list[AllowedSigner]:
    """Parse the whole file; a malformed or unsupported line refuses the file."""
    signers = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            signers.append(parse_line(line, number))
    return signers


def parse_line(line: str, number: int) -> AllowedSigner:
    """One non-comment line; a malformed or unsupported line is refused by number."""
    tokens = _tokens(line, number)
    if len(tokens) < 3:
        raise _bad(number, "expected 'principals [options] keytype key'")
    principals = tuple(p for p in tokens[0].strip('"').split(",") if p)
    rest = tokens[1:]
    options = _SignerOptions()
    if not _KEY_TYPE.match(rest[0]):
        options = _options(rest[0], number)
        rest = rest[1:]
    if len(rest) < 2 or not _KEY_TYPE.match(rest[0]):
        raise _bad(number, "expected a key type such as ssh-ed25519")
    if options.cert_authority:
        raise _bad(number, "cert-authority entries are not supported; list the signing keys themselves")
    return AllowedSigner(
        principals=principals,
        key=f"{rest[0]} {_key_blob(rest[1], number)}",
        namespaces=options.namespaces,
        valid_after=options.valid_after,
        valid_before=options.valid_before,
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


@dataclass
class _SignerOptions:
    """The options field, as OpenSSH's ``sigopts_parse`` reads it."""

    cert_authority: bool = False
    namespaces: str | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None


def _options(text: str, number: int) -> _SignerOptions:
    """Comma-separated, names case-insensitive, values quoted; a repeated option refuses the line."""
    options = _SignerOptions()
    seen: set[str] = set()
    rest = text
    while rest:
        name, value, rest = _one_option(rest, number)
        if name in seen:
            raise _bad(number, f"option '{name}' is given twice")
        seen.add(name)
        _set_option(options, name, value, number)
        if rest and not rest.startswith(","):
            raise _bad(number, f"unknown option near '{rest[:20]}'")
        rest = rest[1:]
        if not rest and text.endswith(","):
            raise _bad(number, "the options end with a comma")
    if options.valid_after and options.valid_before and options.valid_before <= options.valid_after:
        raise _bad(number, "valid-before is not after valid-after")
    return options


def _one_option(text: str, number: int) -> tuple[str, str | None, str]:
    """(lowercase name, dequoted value or None for a flag, the text after it)."""
    lower = text.lower()
    if lower.startswith("cert-authority") and lower[len("cert-authority") :][:1] in ("", ","):
        return "cert-authority", None, text[len("cert-authority") :]
    name = next((n for n in _VALUED if lower.startswith(n + "=")), None)
    if name is None:
        raise _bad(number, f"unknown option '{text.split('=', 1)[0].split(',', 1)[0]}'")
    value, rest = _dequote(text[len(name) + 1 :], name, number)
    return name, value, rest


_VALUED = ("namespaces", "valid-after", "valid-before")


def _dequote(text: str, name: str, number: int) -> tuple[str, str]:
    """OpenSSH's ``opt_dequote``: a double-quoted value, ``\\"`` for a quote inside."""
    if not text.startswith('"'):
        raise _bad(number, f"option '{name}' needs a quoted value")
    value: list[str] = []
    pos = 1
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and text[pos + 1 : pos + 2] == '"':
            pos += 1
        value.append(text[pos])
        pos += 1
    if pos >= len(text):
        raise _bad(number, f"option '{name}' has no closing quote")
    return "".join(value), text[pos + 1 :]


def _set_option(options: _SignerOptions, name: str, value: str | None, number: int) -> None:
    if name == "cert-authority":
        options.cert_authority = True
    elif name == "namespaces":
        options.namespaces = value
    elif name == "valid-after":
        options.valid_after = _time(value, number)
    else:
        options.valid_before = _time(value, number)


def match_pattern_list(string: str, patterns: str) -> bool:
    """OpenSSH's ``match_pattern_list``: a matching ``!pattern`` denies, else any matching pattern admits."""
    admitted = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _match_pattern(string, pattern[1:] if negated else pattern):
            if negated:
                return False
            admitted = True
    return admitted


def _match_pattern(string: str, pattern: str) -> bool:
    """``*`` any run, ``?`` any one character, everything else literal (no ``[...]`` classes)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, string, flags=re.DOTALL) is not None


def _key_blob(text: str, number: int) -> str:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(number, "the key is not valid base64") from None
    return text


def _time(value: str | None, number: int) -> datetime | None:
    """OpenSSH's ``parse_absolute_time``: ``YYYYMMDD[HHMM[SS]]``, then ``Z`` or ``UTC`` for UTC, else local."""
    if value is None:
        return None
    utc = value[-1:].upper() == "Z" and len(value) > 1
    digits = value[:-1] if utc else value
    if not utc and len(value) > 3 and value[-3:].upper() == "UTC":
        utc, digits = True, value[:-3]
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if len(digits) not in formats or not digits.isdigit() or not digits.isascii():
        raise _bad(number, f"time '{value}' is not YYYYMMDD[HHMM[SS]][Z]")
    try:
        parsed = datetime.strptime(digits, formats[len(digits)])
    except ValueError:
        raise _bad(number, f"time '{value}' is not a real date") from None
    return parsed.replace(tzinfo=UTC) if utc else parsed.astimezone(UTC)
