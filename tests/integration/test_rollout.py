"""Applying digests against the real private dockerd and registry: swap, health gate, rollback, recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.engine.docker import RELEASE_WAIT, Engine
from controller.errors import Refused, Retryable
from controller.model.config import HealthConfig, HostPaths
from controller.model.desired import DesiredContainer, desired_from_bytes, keep_reference
from controller.model.plan import Plan, plan
from controller.records.snapshots import list_snapshots
from controller.rollout.base import CRASH_HOOK, HealthGateFailed
from controller.rollout.container import ContainerRollout
from testbed import LocalRegistry, PrivateDocker, manifest_text

REPO_ROOT = Path(__file__).resolve().parents[2]


class Env:
    """One environment's paths, engine view and rollout, on the shared private engine."""

    def __init__(self, root: Path, name: str, engine: PrivateDocker, registry: LocalRegistry) -> None:
        self.paths = HostPaths(root, name)
        for folder in (self.paths.audit_events, self.paths.runtime_snapshots, self.paths.snapshots):
            folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.registry = registry
        self.engine = Engine(engine.url, environment=name)
        self.rollout = ContainerRollout(self.engine, paths=self.paths, health=HealthConfig(timeout=20, stable=2))

    def desired(self, image: str, *, revision: str = "r1", **env: str) -> DesiredContainer:
        return desired_from_bytes(
            manifest_text(self.name, image, **env).encode(),
            environment=self.name,
            repository=self.registry.repository,
            paths=self.paths,
            dotenv={"DATABASE_URL": f"postgresql://127.0.0.1/dreichor_{self.name}"},
            revision=revision,
        )

    def deploy(self, desired: DesiredContainer, *, deployed: bool = True) -> Plan:
        actual = self.engine.runtime_containers().get(self.engine.canonical)
        decided = plan(desired, actual, deployed=deployed)
        self.rollout.apply(decided, desired)
        return decided

    def current(self):  # type: ignore[no-untyped-def]
        return self.engine.inspect(self.engine.canonical)


@pytest.fixture
def bed(docker_engine: PrivateDocker, registry: LocalRegistry, tmp_path: Path) -> Iterator[dict[str, Env]]:
    docker_engine.remove_all_containers()
    since = f"{time.time():.6f}"
    envs = {name: Env(tmp_path, name, docker_engine, registry) for name in ("dev", "prod")}
    yield envs
    for name, env in envs.items():
        assert docker_engine.max_running_at_once(since=since, prefix=f"dreichor-runtime-{name}") <= 1
        env.engine.close()


def test_the_first_deploy_creates_the_container_the_contract_derives(
    bed: dict[str, Env], images: dict[str, str]
) -> None:
    dev = bed["dev"]
    desired = dev.desired(images["healthy-a"], LOG_LEVEL="debug")
    assert dev.deploy(desired, deployed=False).action == "create"
    state = dev.current()
    assert state.running and state.health == "healthy"
    assert state.image == images["healthy-a"]
    assert sorted((m.source, m.target) for m in state.mounts) == sorted((m.source, m.target) for m in desired.mounts)
    assert state.env == {"DATABASE_URL": "postgresql://127.0.0.1/dreichor_dev", "LOG_LEVEL": "debug"}
    assert (state.restart_policy, state.init, state.network_mode) == ("unless-stopped", True, "bridge")
    assert state.labels["io.dreichor.managed-by"] == "dreichor-controller"
    assert not state.published_ports and not state.privileged
    again = plan(desired, dev.current(), deployed=True)
    assert again.action == "nothing"
    assert dev.rollout.apply(again, desired).result == "unchanged"
    assert dev.current().started_at == state.started_at


def test_a_new_digest_replaces_the_container_after_a_snapshot(bed: dict[str, Env], images: dict[str, str]) -> None:
    dev = bed["dev"]
    dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    old = dev.current()
    assert dev.deploy(dev.desired(images["healthy-b"], revision="r2")).action == "replace"
    new = dev.current()
    assert new.id != old.id and new.image == images["healthy-b"] and new.running
    snapshot = list_snapshots(dev.paths.snapshots)[0]
    assert snapshot.container is not None and snapshot.container["Id"] == old.id
    assert (snapshot.revision, snapshot.image, snapshot.image_id) == ("r1", images["healthy-a"], old.image_id)
    assert list(dev.engine.runtime_containers()) == ["dreichor-runtime-dev"]
    assert not dev.paths.journal.exists()


