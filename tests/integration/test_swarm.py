"""Swarm mode against a real single-node swarm: deploy, update, rollback, drift, refusals, crashes.

The controller runs through its own command line, as an operator would; what
is checked is what ``docker service inspect``, ``docker service ps`` and
``docker events`` show, and the status file.  After every test the events of
the swarm's engine must show at most one running task of an environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.rollout.base import CRASH_HOOK
from testbed import ControllerHost, LocalRegistry, ManifestRepo, PrivateDocker, SshKey
from testbed.swarm import PrivateSwarm, swarm_mode

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = "dreichor-runtime-prod"


@pytest.fixture(scope="module")
def swarm(docker_engine: PrivateDocker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSwarm]:
    """A private engine with its own single-node swarm (after the session engine proved dockerd works)."""
    bed = PrivateSwarm(tmp_path_factory.mktemp("swarm")).start()
    yield bed
    bed.stop()


@pytest.fixture
def host(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    swarm: PrivateSwarm,
    registry: LocalRegistry,
    manifest_repo: ManifestRepo,
    ssh_key: SshKey,
    images: dict[str, str],
) -> Iterator[ControllerHost]:
    """dev and prod controllers in swarm mode, the node labelled for prod, image A published."""
    swarm.reset()
    swarm.label("prod")
    since = f"{time.time():.6f}"
    bed = swarm_mode(ControllerHost(tmp_path, swarm.engine, registry, manifest_repo, ssh_key), swarm)
    bed.publish("initial", dev=images["healthy-a"], prod=images["healthy-a"])
    yield bed
    if request.node.get_closest_marker("runs_two_by_hand") is None:
        assert swarm.max_running_at_once(since=since, env="prod") <= 1


def image_of(swarm: PrivateSwarm) -> str:
    service = swarm.service(SERVICE)
    assert service is not None
    return str(service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


def running_images(swarm: PrivateSwarm) -> list[str]:
    return [t["Spec"]["ContainerSpec"]["Image"] for t in swarm.running_tasks(SERVICE)]


def test_a_deploy_creates_the_one_replica_service_the_contract_derives(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    spec = swarm.service(SERVICE)["Spec"]  # type: ignore[index]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert container["Image"] == images["healthy-a"]
    assert container["Env"] == ["DATABASE_URL=postgresql://dreichor@127.0.0.1/dreichor_prod"]
    volumes = host.root / "prod" / "volumes"
    assert sorted((m["Type"], m["Source"], m["Target"]) for m in container["Mounts"]) == [
        ("bind", str(volumes / "audit-events"), "/var/lib/dreichor/audit-events"),
        ("bind", str(volumes / "snapshots"), "/var/lib/dreichor/snapshots"),
    ]
    assert not spec.get("EndpointSpec", {}).get("Ports")
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id == {swarm.node_id}"]
    assert container["Labels"]["io.dreichor.revision"] == host.repo.head()
    for policy in (spec["UpdateConfig"], spec["RollbackConfig"]):
        assert policy["Order"] == "stop-first" and policy["Monitor"] > 0 and policy["FailureAction"]
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"
    assert running_images(swarm) == [images["healthy-a"]]
    status = host.status()
    task = swarm.running_tasks(SERVICE)[0]
    assert status.phase == "InSync"
    assert (status.container.state, status.container.health) == ("running", "healthy")
    assert (status.container.node, status.container.task) == (swarm.hostname, task["ID"])
    assert status.container.id == task["Status"]["ContainerStatus"]["ContainerID"]
    assert host.sync("dev") == 3  # no node carries dev's label: dev's controller never lands on prod's node
    assert swarm.service("dreichor-runtime-dev") is None


def test_an_update_replaces_the_task_stop_first_and_a_sick_image_is_rolled_back(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    host.publish("deploy b", prod=images["healthy-b"])
    assert host.sync() == 0
    assert image_of(swarm) == images["healthy-b"] and running_images(swarm) == [images["healthy-b"]]
    assert host.status().applied.image == images["healthy-b"]  # type: ignore[union-attr]
    snapshots = list((host.root / "prod" / "deploy-agent" / "state" / "snapshots").glob("*.json"))
    assert snapshots and any(images["healthy-a"] in s.read_text() for s in snapshots)

    host.publish("deploy a sick image", prod=images["unhealthy"])
    assert host.sync() == 4
    assert image_of(swarm) == images["healthy-b"]
    assert running_images(swarm) == [images["healthy-b"]]
    status = host.status()
    assert status.last_attempt.result == "rolled_back"  # type: ignore[union-attr]
    assert status.applied.image == images["healthy-b"]  # type: ignore[union-attr]
    assert status.container.state == "running"
    assert host.sync() == 3  # the sick change stays held; the service keeps running b
    assert running_images(swarm) == [images["healthy-b"]]


def test_a_hand_made_service_update_is_repaired(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    swarm.engine.cli("service", "update", "--quiet", "--env-add", "EXTRA=by-hand", SERVICE)
    assert "EXTRA=by-hand" in swarm.service(SERVICE)["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]  # type: ignore[index]
    assert host.sync() == 0
    env = swarm.service(SERVICE)["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]  # type: ignore[index]
    assert env == ["DATABASE_URL=postgresql://dreichor@127.0.0.1/dreichor_prod"]
    assert running_images(swarm) == [images["healthy-a"]]
    assert any(e["event"] == "drift_repaired" for e in host.audit())


def test_a_service_widened_by_hand_is_repaired_to_the_controllers_spec(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    widen = ["--cap-add", "SYS_ADMIN", "--user", "0:0", "--mount-add", "type=tmpfs,target=/scratch"]
    swarm.engine.cli("service", "update", "--quiet", *widen, SERVICE)
    assert host.sync() == 0
    event = [e for e in host.audit() if e["event"] == "drift_repaired"][-1]
    assert {"capabilities CAP_SYS_ADMIN", "user 0:0", "mounts"} <= set(event["drift"]), event  # the CLI adds CAP_
    spec = swarm.service(SERVICE)["Spec"]["TaskTemplate"]["ContainerSpec"]  # type: ignore[index]
    assert not spec.get("CapabilityAdd") and not spec.get("User"), spec
    assert {m["Type"] for m in spec["Mounts"]} == {"bind"}, spec["Mounts"]
    assert running_images(swarm) == [images["healthy-a"]]
    repairs = len([e for e in host.audit() if e["event"] == "drift_repaired"])
    assert host.sync() == 0 and len([e for e in host.audit() if e["event"] == "drift_repaired"]) == repairs


@pytest.mark.runs_two_by_hand
def test_a_service_scaled_by_hand_is_repaired_to_one_runtime(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    swarm.engine.cli("service", "scale", "--detach", f"{SERVICE}=2")
    deadline = time.monotonic() + 60
    while len(running_images(swarm)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(running_images(swarm)) == 2  # two runtimes on one database: what the repair must end
    assert host.sync() == 0
    event = [e for e in host.audit() if e["event"] == "drift_repaired"][-1]
    assert "replicas 2" in event["drift"], event
    assert swarm.service(SERVICE)["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}  # type: ignore[index]
    assert running_images(swarm) == [images["healthy-a"]]
    repairs = len([e for e in host.audit() if e["event"] == "drift_repaired"])
    assert host.sync() == 0 and len([e for e in host.audit() if e["event"] == "drift_repaired"]) == repairs


def test_an_unlabelled_swarm_is_refused_with_the_command_that_fixes_it(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    swarm.unlabel()
    assert host.sync() == 3
    reason = host.status().last_attempt.reason  # type: ignore[union-attr]
    assert "docker node update --label-add dreichor.env=prod" in reason
    assert swarm.service(SERVICE) is None
    swarm.label("prod")  # the fix the sentence names: the same head deploys at the next pass, no --force
    assert host.sync() == 0 and running_images(swarm) == [images["healthy-a"]]


def test_an_engine_that_is_no_swarm_manager_is_refused(
    host: ControllerHost, swarm: PrivateSwarm, docker_engine: PrivateDocker
) -> None:
    config = host.configs["prod"]
    config.write_text(config.read_text().replace(swarm.url, docker_engine.url))
    assert host.sync() == 3
    assert "not a swarm manager" in host.status().last_attempt.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("step", ["snapshot", "update"])
def test_a_crash_during_an_update_is_recovered(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str], step: str
) -> None:
    assert host.sync() == 0
    host.publish("deploy b", prod=images["healthy-b"])
    crashed = subprocess.run(
        [sys.executable, "-m", "controller", "sync", "--config", str(host.configs["prod"])],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), CRASH_HOOK: step},
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL
    assert len(swarm.running_tasks(SERVICE)) <= 1
    assert host.sync() == 0  # recovers (undoes the half-done update), then applies b
    assert image_of(swarm) == images["healthy-b"] and running_images(swarm) == [images["healthy-b"]]
    events = [e["event"] for e in host.audit()]
    assert "recovered" in events or step == "snapshot"
    assert host.status().phase == "InSync"


@pytest.fixture
def container_host(
    tmp_path: Path,
    swarm: PrivateSwarm,
    registry: LocalRegistry,
    manifest_repo: ManifestRepo,
    ssh_key: SshKey,
    images: dict[str, str],
) -> Iterator[ControllerHost]:
    """Controllers in container mode on the swarm manager's engine, the node labelled for prod."""
    swarm.reset()
    swarm.label("prod")
    bed = ControllerHost(tmp_path, swarm.engine, registry, manifest_repo, ssh_key)
    bed.publish("initial", dev=images["healthy-a"], prod=images["healthy-a"])
    yield bed
    swarm.engine.remove_all_containers()


