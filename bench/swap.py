"""The unavailability window of a swap, from ``docker events``: controller vs ``docker stop; rm; run``.

Window: from the old container's ``die`` to the new one's ``start``.  Both
paths must pull the new image (it is removed locally before each run); the
controller pulls and creates before it stops, the CLI sequence after.  The
floor, measured in the same run, is the engine's own ``docker start`` of an
already created container (from the start call to its ``start`` event): no
swap that stops one container before starting the next can be shorter.
Run: ``.venv/bin/python -m bench.swap``.  Goal: controller <= 1.1x the floor
(median of 9, printed with min and max, and its ratio to the CLI sequence in the note).

The Swarm row (``measure_swarm``): our stop-first service update vs
``docker service update --image`` by CLI on the same single-node swarm, of a
service whose task is ours (mounts, environment, labels, node, stop and restart
settings), the window from the old task container's ``die`` to the new one's ``start``.
Goal: ours <= 1.0x (Swarm switches the task in both; we pull before it stops anything).
"""

from __future__ import annotations

import json
import sys
import time

from bench.common import Result, median_with_spread, report
from bench.sandbox import Sandbox, sandbox
from controller.engine.docker import Engine
from controller.engine.swarm import SwarmEngine
from controller.model.config import HealthConfig, HostPaths
from controller.model.desired import DesiredContainer, desired_from_bytes
from controller.model.plan import plan
from controller.rollout.container import ContainerRollout
from controller.rollout.swarm import SwarmRollout
from testbed import manifest_text
from testbed.swarm import PrivateSwarm

RUNS = 9


def _window(box: Sandbox, since: str, old_id: str, new_id: str) -> float:
    events = box.engine.events(since=since)
    died = min(e["timeNano"] for e in events if e["id"] == old_id and e["Action"] == "die")
    started = min(e["timeNano"] for e in events if e["id"] == new_id and e["Action"] == "start")
    return (started - died) / 1e9


def _teardown(box: Sandbox, since: str, old_id: str) -> float:
    """The engine's release of the old container's network: its ``die`` to the bridge's ``disconnect`` of it.

    The swap waits for it (``Engine.stop``): a start in that moment sets up its network while the old one's
    is torn down, and took up to twice as long.  This share of the window is the engine's.
    """
    died = min(e["timeNano"] for e in box.engine.events(since=since) if e["id"] == old_id and e["Action"] == "die")
    until = f"{time.time():.6f}"
    network = ("--filter", "type=network", "--format", "{{json .}}")
    out = box.engine.cli("events", "--since", since, "--until", until, *network)
    released = [
        e["timeNano"]
        for e in map(json.loads, out.splitlines())
        if e["Action"] == "disconnect" and e["Actor"]["Attributes"].get("container") == old_id
    ]
    return (min(released) - died) / 1e9 if released else 0.0


def _desired(box: Sandbox, paths: HostPaths, image: str, revision: str) -> DesiredContainer:
    return desired_from_bytes(
        manifest_text("dev", image).encode(),
        environment="dev",
        repository=box.registry.repository,
        paths=paths,
        dotenv={"DATABASE_URL": "postgresql://h/dreichor_dev"},
        revision=revision,
    )


def _controller_swap(
    box: Sandbox, rollout: ContainerRollout, paths: HostPaths, image: str, revision: str
) -> tuple[float, float]:
    """The window of one swap, and its share that is the engine's network teardown."""
    desired = _desired(box, paths, image, revision)
    old = rollout.engine.inspect(rollout.canonical)
    assert old is not None
    since = f"{time.time():.6f}"
    outcome = rollout.apply(plan(desired, old, deployed=True), desired)
    assert outcome.container_id is not None
    return _window(box, since, old.id, outcome.container_id), _teardown(box, since, old.id)


def _cli_swap(box: Sandbox, image: str) -> float:
    old_id = box.engine.cli("inspect", "--format", "{{.Id}}", "bench-cli").strip()
    since = f"{time.time():.6f}"
    box.engine.cli("stop", "bench-cli")
    box.engine.cli("rm", "bench-cli")
    new_id = box.engine.cli("run", "-d", "--init", "--name", "bench-cli", image).strip()
    return _window(box, since, old_id, new_id)


def _drop(box: Sandbox, image: str) -> None:
    box.engine.cli("image", "rm", "--force", image)


def _floor(box: Sandbox, engine: Engine, desired: DesiredContainer) -> float:
    """The engine's own start of an already created container: from the start call to its ``start`` event."""
    container = engine.create(desired, name="bench-floor")
    since = f"{time.time():.6f}"
    called = time.time()
    engine.start(container)
    events = box.engine.events(since=since)
    started = min(e["timeNano"] for e in events if e["id"] == container and e["Action"] == "start")
    box.engine.cli("rm", "--force", container)
    return started / 1e9 - called


