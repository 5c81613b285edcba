"""The command line as a user runs it: ``validate`` and ``init`` exit codes and output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main
from controller.model.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "cd" * 32


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_example_manifests_are_valid(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO_ROOT / "envs" / f"{env}.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"container:  dreichor-runtime-{env}" in out
    assert "/var/lib/dreichor/audit-events" in out


def test_validate_refuses_with_exit_3_and_every_reason_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "envs" / "prod.yaml", "environment: prod\nimage: x:latest\nports: [80]\n")
    assert main(["validate", str(bad)]) == 3
    err = capsys.readouterr().err.splitlines()
    assert all(line.startswith("refused: ") for line in err)
    assert any("'ports' is owned by the controller" in line for line in err)
    assert any("'latest' is refused in prod" in line for line in err)


def test_validate_json_reports_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "prod.yaml", "environment: dev\n")
    assert main(["validate", str(bad), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert any("missing field 'image'" in r for r in report["reasons"])


def test_validate_takes_the_environment_from_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "candidate.yaml",
        f"environment: dev\nimage: ghcr.io/ceerkle/dreichor-trading/runtime@{DIGEST}\n",
    )
    assert main(["validate", str(path)]) == 1
    assert "pass --environment" in capsys.readouterr().err
    assert main(["validate", str(path), "--environment", "dev"]) == 0


def test_validate_with_a_config_checks_its_repository_and_dotenv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--environment", "prod", "--root", str(tmp_path)]) == 0
    config = tmp_path / "prod" / "deploy-agent" / "controller.yaml"
    text = config.read_text().replace("  # url: ssh://", "  url: ssh://")
    config.write_text(text.replace("ghcr.io/ceerkle/dreichor-trading/runtime", "127.0.0.1:5000/rt"))
    (tmp_path / "prod/deploy-agent/.env").write_text("DATABASE_URL=postgresql://h/dreichor_dev\n")
    manifest = write(tmp_path / "prod.yaml", f"environment: prod\nimage: 127.0.0.1:5000/rt@{DIGEST}\n")
    assert main(["validate", str(manifest), "--config", str(config)]) == 3
    assert "names database 'dreichor_dev', not 'dreichor_prod'" in capsys.readouterr().err
    (tmp_path / "prod/deploy-agent/.env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    assert main(["validate", str(manifest), "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["container"]
    assert shown["env"]["DATABASE_URL"] == "<from .env>"
    assert shown["mounts"][0]["source"] == str(tmp_path / "prod/volumes/audit-events")


def test_init_creates_the_layout_with_private_modes(tmp_path: Path) -> None:
    assert main(["init", "--environment", "dev", "--root", str(tmp_path)]) == 0
    agent = tmp_path / "dev" / "deploy-agent"
    assert stat.S_IMODE((agent / ".env").stat().st_mode) == 0o600
    assert stat.S_IMODE((agent / "state").stat().st_mode) == 0o700
    assert all(line.startswith("#") for line in (agent / "trust" / "allowed_signers").read_text().splitlines())
    assert (tmp_path / "dev/volumes/audit-events").is_dir()
    assert (tmp_path / "dev/volumes/snapshots").is_dir()
    config_file = agent / "controller.yaml"
    config_file.write_text(config_file.read_text().replace("  # url: ssh://", "  url: ssh://"))
    config = load_config(config_file)
    assert (config.environment, config.root, config.listen) == ("dev", str(tmp_path), "127.0.0.1:3005")


def test_init_is_idempotent_and_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["init", "--environment", "prod", "--root", str(tmp_path)])
    dotenv = tmp_path / "prod/deploy-agent/.env"
    dotenv.write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    capsys.readouterr()
    assert main(["init", "--environment", "prod", "--root", str(tmp_path)]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert dotenv.read_text() == "DATABASE_URL=postgresql://h/dreichor_prod\n"


def test_python_dash_m_runs_the_same_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "validate", str(REPO_ROOT / "envs" / "prod.yaml")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "valid: " in proc.stdout


def test_a_hostile_manifest_prints_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "prod.yaml", "a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "nesting deeper than 32 levels" in proc.stderr