@pytest.mark.parametrize(("variant", "reason"), [("exits", "exited"), ("unhealthy", "unhealthy")])
def test_a_bad_container_is_rolled_back_to_the_previous_one(
    bed: dict[str, Env], images: dict[str, str], variant: str, reason: str
) -> None:
    dev = bed["dev"]
    dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    old = dev.current()
    with pytest.raises(HealthGateFailed) as failed:
        dev.deploy(dev.desired(images[variant], revision="bad"))
    assert reason in failed.value.reason or "restarting" in failed.value.reason
    if variant == "exits":
        assert "giving up" in failed.value.logs
    back = dev.current()
    assert back.id == old.id and back.running
    assert list(dev.engine.runtime_containers()) == ["dreichor-runtime-dev"]
    assert not dev.paths.journal.exists()


def test_a_digest_the_registry_lacks_leaves_the_container_untouched(
    bed: dict[str, Env], images: dict[str, str]
) -> None:
    dev = bed["dev"]
    dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    old = dev.current()
    missing = images["healthy-a"].split("@")[0] + "@sha256:" + "0" * 64
    with pytest.raises(Refused, match="does not exist in the registry"):
        dev.deploy(dev.desired(missing))
    assert dev.current().id == old.id and dev.current().started_at == old.started_at


def test_a_registry_that_is_down_leaves_the_container_untouched(
    bed: dict[str, Env], images: dict[str, str], registry: LocalRegistry, docker_engine: PrivateDocker
) -> None:
    dev = bed["dev"]
    dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    old = dev.current()
    docker_engine.cli("image", "rm", "--force", images["healthy-b"])
    kept = keep_reference(images["healthy-b"], "dev")
    if docker_engine.cli("images", "--quiet", kept).strip():
        docker_engine.cli("image", "rm", kept)  # nothing kept for it on this host either
    registry.stop()
    try:
        with pytest.raises(Retryable):
            dev.deploy(dev.desired(images["healthy-b"]))
    finally:
        registry.start()
    assert dev.current().id == old.id and dev.current().running


def test_drift_is_repaired(bed: dict[str, Env], images: dict[str, str], docker_engine: PrivateDocker) -> None:
    dev = bed["dev"]
    desired = dev.desired(images["plain"])
    dev.deploy(desired, deployed=False)
    docker_engine.cli("stop", "dreichor-runtime-dev")
    assert dev.deploy(desired) == Plan("repair", "the runtime container is exited", ("stopped",))
    assert dev.current().running
    docker_engine.cli("rm", "-f", "dreichor-runtime-dev")
    assert dev.deploy(desired).drift == ("removed",)
    assert dev.current().running
    docker_engine.cli("rm", "-f", "dreichor-runtime-dev")
    docker_engine.cli("run", "-d", "--init", "--name", "dreichor-runtime-dev", images["healthy-b"])
    assert dev.deploy(desired).drift == ("unmanaged",)
    assert dev.current().image == images["plain"]


def test_an_env_changed_by_hand_is_drift(bed: dict[str, Env], images: dict[str, str]) -> None:
    dev = bed["dev"]
    desired = dev.desired(images["healthy-a"], LOG_LEVEL="info")
    dev.deploy(desired, deployed=False)
    tampered = dev.desired(images["healthy-a"], LOG_LEVEL="trace")
    tampered.labels["io.dreichor.manifest-sha256"] = desired.labels["io.dreichor.manifest-sha256"]
    dev.deploy(tampered)  # what a person recreating the container by hand would leave behind
    decided = plan(desired, dev.current(), deployed=True)
    assert (decided.action, decided.drift) == ("repair", ("env",))
    dev.rollout.apply(decided, desired)
    assert dev.current().env["LOG_LEVEL"] == "info"


def test_an_unmanaged_container_is_not_adopted_on_a_first_deploy(
    bed: dict[str, Env], images: dict[str, str], docker_engine: PrivateDocker
) -> None:
    dev = bed["dev"]
    docker_engine.cli("create", "--name", "dreichor-runtime-dev", images["healthy-b"])
    with pytest.raises(Refused, match="pass --adopt"):
        dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    assert plan(dev.desired(images["healthy-a"]), dev.current(), deployed=False, adopt=True).action == "repair"


