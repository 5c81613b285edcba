"""The systemd template unit passes ``systemd-analyze verify`` and carries its hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "dreichor-controller@.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_verifies_cleanly_for_each_environment(tmp_path: Path) -> None:
    # The installed entry point stands in for /usr/local/bin, which verify requires to exist.
    binary = Path(sys.executable).with_name("dreichor-controller")
    text = UNIT.read_text().replace("/usr/local/bin/dreichor-controller", str(binary))
    for env in ("dev", "prod"):
        instance = tmp_path / f"dreichor-controller@{env}.service"
        instance.write_text(text)
        proc = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "Unknown" not in proc.stderr and "ignoring" not in proc.stderr, proc.stderr


def test_the_unit_writes_only_its_environments_state() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["ReadWritePaths"] == "/opt/dreichor/%i/deploy-agent/state"
    assert settings["ExecStart"].endswith("run --config /opt/dreichor/%i/deploy-agent/controller.yaml")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "Restart": "on-failure",
    }.items():
        assert settings[key] == value
