"""PostgreSQL connection strings, read the way libpq reads them.

The layout gives each environment its own database, and the runtime reaches it
through ``DATABASE_URL`` from the host's ``.env``.  What matters is the database
libpq will connect to, not what a generic URL parser sees in the path: libpq
percent-decodes, lets a query parameter (``?dbname=…``) override the path, and
also takes the keyword/value form (``host=… dbname=…``).  This module follows
``conninfo_uri_parse_options`` and ``conninfo_parse`` in libpq's fe-connect.c,
and the tests cross-check it against libpq's own ``PQconninfoParse``.

Errors name positions and keywords, never values: a connection string holds a
password.
"""

from __future__ import annotations

import re

URI_PREFIXES = ("postgresql://", "postgres://")

# libpq's connection keywords (PostgreSQL 15 to 17); an unknown one is an error there too.
KEYWORDS = frozenset(
    {
        "service", "user", "password", "passfile", "channel_binding", "connect_timeout", "dbname", "host",
        "hostaddr", "port", "client_encoding", "options", "application_name", "fallback_application_name",
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "sslmode", "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslcertmode", "sslpassword",
        "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "require_auth",
        "ssl_min_protocol_version", "ssl_max_protocol_version", "gssencmode", "krbsrvname", "gsslib",
        "gssdelegation", "replication", "target_session_attrs", "load_balance_hosts",
    }
)  # fmt: skip

_SPACE = " \t\n\v\f\r"  # C's isspace() in the C locale
_PERCENT = re.compile(r"%(.?.?)", re.DOTALL)
_HEX = re.compile(r"[0-9A-Fa-f]{2}")


class ConninfoError(ValueError):
    """libpq would refuse this connection string; the message never quotes a value."""


def parse_conninfo(text: str) -> dict[str, str]:
    """The options libpq reads from ``text`` (a URI or keyword/value string), later ones winning."""
    if text.startswith(URI_PREFIXES):
        return _parse_uri(text)
    return _parse_keywords(text)


# -- URI: postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...] ------------


def _parse_uri(uri: str) -> dict[str, str]:
    options: dict[str, str] = {}
    rest = uri.removeprefix(URI_PREFIXES[0]) if uri.startswith(URI_PREFIXES[0]) else uri[len(URI_PREFIXES[1]) :]
    end = _scan(rest, 0, "@/")
    if end < len(rest) and rest[end] == "@":
        user, colon, password = rest[:end].partition(":")
        _store(options, "user", user, decode=True)
        if colon:
            _store(options, "password", password, decode=True)
        rest = rest[end + 1 :]
    index, hosts, ports = _hosts(rest)
    _store(options, "host", ",".join(hosts), decode=True)
    _store(options, "port", ",".join(ports), decode=True)
    if rest[index : index + 1] == "/":
        query = _scan(rest, index + 1, "?")
        _store(options, "dbname", rest[index + 1 : query], decode=True)
        index = query
    if index < len(rest):
        _parse_params(rest[index + 1 :], options)
    return options


def _hosts(rest: str) -> tuple[int, list[str], list[str]]:
    """The comma-separated host[:port] list; returns where it ends and the hosts and ports."""
    hosts: list[str] = []
    ports: list[str] = []
    index = 0
    while True:
        if rest[index : index + 1] == "[":
            close = rest.find("]", index + 1)
            if close < 0:
                raise ConninfoError("an IPv6 host address in the URI lacks its closing ']'")
            if close == index + 1:
                raise ConninfoError("an IPv6 host address in the URI is empty")
            hosts.append(rest[index + 1 : close])
            index = close + 1
            if index < len(rest) and rest[index] not in ":/?,":
                raise ConninfoError(f"unexpected character at position {index} of the URI's host list")
        else:
            end = _scan(rest, index, ":/?,")
            hosts.append(rest[index:end])
            index = end
        port = ""
        if rest[index : index + 1] == ":":
            end = _scan(rest, index + 1, "/?,")
            port, index = rest[index + 1 : end], end
        ports.append(port)
        if rest[index : index + 1] != ",":
            return index, hosts, ports
        index += 1


def _parse_params(params: str, options: dict[str, str]) -> None:
    for number, pair in enumerate(params.split("&") if params else [], start=1):
        if pair == "" and number == params.count("&") + 1:
            return  # a trailing '&' ends the list
        if pair.count("=") != 1:
            raise ConninfoError(f"URI query parameter {number} is not one key=value pair")
        keyword, value = (_decode(part) for part in pair.split("="))
        if (keyword, value) == ("ssl", "true"):  # libpq's JDBC compatibility
            keyword, value = "sslmode", "require"
        if keyword not in KEYWORDS:
            raise ConninfoError(f"URI query parameter {number} is not a libpq keyword")
        options[keyword] = value


# -- keyword/value: host=h dbname='my db' ... ------------------------------------------------------------


def _parse_keywords(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    index = 0
    while index < len(text):
        if text[index] in _SPACE:
            index += 1
            continue
        end = _scan(text, index, "=" + _SPACE)
        keyword, index = text[index:end], end
        while index < len(text) and text[index] in _SPACE:
            index += 1
        if text[index : index + 1] != "=":
            raise ConninfoError(f"a keyword at position {end - len(keyword)} has no '=' after it")
        index += 1
        while index < len(text) and text[index] in _SPACE:
            index += 1
        value, index = _quoted(text, index + 1) if text[index : index + 1] == "'" else _bare(text, index)
        if keyword not in KEYWORDS:
            raise ConninfoError(f"a keyword at position {end - len(keyword)} is not a libpq keyword")
        options[keyword] = value
    return options


def _bare(text: str, index: int) -> tuple[str, int]:
    """An unquoted value: up to whitespace, backslash escaping the next character."""
    value: list[str] = []
    while index < len(text):
        char = text[index]
        if char in _SPACE:
            return "".join(value), index + 1
        if char == "\\":
            value.append(text[index + 1 : index + 2])
            index += 2
        else:
            value.append(char)
            index += 1
    return "".join(value), index


def _quoted(text: str, index: int) -> tuple[str, int]:
    """A single-quoted value, backslash escaping the next character."""
    value: list[str] = []
    while index < len(text):
        char = text[index]
        if char == "\\":
            value.append(text[index + 1 : index + 2])
            index += 2
        elif char == "'":
            return "".join(value), index + 1
        else:
            value.append(char)
            index += 1
    raise ConninfoError("a quoted value in the connection string is not terminated")


# -- shared ------------------------------------------------------------------------------------------------


def _scan(text: str, start: int, stops: str) -> int:
    """The index of the first character in ``stops`` from ``start``, or the end of ``text``."""
    for index in range(start, len(text)):
        if text[index] in stops:
            return index
    return len(text)


def _store(options: dict[str, str], keyword: str, value: str, *, decode: bool) -> None:
    """Keep a URI component; an empty one is left unset, as libpq does."""
    if value:
        options[keyword] = _decode(value) if decode else value


def _decode(text: str) -> str:
    """libpq's percent-decoding: every '%' takes two hex digits, and %00 is forbidden."""

    def byte(match: re.Match[str]) -> str:
        digits = match.group(1)
        if not _HEX.fullmatch(digits):
            raise ConninfoError("a '%' in the URI is not followed by two hex digits")
        if digits == "00":
            raise ConninfoError("the URI holds %00, which libpq forbids")
        return chr(0xDC00 + int(digits, 16)) if int(digits, 16) >= 0x80 else chr(int(digits, 16))

    decoded = _PERCENT.sub(byte, text)
    raw = decoded.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")