def to_container_mode(host: ControllerHost, swarm: PrivateSwarm) -> None:
    config = host.configs["prod"]
    config.write_text(config.read_text().replace("mode: swarm}", "mode: container}"))


def test_switching_to_swarm_mode_beside_a_running_container_is_refused(
    container_host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert container_host.sync() == 0
    before = swarm.engine.inspect(SERVICE)
    assert before is not None and before["State"]["Running"]  # type: ignore[index]
    swarm_mode(container_host, swarm)
    assert container_host.sync() == 3
    reason = container_host.status().last_attempt.reason  # type: ignore[union-attr]
    assert f"docker stop {SERVICE}" in reason and "suspend" in reason and "resume" in reason
    assert swarm.service(SERVICE) is None
    after = swarm.engine.inspect(SERVICE)
    assert after is not None and after["Id"] == before["Id"] and after["State"]["Running"]  # type: ignore[index]
    swarm.engine.cli("stop", SERVICE)  # the steps the sentence names: the same head deploys, no --force
    swarm.engine.cli("rm", SERVICE)
    assert container_host.sync() == 0 and running_images(swarm) == [images["healthy-a"]]


def test_switching_to_container_mode_beside_a_running_service_is_refused(
    host: ControllerHost, swarm: PrivateSwarm, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    task = swarm.running_tasks(SERVICE)[0]["ID"]
    to_container_mode(host, swarm)
    assert host.sync() == 3
    reason = host.status().last_attempt.reason  # type: ignore[union-attr]
    assert f"docker service rm {SERVICE}" in reason and "suspend" in reason and "resume" in reason
    assert swarm.engine.inspect(SERVICE) is None  # no standalone container beside the task
    assert [t["ID"] for t in swarm.running_tasks(SERVICE)] == [task]
