"""The import contracts bite, and the package stays small at the top.

A contract that passes because it was written to fit today's imports proves
nothing: here a copy of the package gets an import the design forbids, and
``lint-imports`` (run on the copy, with pyproject.toml's contracts) must fail
naming the contract it breaks; the unchanged copy must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
MAX_TOP_MODULES = 22


def _contract_of(source: str) -> str:
    """The name of the forbidden contract that covers ``source``."""
    return next(c["name"] for c in CONTRACTS if c["type"] == "forbidden" and source in c["source_modules"])


def _lint_copy(tmp_path: Path, *, cli_adds: str = "") -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over a copy of ``controller`` (with ``cli_adds`` appended to its cli.py)."""
    shutil.copytree(ROOT / "controller", tmp_path / "controller", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "controller" / "cli.py").open("a") as cli:
        cli.write(cli_adds)
    command = Path(sys.executable).with_name("lint-imports")
    assert command.exists(), "lint-imports is not installed beside this Python"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [str(command), "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _words(text: str) -> str:
    """lint-imports wraps long contract names: compare with the line breaks undone."""
    return " ".join(text.split())


def test_the_unchanged_copy_keeps_every_contract(tmp_path: Path) -> None:
    proc = _lint_copy(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout


@pytest.mark.parametrize(
    ("line", "edge"),
    [
        ("from controller.records.status import read_status", "controller.cli -> controller.records.status"),
        ("from controller.engine.docker import Engine", "controller.cli -> controller.engine.docker"),
        ("from controller.source.git import GitSource", "controller.cli -> controller.source"),
    ],
    ids=["records", "engine", "git"],
)
def test_an_import_the_command_line_must_not_make_breaks_its_contract(tmp_path: Path, line: str, edge: str) -> None:
    proc = _lint_copy(tmp_path, cli_adds=f"\n{line}  # added by the test\n")
    out = _words(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _words(f"{_contract_of('controller.cli')} BROKEN") in out
    assert edge in out


def test_at_most_22_modules_sit_directly_in_the_package() -> None:
    top = sorted(p.stem for p in (ROOT / "controller").glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in controller/: {', '.join(top)}"


def test_the_service_holds_the_operations_only() -> None:
    lines = (ROOT / "controller" / "service.py").read_text().count("\n")
    assert lines <= 350, f"controller/service.py has {lines} lines: composition goes to compose, writing to records"


def test_a_host_without_keyless_signatures_never_loads_sigstore() -> None:
    """sigstore-python costs every process ~10 MB and 0.15 s: only a keyless check may load it."""
    probe = "import sys, controller.cli, controller.service, controller.daemon; print('sigstore' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "False", loaded.stderr
