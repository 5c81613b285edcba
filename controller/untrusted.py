"""Text from outside the host, bounded and made harmless before anyone stores or shows it.

A commit, a signature, a manifest, a registry answer or a container's logs
can carry any bytes an attacker likes: a 100 kB namespace, terminal escape
sequences, NULs.  Whatever the controller keeps or prints of such text goes
through ``bounded`` (or ``bounded_lines`` for a log excerpt) first, so the
status file, the audit log, the logs, metrics labels and a terminal only ever
see short, printable text.  One function, so every place agrees.
"""

from __future__ import annotations

MAX_CHARS = 300
MAX_LINES = 50
_ELLIPSIS = "…"


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029):
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


# Every character ``_escape`` changes, as a table for ``str.translate`` (one C loop, not one call a character).
_ESCAPES = {code: _escape(chr(code)) for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def bounded(text: str, *, limit: int = MAX_CHARS) -> str:
    """At most ``limit`` characters (an ellipsis says it was cut), every control character escaped."""
    cut = text[: limit + 1]  # escaping only lengthens: never look at more than the limit needs
    # Printable ASCII, the common case (a status file re-read every pass), has nothing to escape.
    escaped = cut if cut.isascii() and cut.isprintable() else cut.translate(_ESCAPES)
    if len(escaped) <= limit and len(text) <= limit:
        return escaped
    return escaped[: limit - 1] + _ELLIPSIS


def bounded_lines(text: str, *, lines: int = MAX_LINES, width: int = MAX_CHARS) -> str:
    """The last ``lines`` lines of ``text``, each bounded to ``width``: a log excerpt."""
    tail = text.splitlines()[-lines:]
    return "\n".join(bounded(line, limit=width) for line in tail)
