"""Container mode's engine: the runtime as one container, through the docker SDK.

Every SDK error is translated at this boundary, in the words both modes share
(``engine.failures``): an engine or registry that cannot be reached is
``Retryable``; a digest the registry does not have, or a name taken by a
container we do not manage, is ``Refused``.  Only containers
named ``dreichor-runtime-<env>`` (and its ``-next``/``-previous`` companions)
are ever listed, so one environment's controller cannot see another's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import docker
import docker.errors
import requests.exceptions

from controller.engine import failures
from controller.engine.inspector import UnixInspector
from controller.engine.modes import service_found
from controller.engine.port import NEXT_SUFFIX, PREVIOUS_SUFFIX
from controller.errors import ControllerError, Reason, Refused
from controller.model.containers import ContainerState, Privileges
from controller.model.desired import DesiredContainer, Mount, container_name, keep_reference

SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"  # what Swarm labels a task's container with
RELEASE_WAIT = 2.0  # seconds after a container's death its network release is waited for, at most


class Engine:
    """One environment's view of the Docker Engine: the ``runtime.Runtime`` port over the docker SDK."""

    def __init__(self, url: str, *, environment: str, timeout: int = 120) -> None:
        self.environment = environment
        self.canonical = container_name(environment)
        self._image_configs: dict[str, tuple[dict[str, str], str]] = {}  # by id: an image's config never changes
        self._names = {self.canonical, self.canonical + NEXT_SUFFIX, self.canonical + PREVIOUS_SUFFIX}
        self.url = url
        with self._translated("connecting to Docker"):
            self._client = docker.DockerClient(base_url=url, timeout=timeout, version="auto")
        self._sdk_calls = 0
        self._client.api.hooks["response"].append(self._count)
        # A unix socket is never proxied: skip requests' scan of the proxy variables on every call.
        self._client.api.trust_env = not url.startswith("unix://")
        self._inspector = (
            UnixInspector(url.removeprefix("unix://"), version=self._client.api.api_version, timeout=timeout)
            if url.startswith("unix://")
            else None
        )

    def _translated(self, action: str) -> Any:
        """The SDK's errors as ours, naming the engine's address."""
        return failures.translated(action, url=self.url)

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._sdk_calls += 1

    @property
    def api_calls(self) -> int:
        """HTTP requests to the engine so far, for the benchmark's "one call per no-change pass"."""
        return self._sdk_calls + (self._inspector.calls if self._inspector is not None else 0)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()
        if self._inspector is not None:
            self._inspector.close()

    def current(self) -> ContainerState | None:
        """The canonical container by name: one inspect once the image's env is cached."""
        return self.inspect(self.canonical)

    def runtime_containers(self) -> dict[str, ContainerState]:
        """This environment's runtime containers by name (canonical, -next, -previous)."""
        with self._translated("listing containers"):
            found = self._client.api.containers(all=True, filters={"name": self.canonical})
        names = {c["Id"]: c["Names"][0].lstrip("/") for c in found if c["Names"]}
        wanted = [cid for cid, name in names.items() if name in self._names]
        states = (self.inspect(cid) for cid in wanted)
        return {s.name: s for s in states if s is not None}

    def refuse_other_mode(self) -> None:
        """Before creating the runtime: refuse when a Swarm service of this name, or its task, runs here.

        A manager shows the service; a worker only the task containers Swarm
        labels with the service's name.  Only on the create path: two calls.
        """
        with self._translated("looking for a Swarm service"):
            tasks = self._client.api.containers(filters={"label": f"{SWARM_SERVICE_LABEL}={self.canonical}"})
        if tasks or self._service_exists():
            raise service_found(self.canonical)

    def _service_exists(self) -> bool:
        with self._translated("looking for a Swarm service"):
            try:
                data = self._client.api.inspect_service(self.canonical)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code == 503:
                    return False  # no swarm, or not a manager: no services to see here
                raise
        return bool((data.get("Spec") or {}).get("Name") == self.canonical)

    def inspect(self, ref: str) -> ContainerState | None:
        """The container ``ref`` (id or name), or None when it does not exist."""
        data = self._inspect_container(ref)
        if data is None:
            return None
        name = data["Name"].lstrip("/")
        if name not in self._names:
            raise Refused(f"container {ref} is not one of {self.environment}'s", code=Reason.ISOLATION)
        image_env, image_user = self._image_config(data["Image"])
        return _state(data, image_env, image_user=image_user)

    def _inspect_container(self, ref: str) -> dict[str, Any] | None:
        """The engine's inspect of ``ref`` (None: no such container); on a unix socket without the SDK."""
        action = "inspecting a container"
        if self._inspector is not None:
            with self._translated(action):
                return self._inspector.container(ref, action=action)
        try:
            with self._translated(action):
                return dict(self._client.api.inspect_container(ref))
        except Refused:
            return None

    def _image_config(self, image_id: str) -> tuple[dict[str, str], str]:
        """The image's own env and USER: what the container has from its image, not from whoever created it."""
        cached = self._image_configs.get(image_id)
        if cached is not None:
            return cached
        try:
            with self._translated("inspecting an image"):
                image = self._client.api.inspect_image(image_id)
        except Refused:
            return {}, ""
        if len(self._image_configs) > 64:
            self._image_configs.clear()
        config = image.get("Config") or {}
        found = self._image_configs[image_id] = (_env_dict(config.get("Env")), str(config.get("User") or ""))
        return found

    def image_has_healthcheck(self, image: str) -> bool:
        """Whether the image declares a HEALTHCHECK."""
        with self._translated("inspecting an image"):
            config = self._client.api.inspect_image(image).get("Config") or {}
        test = (config.get("Healthcheck") or {}).get("Test") or []
        return bool(test) and test != ["NONE"]

    def image_size(self, image: str) -> int | None:
        """The image's size in bytes (``docker image inspect``'s ``Size``); None when it cannot be read."""
        try:
            with self._translated("inspecting an image"):
                size = self._client.api.inspect_image(image).get("Size")
        except ControllerError:
            return None
        return size if isinstance(size, int) else None

    def image_present(self, image: str) -> bool:
        """Whether the engine holds ``image`` locally."""
        try:
            with self._translated("inspecting an image"):
                self._client.api.inspect_image(image)
        except Refused:
            return False
        return True

    def pull(self, pinned: str, *, auth: dict[str, str] | None = None) -> str:
        """Pull ``repo@sha256:…`` and check the engine holds exactly that digest; return the image id."""
        return failures.pull(self._client.api, pinned, auth=auth, url=self.url)

    def keep(self, pinned: str) -> str:
        """Tag ``pinned`` with its keep reference; return that reference."""
        repository, _, tag = keep_reference(pinned, self.environment).rpartition(":")
        with self._translated(f"tagging {pinned}"):
            self._client.api.tag(pinned, repository, tag=tag)
        return f"{repository}:{tag}"

    def prune_kept(self, keep: set[str]) -> None:
        """Untag this environment's keep references that are not in ``keep`` (images in use stay)."""
        repository = keep_reference("x:y", self.environment).rpartition(":")[0]
        with self._translated("listing kept images"):
            images = self._client.api.images(name=repository)
        tags = {t for image in images for t in image.get("RepoTags") or [] if t.startswith(repository + ":")}
        for tag in tags - keep:
            with contextlib.suppress(ControllerError), self._translated(f"untagging {tag}"):
                self._client.api.remove_image(tag, noprune=False)

    def create(self, desired: DesiredContainer, *, name: str) -> str:
        """Create (not start) a container from the desired spec under ``name``; return its id."""
        api = self._client.api
        host_config = api.create_host_config(
            binds={m.source: {"bind": m.target, "mode": "rw"} for m in desired.mounts},
            restart_policy={"Name": desired.restart_policy},
            init=desired.init,
            network_mode=desired.network_mode,
            privileged=False,
            cap_add=None,
            devices=None,
            port_bindings=None,
        )
        with self._translated(f"creating {name}"):
            created = api.create_container(
                desired.image,
                name=name,
                environment=[f"{k}={v}" for k, v in desired.env.items()],
                labels=desired.labels,
                host_config=host_config,
            )
        return str(created["Id"])

    def start(self, ref: str) -> None:
        """Start a container."""
        with self._translated(f"starting {ref[:12]}"):
            self._client.api.start(ref)

    def stop(self, ref: str, *, timeout: int = 30) -> None:
        """Stop gracefully: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Returns once the container's process is gone (its ``die`` event) and the engine has
        released its network (the bridge's ``disconnect`` event for it, some 50 ms later), without
        waiting for the rest of the engine's clean-up as ``docker stop`` does.  A container started
        in that moment sets up its network while the old one's is being torn down, and the two
        slow each other down: its start took up to twice as long, in about half the swaps measured.
        """
        api = self._client.api
        with self._translated(f"stopping {ref[:12]}"):
            events = api.events(filters={"container": [ref], "event": ["die"]}, decode=True)
            hard_kill = threading.Timer(timeout, self._kill, args=(ref,))
            died: dict[str, Any] = {}
            try:
                if not self._signal(ref, "SIGTERM"):
                    return  # it was not running
                hard_kill.start()
                for event in events:
                    died = event
                    break
            finally:
                hard_kill.cancel()
                events.close()
            if died.get("id") and died.get("timeNano"):
                self._network_released(str(died["id"]), died_ns=int(died["timeNano"]))

    def _network_released(self, container_id: str, *, died_ns: int) -> None:
        """Wait for the engine's ``disconnect`` of a container after its death, at most ``RELEASE_WAIT`` seconds.

        The stream starts at the death (so an event already sent is replayed) and ends at the wait's
        end by the engine's own clock, so a container without a network never holds the swap up.
        """
        since = died_ns / 1e9
        released = self._client.api.events(
            since=f"{since:.9f}",
            until=f"{since + RELEASE_WAIT:.9f}",
            filters={"type": ["network"], "event": ["disconnect"]},
            decode=True,
        )
        try:
            for event in released:
                if ((event.get("Actor") or {}).get("Attributes") or {}).get("container") == container_id:
                    return
        finally:
            released.close()

    def _signal(self, ref: str, signal: str) -> bool:
        try:
            self._client.api.kill(ref, signal=signal)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # not running
                return False
            raise
        return True

    def _kill(self, ref: str) -> None:
        with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
            self._signal(ref, "SIGKILL")

    def rename(self, ref: str, name: str) -> None:
        """Rename a container (only to one of this environment's names)."""
        if name not in self._names:
            raise Refused(f"refusing to rename to {name}: not one of {self.environment}'s names", code=Reason.ISOLATION)
        with self._translated(f"renaming {ref[:12]} to {name}"):
            self._client.api.rename(ref, name)

    def remove(self, ref: str) -> None:
        """Force-remove a container (it is killed if it runs)."""
        try:
            with self._translated(f"removing {ref[:12]}"):
                self._client.api.remove_container(ref, force=True)
        except Refused:
            return  # already gone

    def logs_tail(self, ref: str, *, lines: int = 50) -> str:
        """The last ``lines`` lines of a container's output."""
        try:
            with self._translated(f"reading logs of {ref[:12]}"):
                raw: bytes = self._client.api.logs(ref, stdout=True, stderr=True, tail=lines)
        except ControllerError:
            return ""
        return raw.decode("utf-8", "replace")


