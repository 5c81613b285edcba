"""The earlier releases kept in ``tests/data/releases`` are those releases' packages, byte for byte.

The upgrade tests (``tests/integration/test_records.py``) run them without reaching their commits,
so a ``--depth 1`` clone tests alone.  Where the history is there, each archive's files must be the
commit's; in a shallow clone that comparison is skipped, the listing still checked.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "tests" / "data" / "releases"
SOURCES = (ROOT / "tests" / "data" / "SOURCES.md").read_text(encoding="utf-8")


def kept() -> list[Path]:
    return sorted(RELEASES.glob("*.tar.gz"))


def files(archive: tarfile.TarFile) -> dict[str, bytes]:
    return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_every_kept_release_is_named_with_its_commit() -> None:
    assert len(kept()) >= 5
    for path in kept():
        assert re.search(rf"this repository@{path.name.removesuffix('.tar.gz')}[0-9a-f]{{33}} `controller/`", SOURCES)


@pytest.mark.parametrize("path", kept(), ids=lambda p: p.name)
def test_a_kept_release_is_the_package_its_commit_shipped(path: Path) -> None:
    with tarfile.open(path) as archive:
        ours = files(archive)
    assert "controller/__main__.py" in ours and all(name.startswith("controller/") for name in ours)
    commit = path.name.removesuffix(".tar.gz")
    present = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", commit], capture_output=True, check=False)
    if present.returncode != 0:
        pytest.skip(f"{commit} is not in this clone's history (a shallow clone)")
    shipped = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "controller"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(shipped.stdout)) as archive:
        assert files(archive) == ours