def measure() -> Result:
    """Median windows of both paths over ``RUNS`` alternating swaps, and the engine's start as the floor."""
    with sandbox() as box:
        paths = HostPaths(box.base / "root", "dev")
        for folder in (paths.audit_events, paths.runtime_snapshots, paths.snapshots):
            folder.mkdir(parents=True, exist_ok=True)
        engine = Engine(box.engine.url, environment="dev")
        rollout = ContainerRollout(engine, paths=paths, health=HealthConfig(timeout=30, stable=1))
        a, b = box.images["healthy-a"], box.images["healthy-b"]
        first = _desired(box, paths, a, "r0")
        rollout.apply(plan(first, None, deployed=False), first)
        box.engine.cli("run", "-d", "--init", "--name", "bench-cli", a)
        ours, teardowns, theirs, floors = [], [], [], []
        for run in range(RUNS):
            image = b if run % 2 == 0 else a
            _drop(box, image)
            window, teardown = _controller_swap(box, rollout, paths, image, f"r{run + 1}")
            ours.append(window)
            teardowns.append(teardown)
            _drop(box, image)
            theirs.append(_cli_swap(box, image))
            floors.append(_floor(box, engine, _desired(box, paths, image, "floor")))
        engine.close()
    figure, spread = median_with_spread(ours, scale=1e3)
    baseline, baseline_spread = median_with_spread(theirs, scale=1e3)
    floor, floor_spread = median_with_spread(floors, scale=1e3)
    teardown, _ = median_with_spread(teardowns, scale=1e3)
    return Result(
        f"swap window (controller vs the engine's docker start of a created container), median of {RUNS}",
        figure,
        floor,
        "ms",
        1.1,
        spread=spread,
        baseline_spread=floor_spread,
        note=(
            f"docker stop;rm;run {baseline:.4g} ms ({baseline_spread[0]:.4g}-{baseline_spread[1]:.4g}),"
            f" window/CLI {figure / baseline:.2f}; of the window, the engine's network teardown (old die to its"
            f" disconnect, which the swap waits for) {teardown:.4g} ms"
        ),
    )


def _task_window(box: Sandbox, since: str, prefix: str) -> float:
    """From events: the old task container's ``die`` to the next task container's ``start``."""
    events = [e for e in box.engine.events(since=since) if e["Actor"]["Attributes"].get("name", "").startswith(prefix)]
    died = min(e["timeNano"] for e in events if e["Action"] == "die")
    started = min(e["timeNano"] for e in events if e["Action"] == "start" and e["timeNano"] >= died)
    return (started - died) / 1e9


def _same_task(engine: SwarmEngine, desired: DesiredContainer) -> list[str]:
    """``docker service create`` options for the task our service runs: mounts, environment, labels, node."""
    task = engine.spec(desired)["TaskTemplate"]
    options = ["--init", "--stop-grace-period", "30s", "--restart-condition", "any", "--restart-delay", "5s"]
    options += ["--update-failure-action", "rollback", "--constraint", task["Placement"]["Constraints"][0]]
    for mount in task["ContainerSpec"]["Mounts"]:
        options += ["--mount", f"type=bind,source={mount['Source']},target={mount['Target']}"]
    for entry in task["ContainerSpec"]["Env"]:
        options += ["--env", entry]
    for name, value in task["ContainerSpec"]["Labels"].items():
        options += ["--container-label", f"{name}={value}"]
    return options


def measure_swarm(runs: int = 9) -> Result:
    """Median windows of our Swarm update and the CLI's ``docker service update`` over ``runs`` each."""
    with sandbox() as plain:
        swarm = PrivateSwarm(plain.base / "swarm").start()
        try:
            swarm.label("dev")
            box = Sandbox(plain.base, swarm.engine, plain.registry, plain.images)
            paths = HostPaths(box.base / "root", "dev")
            for folder in (paths.audit_events, paths.runtime_snapshots, paths.snapshots):
                folder.mkdir(parents=True, exist_ok=True)
            engine = SwarmEngine(swarm.url, environment="dev", monitor=1)
            rollout = SwarmRollout(engine, paths=paths, health=HealthConfig(timeout=60, stable=1))
            a, b = box.images["healthy-a"], box.images["healthy-b"]
            first = _desired(box, paths, a, "r0")
            rollout.apply(plan(first, None, deployed=False), first)
            cli = ["--update-order", "stop-first", "--update-monitor", "1s", "--detach=false", "--quiet"]
            swarm.engine.cli("service", "create", "--name", "bench-cli", *_same_task(engine, first), *cli, a)
            ours: list[float] = []
            theirs: list[float] = []
            for run in range(runs):
                image = b if run % 2 == 0 else a
                _drop(box, image)
                since = f"{time.time():.6f}"
                desired = _desired(box, paths, image, f"r{run + 1}")
                rollout.apply(plan(desired, engine.current(), deployed=True), desired)
                ours.append(_task_window(box, since, "dreichor-runtime-dev."))
                _drop(box, image)
                since = f"{time.time():.6f}"
                swarm.engine.cli("service", "update", *cli, "--image", image, "bench-cli")
                theirs.append(_task_window(box, since, "bench-cli."))
            engine.close()
        finally:
            swarm.stop()
    figure, spread = median_with_spread(ours, scale=1e3)
    baseline, baseline_spread = median_with_spread(theirs, scale=1e3)
    return Result(
        f"Swarm update window (controller vs docker service update --image), median of {runs}",
        figure,
        baseline,
        "ms",
        1.0,
        spread=spread,
        baseline_spread=baseline_spread,
    )


def main() -> int:
    """Measure and print."""
    report(measure())
    return report(measure_swarm())


if __name__ == "__main__":
    sys.exit(main())