def _env_dict(entries: list[str] | None) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in entries or [] if "=" in entry)


def _privileges(config: dict[str, Any], host: dict[str, Any], *, image_user: str) -> Privileges:
    """What ``docker inspect`` shows beyond the controller's own settings (all empty as it creates them)."""
    user = str(config.get("User") or "")
    return Privileges(
        pid_mode=str(host.get("PidMode") or ""),
        ipc_mode=str(host.get("IpcMode") or ""),
        uts_mode=str(host.get("UTSMode") or ""),
        userns_mode=str(host.get("UsernsMode") or ""),
        cap_add=tuple(str(c) for c in host.get("CapAdd") or []),
        devices=tuple(str(d.get("PathOnHost", "")) for d in host.get("Devices") or [] if isinstance(d, dict))
        + tuple(f"cgroup rule {rule}" for rule in host.get("DeviceCgroupRules") or []),  # devices it may create
        security_opt=tuple(str(o) for o in host.get("SecurityOpt") or [] if not _narrows(str(o))),
        user="" if user == image_user else user,
        extra_mounts=tuple(f"tmpfs {path}" for path in host.get("Tmpfs") or {})
        + tuple(f"volumes from {source}" for source in host.get("VolumesFrom") or []),
    )


def _narrows(option: str) -> bool:
    return option.replace("=", ":") in ("no-new-privileges", "no-new-privileges:true")


def _state(data: dict[str, Any], image_env: dict[str, str], *, image_user: str = "") -> ContainerState:
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    state = data.get("State") or {}
    env = {k: v for k, v in _env_dict(config.get("Env")).items() if image_env.get(k) != v}
    ports = host.get("PortBindings") or {}
    return ContainerState(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        image=config.get("Image", ""),
        image_id=data.get("Image", ""),
        env=env,
        mounts=tuple(
            sorted(
                (Mount(m.get("Source", ""), m["Destination"]) for m in data.get("Mounts") or []),
                key=lambda m: m.target,
            )
        ),
        labels=dict(config.get("Labels") or {}),
        restart_policy=(host.get("RestartPolicy") or {}).get("Name", ""),
        init=bool(host.get("Init")),
        network_mode=host.get("NetworkMode", ""),
        status=state.get("Status", ""),
        health=(state.get("Health") or {}).get("Status"),
        restart_count=int(data.get("RestartCount", 0)),
        started_at=state.get("StartedAt", ""),
        privileged=bool(host.get("Privileged")),
        published_ports=any(ports.values()),
        privileges=_privileges(config, host, image_user=image_user),
        raw=data,
    )
