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
    assert settings["ExecStart"].endswith("run -e %i")
    assert settings["Environment"] == "DREICHOR_ROOT=/opt/dreichor"
    assert settings["AssertPathExists"] == "/opt/dreichor/%i/deploy-agent/controller.yaml"  # fails loudly
    assert "ConditionPathExists" not in settings  # a silent skip
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "Restart": "on-failure",
    }.items():
        assert settings[key] == value


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_start_timeout_covers_a_pull_and_the_health_gate() -> None:
    # READY=1 follows the first pass: fetch, pull and the health gate (60 s by default) must fit.
    value = _settings()["TimeoutStartSec"][0]
    seconds = int(value.removesuffix("min")) * 60 if value.endswith("min") else int(value)
    assert seconds >= 600


def test_the_unit_hides_other_processes_and_filters_system_calls() -> None:
    settings = _settings()
    assert settings["ProtectProc"] == ["invisible"]
    assert settings["ProcSubset"] == ["pid"]
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("dreichor-controller")
    instance = tmp_path / "dreichor-controller@prod.service"
    instance.write_text(UNIT.read_text().replace("/usr/local/bin/dreichor-controller", str(binary)))
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(instance)], capture_output=True, text=True, check=False
    )
    score = float(proc.stdout.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    print(f"systemd-analyze security: {score}")
    assert score <= 2.0, proc.stdout
