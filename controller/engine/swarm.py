"""Swarm mode's engine (docs/design.md §13): the runtime as a one-replica Swarm service, through the docker SDK.

Its errors are worded as container mode's (``engine.failures``).  The service
is ``dreichor-runtime-<env>``: the image by digest (the SDK does not resolve
tags), the layout's two bind mounts, ``DATABASE_URL`` from ``.env``, no
published ports, placed on the one node labelled ``dreichor.env=<env>``,
updated and rolled back stop-first with the monitor period and the failure
action set explicitly (the SDK's defaults are not the CLI's).  Only the
service of this environment is ever read or changed: one manager may hold
both environments, and neither controller sees the other's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import docker

from controller.engine import failures
from controller.engine.failures import NOT_A_MANAGER, EngineError
from controller.engine.modes import container_found
from controller.engine.port import NEXT_SUFFIX, PREVIOUS_SUFFIX, ServiceState, TaskState
from controller.errors import ControllerError, Reason, Refused
from controller.model.containers import ContainerState, Privileges
from controller.model.desired import LABEL_ENVIRONMENT, LABEL_MANAGED_BY, DesiredContainer, Mount, container_name

NODE_LABEL = "dreichor.env"
SWARM_TASK_LABEL = "com.docker.swarm.task.id"  # on every container Swarm starts for a task
SECOND = 1_000_000_000  # Swarm durations are nanoseconds
STOP_GRACE = 30 * SECOND
RESTART_DELAY = 5 * SECOND
NO_NODE = (
    "no swarm node carries the label {label}={env}: "
    "run 'docker node update --label-add {label}={env} <node>' on a manager for the node meant for {env}"
)
MANY_NODES = (
    "{count} swarm nodes carry the label {label}={env} ({nodes}), but the runtime's bind mounts live on one: "
    "run 'docker node update --label-rm {label} <node>' for all but one"
)
# The container restart policies in Swarm's words (a service task is restarted by its orchestrator).
# What makes a task one generation of the service: a hand-made update of any of these starts a new one.
_GENERATION = ("Image", "Env", "Labels", "Mounts", "Init")
_RESTART_POLICIES = {"unless-stopped": "any", "always": "any", "on-failure": "on-failure", "no": "none"}


class SwarmEngine:
    """One environment's service on a swarm manager: the ``runtime.ServiceRuntime`` port."""

    def __init__(self, url: str, *, environment: str, monitor: int = 5, timeout: int = 120) -> None:
        self.url = url
        self.environment = environment
        self.canonical = container_name(environment)
        self.monitor = max(1, monitor)
        self._health: dict[str, bool] = {}  # image → declares a HEALTHCHECK (an image never changes)
        with self._translated("connecting to Docker"):
            self._client = docker.DockerClient(base_url=url, timeout=timeout, version="auto")

    def _translated(self, action: str) -> Any:
        """The SDK's errors as ours, naming the engine's address."""
        return failures.translated(action, url=self.url)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    # -- reading ---------------------------------------------------------------------------

    def service(self) -> ServiceState | None:
        """The service, or None when it does not exist (never another environment's)."""
        try:
            with self._translated(f"inspecting service {self.canonical}"):
                data = self._client.api.inspect_service(self.canonical)
        except Refused:
            return None
        if data["Spec"].get("Name") != self.canonical:
            raise Refused(f"service {data['ID'][:12]} is not {self.environment}'s", code=Reason.ISOLATION)
        update = data.get("UpdateStatus") or {}
        return ServiceState(
            id=data["ID"],
            version=int(data["Version"]["Index"]),
            spec=data["Spec"],
            update_state=update.get("State"),
            update_message=update.get("Message", ""),
        )

    def tasks(self, service: ServiceState | None = None) -> list[TaskState]:
        """The service's tasks (of ``service`` when just read), newest first, with the node's hostname."""
        service = service or self.service()
        if service is None:
            return []
        with self._translated(f"listing the tasks of {self.canonical}"):
            found = self._client.api.tasks(filters={"service": service.id})
        hostnames = self._hostnames()
        tasks = sorted(found, key=lambda t: t.get("CreatedAt", ""), reverse=True)
        spec = _container_spec(service.spec)
        return [_task(t, hostnames, spec=spec) for t in tasks if t.get("ServiceID") == service.id]

    def _hostnames(self) -> dict[str, str]:
        with self._translated("listing swarm nodes"):
            nodes = self._client.api.nodes()
        return {n["ID"]: (n.get("Description") or {}).get("Hostname", n["ID"][:12]) for n in nodes}

    def current(self) -> ContainerState | None:
        """The service's spec with its live task's state: what the planner compares and the status shows."""
        service = self.service()
        if service is None:
            return None
        tasks = self.tasks(service)
        live = next((t for t in tasks if t.live), None)
        shown = live or next(iter(tasks), None)
        state = _state(service, shown, health=self._task_health(service, shown))
        return replace(state, placed=self._placed_as_labelled(service))

    def _task_health(self, service: ServiceState, task: TaskState | None) -> str | None:
        """Swarm holds a task at ``starting`` until its HEALTHCHECK passes, and ends it when it fails."""
        image = str(_container_spec(service.spec).get("Image", ""))
        if task is None or not self._declares_healthcheck(image):
            return None
        if task.state == "running":
            return "healthy"
        return "unhealthy" if task.ended else "starting"

    def _declares_healthcheck(self, image: str) -> bool:
        if image not in self._health:
            try:
                self._health[image] = self.image_has_healthcheck(image)
            except ControllerError:
                return False  # not on this node (yet): the task state still tells running from not
        return self._health[image]

    def image_has_healthcheck(self, image: str) -> bool:
        """Whether the image (pulled on the manager) declares a HEALTHCHECK."""
        with self._translated("inspecting an image"):
            config = self._client.api.inspect_image(image).get("Config") or {}
        test = (config.get("Healthcheck") or {}).get("Test") or []
        return bool(test) and test != ["NONE"]

    def check_placement(self) -> str:
        """Refuse unless this engine manages the swarm and exactly one node is labelled for this env."""
        with self._translated("reading the engine's swarm state"):
            swarm = self._client.api.info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            raise Refused(NOT_A_MANAGER, code=Reason.SWARM_PLACEMENT)
        return self._labelled_node()[1]

    def refuse_other_mode(self) -> None:
        """Before creating the service: refuse when a standalone container of this environment is here.

        By name (the canonical one and its ``-next``/``-previous`` companions)
        or by the environment's label, leaving out Swarm's own task containers.
        Only on the create path: two calls.
        """
        with self._translated("looking for a container-mode runtime"):
            named = self._client.api.containers(all=True, filters={"name": self.canonical})
            labelled = self._client.api.containers(
                all=True, filters={"label": f"{LABEL_ENVIRONMENT}={self.environment}"}
            )
        names = {self.canonical + suffix for suffix in ("", NEXT_SUFFIX, PREVIOUS_SUFFIX)}
        found = {
            c["Id"]: (c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/")
            for c in [*named, *labelled]
            if SWARM_TASK_LABEL not in (c.get("Labels") or {})
        }
        standalone = sorted(
            name for cid, name in found.items() if name in names or any(cid == c["Id"] for c in labelled)
        )
        if standalone:
            raise container_found(standalone)

    def _labelled_node(self) -> tuple[str, str]:
        """The id and hostname of the one node labelled for this environment; refused otherwise."""
        with self._translated("listing swarm nodes"):
            nodes = self._client.api.nodes(filters={"node.label": f"{NODE_LABEL}={self.environment}"})
        found = sorted((str(n["ID"]), str((n.get("Description") or {}).get("Hostname", n["ID"][:12]))) for n in nodes)
        if not found:
            raise Refused(NO_NODE.format(label=NODE_LABEL, env=self.environment), code=Reason.SWARM_PLACEMENT)
        if len(found) > 1:
            names = ", ".join(sorted(name for _, name in found))
            many = MANY_NODES.format(count=len(found), label=NODE_LABEL, env=self.environment, nodes=names)
            raise Refused(many, code=Reason.SWARM_PLACEMENT)
        return found[0]

    def _placed_as_labelled(self, service: ServiceState) -> bool:
        """Whether the service is pinned to the node that now carries the label (False when none or many do)."""
        try:
            node_id = self._labelled_node()[0]
        except Refused:
            return False
        return _constraints(service.spec) == [_pinned(node_id)]

    def logs_tail(self, task_id: str, *, lines: int = 50) -> str:
        """The last ``lines`` lines of the service's output (its failed task's among them)."""
        try:
            with self._translated(f"reading logs of {self.canonical}"):
                chunks = self._client.api.service_logs(
                    self.canonical, stdout=True, stderr=True, tail=lines, follow=False
                )
                raw = b"".join(c if isinstance(c, bytes) else str(c).encode() for c in chunks)
        except ControllerError:
            return ""
        return raw.decode("utf-8", "replace")

    # -- changing ----------------------------------------------------------------------------

    def pull(self, pinned: str, *, auth: dict[str, str] | None = None) -> str:
        """Pull on the manager: the digest must exist before any node is asked to run it."""
        return failures.pull(self._client.api, pinned, auth=auth, url=self.url)

    def deploy(self, desired: DesiredContainer, *, auth: dict[str, str] | None = None) -> ServiceState:
        """Create the service, or update it to ``desired`` against the version just read."""
        self._login(desired.image, auth)
        spec = self.spec(desired)
        current = self.service()
        if current is not None and current.spec.get("Mode") != spec["Mode"]:
            # Scaled by hand: a new task makes the update a rolling one, which the health gate can follow.
            forced = (current.spec.get("TaskTemplate") or {}).get("ForceUpdate") or 0
            spec["TaskTemplate"]["ForceUpdate"] = int(forced) + 1
        with self._translated(f"deploying {self.canonical}"):
            if current is None:
                self._client.api.create_service(**_arguments(spec))
            else:
                self._client.api.update_service(current.id, current.version, **_arguments(spec))
        after = self.service()
        if after is None:
            raise EngineError(f"service {self.canonical} vanished while it was deployed")
        return after

    def restore(self, spec: dict[str, Any] | None, *, auth: dict[str, str] | None = None) -> None:
        """Put a snapshot's spec back; None removes the service (there was none before)."""
        current = self.service()
        if spec is None:
            if current is not None:
                with self._translated(f"removing {self.canonical}"):
                    self._client.api.remove_service(current.id)
            return
        if spec.get("Name") != self.canonical:
            raise Refused(f"a snapshot spec for {spec.get('Name')} is not {self.environment}'s", code=Reason.ISOLATION)
        self._login(str(_container_spec(spec).get("Image", "")), auth)
        with self._translated(f"restoring {self.canonical}"):
            if current is None:
                self._client.api.create_service(**_arguments(spec))
            else:
                self._client.api.update_service(current.id, current.version, **_arguments(spec))

    def _login(self, image: str, auth: dict[str, str] | None) -> None:
        """Registry credentials travel with the service (X-Registry-Auth), so every node can pull."""
        if not auth:
            return
        registry = image.split("/", 1)[0]
        with self._translated(f"logging in to {registry}"):
            self._client.api.login(auth["username"], auth["password"], registry=registry, reauth=True)

    def spec(self, desired: DesiredContainer) -> dict[str, Any]:
        """The service spec the contract derives: what ``deploy`` sends and a snapshot records."""
        stop_first = {
            "Parallelism": 1,
            "Delay": 0,
            "Monitor": self.monitor * SECOND,
            "MaxFailureRatio": 0,
            "Order": "stop-first",
        }
        labels = {k: v for k, v in desired.labels.items() if k in (LABEL_ENVIRONMENT, LABEL_MANAGED_BY)}
        return {
            "Name": self.canonical,
            "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": desired.image,
                    "Env": [f"{k}={v}" for k, v in desired.env.items()],
                    "Labels": desired.labels,
                    "Mounts": [
                        {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": False}
                        for m in desired.mounts
                    ],
                    "Init": desired.init,
                    "StopGracePeriod": STOP_GRACE,
                },
                "RestartPolicy": {
                    "Condition": _RESTART_POLICIES.get(desired.restart_policy, "any"),
                    "Delay": RESTART_DELAY,
                    "MaxAttempts": 0,
                },
                "Placement": {"Constraints": [_pinned(self._labelled_node()[0])]},
                "ForceUpdate": 0,
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "UpdateConfig": {**stop_first, "FailureAction": "rollback"},
            "RollbackConfig": {**stop_first, "FailureAction": "pause"},
            "EndpointSpec": {"Mode": "vip", "Ports": []},
        }


def _arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """A service spec as the SDK's create/update keyword arguments."""
    return {
        "task_template": spec["TaskTemplate"],
        "name": spec["Name"],
        "labels": spec.get("Labels") or {},
        "mode": spec.get("Mode"),
        "update_config": spec.get("UpdateConfig"),
        "rollback_config": spec.get("RollbackConfig"),
        "endpoint_spec": spec.get("EndpointSpec"),
    }


def _pinned(node_id: str) -> str:
    """The placement constraint: the labelled node by id, so a label moved by hand never moves the task.

    A constraint on the label itself would let Swarm reschedule on its own when
    the label moves: its constraint enforcer rejects the running task and starts
    the new one while the old container is still stopping (two running at once).
    Pinned by id, the move is ours: a stop-first update at the next pass.
    """
    return f"node.id == {node_id}"


def _constraints(spec: dict[str, Any]) -> list[str]:
    return list(((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("Constraints") or [])


def _container_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The ContainerSpec of a service spec, or of a task's spec (which is a TaskTemplate)."""
    template = spec.get("TaskTemplate") or spec
    return dict(template.get("ContainerSpec") or {})


def _task(data: dict[str, Any], hostnames: dict[str, str], *, spec: dict[str, Any]) -> TaskState:
    status = data.get("Status") or {}
    container = (status.get("ContainerStatus") or {}).get("ContainerID", "")
    task_spec = _container_spec(data.get("Spec") or {})
    return TaskState(
        id=data["ID"],
        node=hostnames.get(data.get("NodeID", ""), data.get("NodeID", "")[:12]),
        state=status.get("State", ""),
        desired_state=data.get("DesiredState", ""),
        image=str(task_spec.get("Image", "")),
        container_id=container,
        current=all(task_spec.get(k) == spec.get(k) for k in _GENERATION),
        message=" ".join(str(status.get("Err") or status.get("Message") or "").split()),
    )


def _privileges(container: dict[str, Any]) -> Privileges:
    """What a service's container spec grants beyond the controller's own spec (which sets none of it)."""
    granted = container.get("Privileges") or {}
    seccomp = str((granted.get("Seccomp") or {}).get("Mode") or "")
    selinux = granted.get("SELinuxContext") or {}
    options = [
        f"seccomp={seccomp}" if seccomp in ("unconfined", "custom") else "",  # a custom profile may allow more
        "apparmor=disabled" if (granted.get("AppArmor") or {}).get("Mode") == "disabled" else "",
        "label=disable" if selinux.get("Disable") else "",
        *(f"label={key.lower()}:{selinux[key]}" for key in ("User", "Role", "Type", "Level") if selinux.get(key)),
    ]
    return Privileges(
        cap_add=tuple(str(c) for c in container.get("CapabilityAdd") or []),
        security_opt=tuple(option for option in options if option),
        user=str(container.get("User") or ""),
    )


def _state(service: ServiceState, task: TaskState | None, *, health: str | None) -> ContainerState:
    """The service (its spec) and its task (its life) in the planner's terms."""
    container = _container_spec(service.spec)
    template = service.spec.get("TaskTemplate") or {}
    policy = (template.get("RestartPolicy") or {}).get("Condition", "any")
    ports = (service.spec.get("EndpointSpec") or {}).get("Ports") or []
    mounts = (Mount(str(m.get("Source", "")), str(m.get("Target", ""))) for m in container.get("Mounts") or [])
    return ContainerState(
        id=task.container_id if task else "",
        name=service.spec["Name"],
        image=str(container.get("Image", "")),
        image_id="",
        env=dict(e.split("=", 1) for e in container.get("Env") or [] if "=" in e),
        mounts=tuple(sorted(mounts, key=lambda m: m.target)),
        labels=dict(container.get("Labels") or {}),
        restart_policy="unless-stopped" if policy == "any" else policy,
        init=bool(container.get("Init")),
        network_mode="bridge" if not template.get("Networks") else "swarm",
        status=task.state if task else "pending",
        health=health,
        restart_count=0,
        started_at="",
        privileged=False,
        published_ports=bool(ports),
        privileges=_privileges(container),
        node=task.node if task else None,
        task=task.id if task else None,
        raw={"Service": {"ID": service.id, "Version": service.version, "Spec": service.spec}},
        replicas=_replicas(service.spec),
    )


def _replicas(spec: dict[str, Any]) -> int | None:
    """How many tasks the service asks for (None: global, one per node); the controller asks for one."""
    mode = spec.get("Mode") or {}
    if "Replicated" not in mode:
        return None
    replicas = (mode.get("Replicated") or {}).get("Replicas", 1)
    return replicas if isinstance(replicas, int) else None
