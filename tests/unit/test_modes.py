"""Switching docker.mode: each mode refuses to start its runtime beside the other's, and leaves its journal alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.errors import Reason, Refused
from controller.model.config import HealthConfig, HostPaths
from controller.model.desired import DesiredContainer, runtime_mounts
from controller.model.plan import Plan
from controller.rollout.container import ContainerRollout
from tests.unit.fake_engine import FakeEngine
from tests.unit.test_swarm_rollout import NEW, ScriptedSwarm, rollout

CONTAINER_JOURNAL = {"version": 1, "new_id": "c0002", "old_id": "c0001", "image": NEW, "steps": ["create"]}
SWARM_JOURNAL = {"version": 1, "mode": "swarm", "service": "svc", "spec": {"Name": "x"}, "steps": ["update"]}


def desired(tmp_path: Path) -> DesiredContainer:
    mounts = runtime_mounts(HostPaths(tmp_path, "prod"))
    return DesiredContainer(name="dreichor-runtime-prod", image=NEW, env={}, mounts=mounts, labels={})


def container_rollout(tmp_path: Path, engine: FakeEngine) -> ContainerRollout:
    paths = HostPaths(tmp_path, "prod")
    paths.snapshots.mkdir(parents=True, exist_ok=True)
    return ContainerRollout(engine, paths=paths, health=HealthConfig(timeout=5, stable=1), sleep=lambda _: None)


def write_journal(tmp_path: Path, data: dict[str, object]) -> Path:
    path = HostPaths(tmp_path, "prod").journal
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_swarm_mode_refuses_to_create_the_service_beside_a_running_container(tmp_path: Path) -> None:
    swarm = ScriptedSwarm(update_state="completed", task_image=NEW)
    swarm.exists, swarm.container = False, ["dreichor-runtime-prod"]
    with pytest.raises(Refused) as refused:
        rollout(tmp_path, swarm).apply(Plan("create", "first deploy"), desired(tmp_path))
    reason = str(refused.value)
    assert refused.value.code is Reason.MODE_CONFLICT
    assert "docker stop dreichor-runtime-prod && docker rm dreichor-runtime-prod" in reason
    assert "'dreichor-controller suspend'" in reason and "'dreichor-controller resume'" in reason
    assert not swarm.deployed
    paths = HostPaths(tmp_path, "prod")
    assert not list(paths.snapshots.glob("*.json")) and not paths.journal.exists()


def test_container_mode_refuses_to_create_a_container_beside_the_swarm_service(tmp_path: Path) -> None:
    engine = FakeEngine("prod", registry={NEW})
    engine.swarm_service = True
    with pytest.raises(Refused, match="docker service rm dreichor-runtime-prod") as refused:
        container_rollout(tmp_path, engine).apply(Plan("create", "first deploy"), desired(tmp_path))
    assert refused.value.code is Reason.MODE_CONFLICT
    assert engine.names_present() == set() and "create" not in engine.calls
    assert not list(HostPaths(tmp_path, "prod").snapshots.glob("*.json"))


def test_swarm_recovery_leaves_a_container_mode_journal_alone(tmp_path: Path) -> None:
    path = write_journal(tmp_path, CONTAINER_JOURNAL)
    swarm = ScriptedSwarm(update_state="completed", task_image=NEW)
    assert rollout(tmp_path, swarm).recover() is None
    assert json.loads(path.read_text()) == CONTAINER_JOURNAL and swarm.restored == []


def test_container_recovery_leaves_a_swarm_journal_alone(tmp_path: Path) -> None:
    path = write_journal(tmp_path, SWARM_JOURNAL)
    engine = FakeEngine("prod", registry={NEW})
    assert container_rollout(tmp_path, engine).recover() is None
    assert json.loads(path.read_text()) == SWARM_JOURNAL and engine.calls == []


def test_a_change_over_the_other_modes_journal_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = write_journal(tmp_path, SWARM_JOURNAL)
    engine = FakeEngine("prod", registry={NEW})
    with pytest.raises(Refused) as refused:
        container_rollout(tmp_path, engine).apply(Plan("create", "first deploy"), desired(tmp_path))
    assert str(refused.value).startswith(f"{path} holds an unfinished swarm-mode change: set docker.mode: swarm")
    assert json.loads(path.read_text()) == SWARM_JOURNAL and engine.names_present() == set()
    swarm_path = write_journal(tmp_path / "s", CONTAINER_JOURNAL)
    swarm = ScriptedSwarm(update_state="completed", task_image=NEW)
    with pytest.raises(Refused, match="unfinished container-mode change"):
        rollout(tmp_path / "s", swarm).apply(Plan("replace", "deploying b"), desired(tmp_path / "s"))
    assert json.loads(swarm_path.read_text()) == CONTAINER_JOURNAL and not swarm.deployed
