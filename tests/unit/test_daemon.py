"""The daemon's SIGHUP reload: the new config takes effect whole, only the process's hooks carry over.

Real config files and the real layout; no pass runs, so no engine is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from controller.contract import DesiredContainer
from controller.daemon import JOB_ID, Daemon
from controller.errors import Reason, Retryable
from controller.recording import PassResult
from controller.records.host_init import init_layout
from controller.service import EnvironmentService
from testbed import ManifestRepo

CONFIG = """\
environment: prod
root: {root}
source:
  url: {url}
trust:
  allowed_signers: trust/allowed_signers
image:
  repository: registry.test/dreichor/runtime
{signatures}
"""
IMAGE = "registry.test/dreichor/runtime@sha256:" + "a" * 64


def write_config(path: Path, *, root: Path, url: str, keys: list[str] | None) -> None:
    signatures = "  signatures:\n    keys: [" + ", ".join(keys) + "]" if keys else ""
    path.write_text(CONFIG.format(root=root, url=url, signatures=signatures))


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    init_layout(tmp_path / "opt", "prod")
    agent = tmp_path / "opt" / "prod" / "deploy-agent"
    repo = ManifestRepo(tmp_path / "manifests")
    write_config(agent / "controller.yaml", root=tmp_path / "opt", url=repo.url, keys=None)
    daemon = Daemon(agent / "controller.yaml")
    daemon.scheduler.add_job(daemon.tick, daemon._trigger(), id=JOB_ID)
    return daemon


def reconfigure(daemon: Daemon, keys: list[str] | None) -> None:
    config = daemon.config
    write_config(daemon.config_path, root=config.root, url=config.source.url, keys=keys)
    daemon.reload()


def image_check_names(service: EnvironmentService) -> str:
    """What the service's image check says about a key file that is not there (no registry is asked)."""
    assert service.world.image_check is not None
    desired = DesiredContainer(name="dreichor-runtime-prod", image=IMAGE, env={}, mounts=(), labels={})
    with pytest.raises(Retryable) as refused:
        service.world.image_check(desired)
    return refused.value.reason


def test_a_reload_that_adds_image_signatures_turns_the_check_on(daemon: Daemon) -> None:
    assert daemon.service.world.image_check is None
    reconfigure(daemon, ["trust/cosign.pub"])
    assert "trust/cosign.pub" in image_check_names(daemon.service)


def test_a_reload_that_rotates_the_cosign_key_checks_against_the_new_key(daemon: Daemon) -> None:
    reconfigure(daemon, ["trust/old.pub"])
    reconfigure(daemon, ["trust/new.pub"])
    said = image_check_names(daemon.service)
    assert "trust/new.pub" in said and "old.pub" not in said


def test_a_reload_that_removes_image_signatures_turns_the_check_off(daemon: Daemon) -> None:
    reconfigure(daemon, ["trust/cosign.pub"])
    reconfigure(daemon, None)
    assert daemon.service.world.image_check is None


def test_a_reload_keeps_the_hooks(daemon: Daemon) -> None:
    heard: list[object] = []
    daemon.service.audit_hooks.append(heard.append)
    daemon.service.notice_hooks.append(heard.append)
    reconfigure(daemon, ["trust/cosign.pub"])
    assert daemon.service.audit_hooks == [heard.append] and daemon.service.notice_hooks == [heard.append]


def test_a_held_change_is_one_warning_and_no_refusal_in_the_metrics(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = PassResult("waiting", "waiting for approvals (1 of 2: alice)", code=Reason.AWAITING_APPROVALS)
    monkeypatch.setattr(daemon.service, "sync", lambda options=None: held)
    with caplog.at_level(logging.INFO, logger="dreichor"):
        for _ in range(3):
            daemon.tick()
    passes = [r for r in caplog.records if r.getMessage() == "pass"]
    assert [r.levelno for r in passes] == [logging.WARNING, logging.INFO, logging.INFO]
    text = daemon.metrics.exposition().decode()
    assert 'dreichor_passes_total{result="waiting"} 3.0' in text
    assert "dreichor_refusals_total{" not in text
