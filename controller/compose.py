"""The composition root: everything one environment's service acts through, built from its config and ``.env``.

The entry points (the command line, the daemon) call it; nothing else imports it (a contract in
``pyproject.toml``).  The service never constructs an adapter itself: the Docker or Swarm engine,
the git source with its credentials, the rollout for the configured mode, the image check, the
notifier and the API's guards are made here, so the service reads as the operations alone and
the tests hand it fakes instead.  Credentials go from ``.env`` to the client that needs them and
nowhere else (never a command line, never the runtime container).
"""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from controller.api.routes import AccessVerifier, Guards, WebhookVerifier
from controller.engine.docker import Engine
from controller.engine.port import RuntimeView
from controller.engine.swarm import SwarmEngine
from controller.errors import ConfigError
from controller.model.config import Config, HostPaths, load_config
from controller.notifications.sender import Notifier
from controller.reconcile.context import Clock, ImageStep
from controller.records.deliveries import DeliveryMemory
from controller.records.dotenv import load_dotenv
from controller.rollout.base import Applier, checkpoint
from controller.rollout.container import ContainerRollout
from controller.rollout.swarm import SwarmRollout
from controller.service import EnvironmentService
from controller.signatures.images.trust import ImageTrust
from controller.source.git import GitSource

__all__ = ["Notifier", "api_guards", "environment_service", "image_trust", "notifier", "service_from_file"]


def host_dotenv(paths: HostPaths) -> dict[str, str]:
    """The environment's ``.env`` for credentials, or nothing when it cannot be read (a pass reports that itself)."""
    try:
        return load_dotenv(paths.dotenv)
    except ConfigError:
        return {}


def connect_engine(config: Config) -> RuntimeView:
    """The engine adapter for ``docker.mode``: one container, or a one-replica Swarm service."""
    docker = config.docker
    if docker.mode == "swarm":
        return SwarmEngine(docker.url, environment=config.environment, monitor=config.health.stable)
    return Engine(docker.url, environment=config.environment)


def git_source(config: Config) -> GitSource:
    """The git cache of the manifest repository, fetching with the credentials from ``.env``."""
    return GitSource(
        config.paths.repo,
        url=config.source.url,
        branch=config.source.branch,
        timeout=config.source.timeout,
        env=git_credentials(host_dotenv(config.paths), known_hosts=config.paths.known_hosts),
    )


def make_rollout(
    config: Config,
    engine: RuntimeView,
    *,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    at_step: Callable[[str], None] = checkpoint,
) -> Applier:
    """The rollout for ``docker.mode``, pulling with the registry credentials from ``.env``."""
    mode: type[ContainerRollout] | type[SwarmRollout] = (
        SwarmRollout if config.docker.mode == "swarm" else ContainerRollout
    )
    return mode(
        cast(Any, engine),  # the mode chose the adapter too, so the engine has the mode's port
        paths=config.paths,
        health=config.health,
        clock=clock,
        sleep=sleep,
        monotonic=monotonic,
        auth=registry_auth(host_dotenv(config.paths)),
        at_step=at_step,
    )


def environment_service(
    config: Config,
    *,
    engine: Callable[[], RuntimeView] | None = None,
    source: GitSource | None = None,
    image_check: ImageStep | None = None,
    clock: Clock = lambda: datetime.now(UTC),
    at_step: Callable[[str], None] = checkpoint,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> EnvironmentService:
    """The service for one environment, with everything it acts through; a part given here replaces
    the one built from the config (tests hand in a fake engine, a clock, a stand-in image check)."""

    def rollout(runtime: RuntimeView) -> Applier:
        return make_rollout(config, runtime, clock=clock, sleep=sleep, monotonic=monotonic, at_step=at_step)

    return EnvironmentService(
        config,
        connect=engine or (lambda: connect_engine(config)),
        source=source or git_source(config),
        rollout=rollout,
        images=image_trust(config),
        image_check=image_check,
        clock=clock,
        at_step=at_step,
    )


def service_from_file(config_file: Path) -> EnvironmentService:
    """The service for the environment a ``controller.yaml`` describes."""
    return environment_service(load_config(config_file))


def image_trust(config: Config) -> ImageTrust:
    """The image check for ``image.signatures`` and ``image.provenance``, with the registry's credentials."""
    return ImageTrust(config, credentials=lambda: registry_auth(host_dotenv(config.paths)))


def notifier(
    service: EnvironmentService,
    *,
    on_failure: Callable[[], None] | None = None,
    on_drop: Callable[[], None] | None = None,
) -> Notifier | None:
    """The process's notifier, hearing the service's decisions; None when nothing is configured.

    Raises ``ConfigError`` for an unusable Apprise URL or a ``${NAME}`` the .env lacks.
    """
    config = service.config
    if config.notify is None and config.github is None:
        return None
    dotenv = host_dotenv(config.paths)
    told = Notifier.from_config(config, dotenv=dotenv, on_failure=on_failure, on_drop=on_drop)
    service.audit_hooks.append(told.hear)
    service.notice_hooks.append(told.hear)
    return told


def api_guards(config: Config, deliveries: DeliveryMemory) -> Guards:
    """The API's Access verifier and webhook secret, as the config and the ``.env`` say now."""
    access = config.api.access
    return Guards(
        access=AccessVerifier(access) if access else None,
        webhook=WebhookVerifier(
            host_dotenv(config.paths).get("GITHUB_WEBHOOK_SECRET"),
            branch=config.source.branch,
            deliveries=deliveries,
        ),
    )


def git_credentials(dotenv: dict[str, str], *, known_hosts: Path) -> dict[str, str]:
    """Environment for git: an https token as an extra header, or an ssh key; never on the command line.

    ssh checks the server against ``known_hosts`` (``trust/known_hosts``) alone: under the unit
    ``ProtectHome`` hides ``~/.ssh``, and an unknown host key is refused, never learned.
    """
    env: dict[str, str] = {}
    token = dotenv.get("GIT_TOKEN")
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    key = dotenv.get("GIT_SSH_KEY")
    if key:
        # ssh splits UserKnownHostsFile at white space unless the value is in double quotes; the shell the
        # command runs in needs its own quoting around that.
        hosts = shlex.quote(f'UserKnownHostsFile="{known_hosts}"')
        options = f"-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o {hosts}"
        env["GIT_SSH_COMMAND"] = f"ssh -i {shlex.quote(key)} {options}"
    return env


def registry_auth(dotenv: dict[str, str]) -> dict[str, str] | None:
    """Registry credentials from ``.env`` (REGISTRY_USERNAME / REGISTRY_PASSWORD), if set."""
    user, password = dotenv.get("REGISTRY_USERNAME"), dotenv.get("REGISTRY_PASSWORD")
    return {"username": user, "password": password} if user and password else None
