"""README's "Your own repository in ten minutes", run as written against the real engine.

The section's first block sets four values to the reader's own; the test sets them to its
own instead (an empty bare repository, the test registry and its image, a temporary root)
and runs every other ``sh`` block of the section, in order, in one bash with ``set -e``,
as a reader pasting them into one shell would. ``HOME`` is a temporary folder; ``cosign``
is ``tests/readme_cosign.py`` (Debian has no cosign package).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from controller.records.status import read_status
from testbed import LocalRegistry, PrivateDocker

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Your own repository in ten minutes"


def ten_minutes() -> list[str]:
    """The section's ``sh`` blocks, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```sh\n(.*?)```", text[start:end], re.DOTALL)


def test_the_settings_block_names_the_four_values_the_test_replaces() -> None:
    settings = ten_minutes()[0]
    assert re.findall(r"^export (\w+)=", settings, re.MULTILINE) == [
        "DREICHOR_ROOT",
        "MANIFESTS_URL",
        "REPOSITORY",
        "IMAGE",
    ]


def test_ten_minutes_from_an_empty_repository_to_a_signed_approved_deploy(
    tmp_path: Path, docker_engine: PrivateDocker, registry: LocalRegistry, images: dict[str, str]
) -> None:
    docker_engine.remove_all_containers()
    home, bare, tools = tmp_path / "home", tmp_path / "deployments.git", tmp_path / "bin"
    home.mkdir()
    tools.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    cosign = tools / "cosign"
    cosign.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m tests.readme_cosign "$@"\n')
    cosign.chmod(0o755)
    env = {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:{tools}:/usr/sbin:/usr/bin:/sbin:/bin",
        "DREICHOR_ROOT": str(tmp_path / "root"),
        "MANIFESTS_URL": f"file://{bare}",
        "REPOSITORY": registry.repository,
        "IMAGE": images["healthy-a"],
        "DOCKER_URL": docker_engine.url,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    script = "set -e\n" + "\n".join(ten_minutes()[1:])
    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=home, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "exit 5: the change waits for approvals" in out
    assert "waiting for approvals (0 of 2" in out + done.stderr
    assert ": 2 of 2 — enough\n" in out
    assert f"trusted: {images['healthy-a']} signed by" in out
    inspect = docker_engine.inspect("dreichor-runtime-prod")
    assert inspect is not None and inspect["State"]["Running"]
    assert "LOG_LEVEL=debug" in inspect["Config"]["Env"]  # the approved change runs
    assert inspect["Config"]["Image"] == images["healthy-a"]
    status = read_status(tmp_path / "root" / "prod" / "deploy-agent" / "state" / "status.json")
    assert status is not None and status.sync is not None
    assert (status.sync.state, status.health) == ("InSync", "Healthy")
