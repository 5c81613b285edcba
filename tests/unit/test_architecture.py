"""The import contracts bite, and the package stays small at the top.

A contract that passes because it was written to fit today's imports proves
nothing: here a copy of the package gets one import per contract that only
that contract forbids, and ``lint-imports`` (run on the copy, with
pyproject.toml's contracts) must fail naming every contract and the edge that
breaks it; the unchanged copy must pass, and every contract must have its bite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
MAX_TOP_MODULES = 5  # compose, service, errors, untrusted and one to spare; everything else sits in a package

# One import per contract that only that contract forbids: (the start of its name, the module that gets the
# import, the import, the edge lint-imports must name).
SDK = "controller/untrusted.py"
BITES = [
    (
        "Imports flow",
        "controller/service.py",
        "from controller import compose",
        "controller.service -> controller.compose",
    ),
    (
        "The command line reaches",
        "controller/cli/main.py",
        "from controller.records.status import read_status",
        "controller.cli.main -> controller.records.status",
    ),
    (
        "The API reaches",
        "controller/api/page.py",
        "from controller.records.files import atomic_write",
        "controller.api.page -> controller.records.files",
    ),
    (
        "The daemon reaches",
        "controller/daemon/scheduler.py",
        "from controller.engine.docker import Engine",
        "controller.daemon.scheduler -> controller.engine.docker",
    ),
    (
        "Inside rollout",
        "controller/rollout/base.py",
        "from controller.rollout.container import ContainerRollout",
        "controller.rollout.base -> controller.rollout.container",
    ),
    (
        "Inside engine",
        "controller/engine/docker.py",
        "from controller.engine import swarm",
        "controller.engine.docker -> controller.engine.swarm",
    ),
    (
        "Inside signatures",
        "controller/signatures/commits/verification.py",
        "from controller.signatures.images import verifier",
        "controller.signatures.commits.verification -> controller.signatures.images.verifier",
    ),
    ("The engine port", "controller/engine/port.py", "import docker", "controller.engine.port -> docker"),
    *(
        (f"{sdk} is imported", SDK, f"import {sdk}", f"controller.untrusted -> {sdk}")
        for sdk in (
            "docker",
            "git",
            "pysequoia",
            "cryptography",
            "sigstore",
            "jinja2",
            "apprise",
            "jwt",
            "h11",
            "apscheduler",
            "dotenv",
            "shtab",
            "prometheus_client",
            "yaml",
        )
    ),
]


def _copy(tmp_path: Path, adds: dict[str, list[str]] | None = None) -> Path:
    """A copy of ``controller`` and pyproject.toml, with ``adds``' lines appended to the files they name."""
    shutil.copytree(ROOT / "controller", tmp_path / "controller", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name, lines in (adds or {}).items():
        with (tmp_path / name).open("a") as module:
            module.write("".join(f"\n{line}  # added by the test\n" for line in lines))
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the copy in ``root``, with pyproject.toml's contracts."""
    command = Path(sys.executable).with_name("lint-imports")
    assert command.exists(), "lint-imports is not installed beside this Python"
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [str(command), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _words(text: str) -> str:
    """lint-imports wraps long contract names and edges at any space: compare with all white space taken out."""
    return "".join(text.split())


def _named(start: str) -> str:
    (name,) = (c["name"] for c in CONTRACTS if c["name"].startswith(start))
    return str(name)


def test_the_unchanged_copy_keeps_every_contract(tmp_path: Path) -> None:
    proc = _lint(_copy(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout


def test_every_contract_has_its_bite() -> None:
    assert sorted(_named(start) for start, *_ in BITES) == sorted(c["name"] for c in CONTRACTS)


def test_each_contract_breaks_on_the_one_import_it_forbids(tmp_path: Path) -> None:
    adds: dict[str, list[str]] = {}
    for _, module, line, _ in BITES:
        adds.setdefault(module, []).append(line)
    proc = _lint(_copy(tmp_path, adds))
    out = _words(proc.stdout)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"Contracts: 0 kept, {len(CONTRACTS)} broken." in proc.stdout
    for start, _, _, edge in BITES:
        assert _words(f"{_named(start)} BROKEN") in out
        assert _words(edge) in out, f"{start}: lint-imports does not name {edge}"


def test_a_new_top_level_module_belongs_to_no_layer_until_placed(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "controller" / "newcomer.py").write_text('"""A module no layer names yet."""\n')
    proc = _lint(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "controller.newcomer" in _words(proc.stdout + proc.stderr)


def test_at_most_five_modules_sit_directly_in_the_package() -> None:
    top = sorted(p.stem for p in (ROOT / "controller").glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in controller/: {', '.join(top)}"


def test_a_host_without_keyless_signatures_never_loads_sigstore() -> None:
    """sigstore-python costs every process ~10 MB and 0.15 s: only a keyless check may load it."""
    probe = (
        "import sys, controller.cli, controller.service, controller.daemon.scheduler; print('sigstore' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "False", loaded.stderr