def test_a_dev_apply_never_touches_prod(bed: dict[str, Env], images: dict[str, str]) -> None:
    dev, prod = bed["dev"], bed["prod"]
    prod.deploy(prod.desired(images["healthy-a"]), deployed=False)
    before = prod.current()
    dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    dev.deploy(dev.desired(images["healthy-b"], revision="r2"))
    assert prod.current().id == before.id and prod.current().started_at == before.started_at
    assert set(dev.engine.runtime_containers()) == {"dreichor-runtime-dev"}
    with pytest.raises(Refused, match="not one of dev's"):
        dev.engine.inspect("dreichor-runtime-prod")
    with pytest.raises(Refused, match="not one of dev's"):
        dev.engine.rename(before.id, "dreichor-runtime-prod")


def test_a_container_that_ignores_sigterm_is_killed_after_the_stop_timeout(
    bed: dict[str, Env], images: dict[str, str]
) -> None:
    dev = bed["dev"]
    dev.deploy(dev.desired(images["stubborn"]), deployed=False)
    started = time.monotonic()
    dev.engine.stop(dev.engine.canonical, timeout=2)
    assert 2 <= time.monotonic() - started < 15
    assert dev.current().status == "exited"


CRASH_SCRIPT = """
import sys
from pathlib import Path
from controller.model.config import HealthConfig, HostPaths
from controller.model.desired import desired_from_bytes
from controller.engine.docker import Engine
from controller.model.plan import plan
from controller.rollout.container import ContainerRollout
url, env, root, repository, manifest = sys.argv[1:6]
paths = HostPaths(Path(root), env)
engine = Engine(url, environment=env)
desired = desired_from_bytes(manifest.encode(), environment=env, repository=repository, paths=paths,
                             dotenv={"DATABASE_URL": "postgresql://h/dreichor_" + env}, revision="crash")
decided = plan(desired, engine.runtime_containers().get(engine.canonical), deployed=True)
ContainerRollout(engine, paths=paths, health=HealthConfig(timeout=20, stable=2)).apply(decided, desired)
"""


@pytest.mark.parametrize("step", ["pull", "snapshot", "create", "stop", "rename", "start", "health"])
def test_a_crash_at_any_step_converges_with_the_environment_running(
    bed: dict[str, Env], images: dict[str, str], docker_engine: PrivateDocker, step: str
) -> None:
    dev = bed["dev"]
    dev.deploy(dev.desired(images["healthy-a"]), deployed=False)
    old = dev.current()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH_SCRIPT,
            docker_engine.url,
            "dev",
            str(dev.paths.root),
            dev.registry.repository,
            manifest_text("dev", images["healthy-b"]),
        ],
        env={**os.environ, CRASH_HOOK: step, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    dev.rollout.recover()
    running = docker_engine.running_names("dreichor-runtime-dev")
    assert running == ["dreichor-runtime-dev"]
    now = dev.current()
    assert now.running
    passed = ("start", "health")  # killed in the gate, recovered before its deadline: gated on, and it passes
    assert now.id == old.id if step not in passed else now.image == images["healthy-b"]
    assert not dev.paths.journal.exists()
    assert list(dev.engine.runtime_containers()) == ["dreichor-runtime-dev"]


@pytest.mark.parametrize("network", ["bridge", "none", "another container's"])
def test_a_stop_returns_once_the_old_containers_network_is_released(
    bed: dict[str, Env], images: dict[str, str], docker_engine: PrivateDocker, network: str
) -> None:
    """The next container starts after the old one's network is gone, never into its teardown; and a
    container whose network the engine never releases (it shares another's) is not waited for long."""
    dev = bed["dev"]
    name = dev.engine.canonical
    mode = network
    if network == "another container's":
        docker_engine.cli("run", "-d", "--init", "--name", "network-holder", images["healthy-b"])
        mode = "container:network-holder"
    docker_engine.cli("run", "-d", "--init", "--network", mode, "--name", name, images["healthy-a"])
    container_id = docker_engine.cli("inspect", "--format", "{{.Id}}", name).strip()
    since = f"{time.time():.6f}"
    started = time.monotonic()
    dev.engine.stop(name)
    returned, took = time.time(), time.monotonic() - started
    until = f"{time.time():.6f}"
    out = docker_engine.cli(
        "events", "--since", since, "--until", until, "--filter", "type=network", "--format", "{{json .}}"
    )
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    released = [
        e for e in events if e["Action"] == "disconnect" and e["Actor"]["Attributes"]["container"] == container_id
    ]
    if network == "another container's":
        assert not released and took < RELEASE_WAIT + 3
    else:
        assert released and released[0]["timeNano"] / 1e9 <= returned and took < 5
    assert dev.current().status == "exited"
    docker_engine.cli("rm", "-f", "network-holder")
