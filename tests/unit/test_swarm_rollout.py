"""The Swarm rollout's judgement over a scripted service: what counts as done, what as a rollback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from controller.engine.modes import container_found
from controller.engine.port import ServiceState, TaskState
from controller.model.config import HealthConfig, HostPaths
from controller.model.containers import ContainerState
from controller.model.desired import DesiredContainer, runtime_mounts
from controller.model.plan import Plan
from controller.rollout.base import HealthGateFailed
from controller.rollout.swarm import SwarmRollout

OLD, NEW = "reg/runtime@sha256:" + "a" * 64, "reg/runtime@sha256:" + "b" * 64


class ScriptedSwarm:
    """A service whose update state and tasks after ``deploy`` are what the test says."""

    canonical = "dreichor-runtime-prod"

    def __init__(self, *, update_state: str | None, task_image: str, task_state: str = "running") -> None:
        self.spec: dict[str, Any] = {"Name": self.canonical, "TaskTemplate": {"ContainerSpec": {"Image": OLD}}}
        self.before = dict(self.spec)
        self.after = (update_state, task_image, task_state)
        self.deployed = False
        self.restored: list[dict[str, Any] | None] = []
        self.container: list[str] = []  # a container-mode runtime of the environment, by name
        self.exists = True

    def close(self) -> None:
        """Nothing to release."""

    def current(self) -> ContainerState | None:
        return None

    def check_placement(self) -> str:
        return "node-1"

    def refuse_other_mode(self) -> None:
        if self.container:
            raise container_found(self.container)

    def service(self) -> ServiceState | None:
        if not self.exists:
            return None
        state = self.after[0] if self.deployed else "completed"
        return ServiceState(id="svc", version=3, spec=self.spec, update_state=state, update_message="task failed")

    def tasks(self, service: ServiceState | None = None) -> list[TaskState]:
        image, state = (self.after[1], self.after[2]) if self.deployed else (OLD, "running")
        return [TaskState("t2", "node-1", state, "running", image, "c2", current=True)]

    def image_has_healthcheck(self, image: str) -> bool:
        return True

    def pull(self, pinned: str, *, auth: dict[str, str] | None = None) -> str:
        return "sha256:id"

    def deploy(self, desired: DesiredContainer, *, auth: dict[str, str] | None = None) -> ServiceState:
        self.deployed = self.exists = True
        state = self.service()
        assert state is not None
        return state

    def restore(self, spec: dict[str, Any] | None, *, auth: dict[str, str] | None = None) -> None:
        self.restored.append(spec)
        self.deployed = False

    def logs_tail(self, task_id: str, *, lines: int = 50) -> str:
        return "the new task's output"


def rollout(tmp_path: Path, swarm: ScriptedSwarm) -> SwarmRollout:
    paths = HostPaths(tmp_path, "prod")
    paths.snapshots.mkdir(parents=True)
    clock = iter(range(0, 10_000))
    return SwarmRollout(
        swarm,
        paths=paths,
        health=HealthConfig(timeout=5, stable=1),
        sleep=lambda _: None,
        monotonic=lambda: float(next(clock)),
        at_step=lambda _: None,
    )


def desired(tmp_path: Path) -> DesiredContainer:
    return DesiredContainer(
        name="dreichor-runtime-prod", image=NEW, env={}, mounts=runtime_mounts(HostPaths(tmp_path, "prod")), labels={}
    )


def test_a_completed_update_with_a_running_task_on_the_new_digest_is_applied(tmp_path: Path) -> None:
    swarm = ScriptedSwarm(update_state="completed", task_image=NEW)
    outcome = rollout(tmp_path, swarm).apply(Plan("replace", "deploying b"), desired(tmp_path))
    assert (outcome.result, outcome.container_id, swarm.restored) == ("applied", "c2", [])


@pytest.mark.parametrize("state", ["rollback_started", "rollback_paused", "rollback_completed", "paused"])
def test_a_swarm_rollback_or_pause_is_a_rollback_and_the_snapshot_spec_comes_back(tmp_path: Path, state: str) -> None:
    swarm = ScriptedSwarm(update_state=state, task_image=NEW)
    with pytest.raises(HealthGateFailed, match="Swarm"):
        rollout(tmp_path, swarm).apply(Plan("replace", "deploying b"), desired(tmp_path))
    assert swarm.restored == [swarm.before]


@pytest.mark.parametrize(
    ("task_image", "task_state"),
    [(OLD, "running"), (NEW, "starting"), (NEW, "failed")],
    ids=["old-digest", "never-healthy", "task-failed"],
)
def test_completed_is_not_enough_without_a_healthy_task_on_the_new_digest(
    tmp_path: Path, task_image: str, task_state: str
) -> None:
    swarm = ScriptedSwarm(update_state="completed", task_image=task_image, task_state=task_state)
    with pytest.raises(HealthGateFailed):
        rollout(tmp_path, swarm).apply(Plan("replace", "deploying b"), desired(tmp_path))
    assert swarm.restored == [swarm.before]


def test_each_swarm_step_is_logged_with_its_duration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    swarm = ScriptedSwarm(update_state="completed", task_image=NEW)
    with caplog.at_level(logging.INFO, logger="dreichor.rollout"):
        rollout(tmp_path, swarm).apply(Plan("replace", "deploying b"), desired(tmp_path))
    steps = {r.step: r for r in caplog.records if hasattr(r, "step")}
    assert list(steps) == ["pull", "snapshot", "update", "health"]
    assert all(isinstance(r.seconds, float) and r.levelno == logging.INFO for r in steps.values())
    assert steps["pull"].node == "node-1"


def test_a_failed_swarm_gate_is_logged_at_warning_with_the_rollback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    swarm = ScriptedSwarm(update_state="rollback_completed", task_image=NEW)
    with caplog.at_level(logging.INFO, logger="dreichor.rollout"), pytest.raises(HealthGateFailed):
        rollout(tmp_path, swarm).apply(Plan("replace", "deploying b"), desired(tmp_path))
    failed = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "step", None) for r in failed] == ["health"]
    assert [getattr(r, "step", None) for r in caplog.records][-1] == "rollback"
