"""The pre-commit hook a manifest repository runs: ``validate`` on each changed manifest."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

HOOKS = Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml"
DIGEST = "sha256:" + "ab" * 32
REPO = "ghcr.io/ceerkle/dreichor-trading/runtime"


def hook() -> dict[str, object]:
    (only,) = yaml.safe_load(HOOKS.read_text())
    assert only["id"] == "dreichor-validate"
    return dict(only)


def run_hook(folder: Path, *files: str) -> subprocess.CompletedProcess[str]:
    """Run the hook's entry as pre-commit does: the entry, then the file names."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [*shlex.split(str(hook()["entry"])), *files]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)


def test_the_hook_selects_the_manifests_only() -> None:
    pattern = re.compile(str(hook()["files"]))
    assert [p for p in ("envs/prod.yaml", "envs/dev.yml", "envs/x.yaml", "README.md") if pattern.search(p)] == [
        "envs/prod.yaml",
        "envs/dev.yml",
    ]


def test_the_hook_passes_good_manifests_and_fails_on_any_bad_one(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs/dev.yaml").write_text(f"environment: dev\nimage: {REPO}@{DIGEST}\n")
    (tmp_path / "envs/prod.yaml").write_text(f"environment: prod\nimage: {REPO}:latest@{DIGEST}\n")
    assert run_hook(tmp_path, "envs/dev.yaml").returncode == 0
    failed = run_hook(tmp_path, "envs/prod.yaml", "envs/dev.yaml")
    assert failed.returncode != 0
    assert "'latest' is refused in prod" in failed.stderr
