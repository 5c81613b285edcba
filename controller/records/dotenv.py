"""The environment's ``.env``: its secrets, read only from a private file.

``DATABASE_URL`` reaches the runtime container from here; registry and git
credentials reach the controller's own clients and never the container.
"""

from __future__ import annotations

from pathlib import Path

from controller.records.files import read_private_file


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional ``export`` and quotes.

    The file holds secrets, so it must be private (``files.read_private_file``):
    a loose one raises ``InsecureFile``, an ``OSError`` saying how to fix it.
    """
    values: dict[str, str] = {}
    for raw_line in read_private_file(path).decode("utf-8").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
