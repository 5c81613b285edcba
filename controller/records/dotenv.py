"""The environment's ``.env``: its secrets, read only from a private file.

``DATABASE_URL`` reaches the runtime container from here; registry and git
credentials reach the controller's own clients and never the container.
The syntax is python-dotenv's (quotes, ``export``, comments after a value),
read by its parser rather than by hand; unlike ``dotenv_values``, a line it
cannot read is an error naming the line, never a key silently missing.
No ``${VAR}`` interpolation: a secret may contain ``$``.  This is the only
module importing ``dotenv``.
"""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.parser import parse_stream

from controller.errors import ConfigError
from controller.records.files import read_private_file


class DotenvError(OSError):
    """A ``.env`` line that is not ``KEY=value``: the file cannot be used as it is (an ``OSError``,
    like an unreadable or loose file, so every reader reports it the same way)."""


def load_dotenv(path: Path) -> dict[str, str]:
    """The environment's ``.env`` with the one error policy every reader shares: a file that cannot be
    used (missing, loose, not UTF-8, a line not ``KEY=value``) is ``ConfigError("cannot read <path>:
    <why>")``.  The caller decides what that means: a command fails (``rollback``, ``validate``), a
    pass is retried (``HostConfig``), credentials are absent (``compose``: the pass says why)."""
    try:
        return read_dotenv(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional ``export`` and quotes.

    The file holds secrets, so it must be private (``files.read_private_file``):
    a loose one raises ``InsecureFile``, an ``OSError`` saying how to fix it.  A
    line that cannot be read raises ``DotenvError`` with its number (never its
    text, which may hold a secret).
    """
    text = read_private_file(path).decode("utf-8")
    values: dict[str, str] = {}
    seen = 0  # lines before this binding: its own count runs blank lines into the binding before
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        line = seen + 1 + original[: len(original) - len(original.lstrip())].count("\n")
        seen += original.count("\n")
        if binding.error:
            raise DotenvError(f"line {line} is not KEY=value (an unclosed quote, or no '=')")
        if binding.key is None:
            continue  # a comment or a blank line
        if binding.value is None:
            raise DotenvError(f"line {line} ({binding.key}) has no '=': write {binding.key}=<value>")
        values[binding.key] = binding.value
    return values
