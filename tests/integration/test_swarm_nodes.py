"""Swarm mode on two nodes: the runtime lands on the labelled worker, and moves stop-first with the label.

The worker is a second private engine in network and UTS namespaces of its
own, joined over a veth pair; the registry listens on the veth's host address.
What is checked is what an operator would look at: ``docker service ps``, the
worker's own ``docker inspect``, a file the runtime writes into its mount, the
status file, and both engines' ``docker events`` (never two tasks running).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import ControllerHost, ManifestRepo, PrivateDocker, SshKey, build_images, wait_for
from testbed.swarm import TwoNodeSwarm, swarm_mode

SERVICE = "dreichor-runtime-prod"


@pytest.fixture(scope="module")
def nodes(docker_engine: PrivateDocker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodeSwarm]:
    """A manager and a worker (after the session engine proved dockerd works); torn down whatever happens."""
    bed = TwoNodeSwarm(tmp_path_factory.mktemp("nodes")).start()
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="module")
def image(nodes: TwoNodeSwarm, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A healthy runtime image in the registry both nodes reach."""
    built = build_images(
        nodes.manager.engine, nodes.registry, tmp_path_factory.mktemp("images"), variants=("healthy-a",)
    )
    return built["healthy-a"]


def runtime_containers(engine: PrivateDocker) -> list[str]:
    return engine.running_names(prefix=f"{SERVICE}.")


def running_nodes(nodes: TwoNodeSwarm) -> list[str]:
    return [t["NodeID"] for t in nodes.manager.running_tasks(SERVICE)]


def test_the_runtime_runs_on_the_labelled_worker_and_moves_stop_first_with_the_label(
    tmp_path: Path, nodes: TwoNodeSwarm, image: str, manifest_repo: ManifestRepo, ssh_key: SshKey
) -> None:
    nodes.manager.label("prod", node=nodes.worker_id)
    since = f"{time.time():.6f}"
    host = swarm_mode(
        ControllerHost(tmp_path, nodes.manager.engine, nodes.registry, manifest_repo, ssh_key), nodes.manager
    )
    host.publish("initial", dev=image, prod=image)

    assert host.sync() == 0
    assert running_nodes(nodes) == [nodes.worker_id]
    assert runtime_containers(nodes.manager.engine) == []
    (name,) = runtime_containers(nodes.worker)
    volumes = host.root / "prod" / "volumes"
    inspect = nodes.worker.inspect(name)
    assert inspect is not None
    assert sorted((m["Source"], m["Destination"]) for m in inspect["Mounts"]) == [  # type: ignore[attr-defined]
        (str(volumes / "audit-events"), "/var/lib/dreichor/audit-events"),
        (str(volumes / "snapshots"), "/var/lib/dreichor/snapshots"),
    ]
    nodes.worker.cli("exec", name, "/bin/busybox", "touch", "/var/lib/dreichor/snapshots/written-on-the-worker")
    assert (volumes / "snapshots" / "written-on-the-worker").exists()
    status = host.status()
    assert (status.phase, status.container.node) == ("InSync", TwoNodeSwarm.WORKER_HOSTNAME)

    nodes.manager.unlabel(node=nodes.worker_id)
    nodes.manager.label("prod")
    time.sleep(2)  # Swarm alone does not move it: the move is the controller's, stop-first
    assert running_nodes(nodes) == [nodes.worker_id]
    assert host.sync() == 0
    wait_for(lambda: running_nodes(nodes) == [nodes.manager.node_id], timeout=30, what="the task on the manager")
    assert runtime_containers(nodes.worker) == []
    assert len(runtime_containers(nodes.manager.engine)) == 1
    status = host.status()
    assert (status.phase, status.container.node) == ("InSync", nodes.manager.hostname)
    moved = [e for e in host.audit() if e["event"] == "drift_repaired"]
    assert moved and moved[-1]["node"] == nodes.manager.hostname
    assert nodes.max_running_at_once(since=since, env="prod") == 1
