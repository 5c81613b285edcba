"""The soak in the engine tier: two minutes of an operator's bad day, and every invariant checked after.

``bench/chaos --minutes N`` runs the same day for longer (10 minutes by default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import LocalRegistry, ManifestRepo, PrivateDocker, SshKey
from testbed.chaos import soak
from testbed.disk import DiskUnavailable


def test_two_minutes_of_pushes_kills_engine_restarts_and_disk_faults_keep_every_invariant(
    tmp_path: Path,
    docker_engine: PrivateDocker,
    registry: LocalRegistry,
    manifest_repo: ManifestRepo,
    ssh_key: SshKey,
    images: dict[str, str],
) -> None:
    try:
        figures = soak(
            tmp_path,
            engine=docker_engine,
            registry=registry,
            repo=manifest_repo,
            key=ssh_key,
            images=images,
            minutes=2,
        )
    except DiskUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs for the state folder: {exc}")
    assert figures.violations == [], figures.as_dict()
    assert figures.kills > 0 and sum(figures.pushes.values()) > 0 and figures.status_samples > 0
