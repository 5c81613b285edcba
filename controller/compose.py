"""The composition root: what one environment's service acts through, built from its config and ``.env``.

The service never constructs an adapter itself: the Docker or Swarm engine,
the git source with its credentials, the rollout for the configured mode and
the image signature check are made here, so the service reads as the
operations alone and the tests hand it fakes instead.  Credentials go from
``.env`` to the client that needs them and nowhere else (never a command line,
never the runtime container).
"""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from controller.config import DEFAULT_REPOSITORY, Config, HostPaths, load_config
from controller.contract import DesiredContainer, desired_from_bytes
from controller.engine.docker import Engine
from controller.engine.port import RuntimeView
from controller.engine.swarm import SwarmEngine
from controller.errors import ConfigError, Reason, Retryable
from controller.manifest import MAX_MANIFEST_BYTES
from controller.records.dotenv import read_dotenv
from controller.rollout.base import Applier, checkpoint
from controller.rollout.container import ContainerRollout
from controller.rollout.swarm import SwarmRollout
from controller.signatures.images.verifier import ImageVerdict, ImageVerifier, registry_for
from controller.source import GitSource


def host_dotenv(paths: HostPaths) -> dict[str, str]:
    """The environment's ``.env``, or nothing when it cannot be read (a pass reports that itself)."""
    try:
        return read_dotenv(paths.dotenv)
    except (OSError, UnicodeDecodeError):
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


class ImageTrust:
    """The image signature check (docs/design.md §14) from ``image.signatures``, ``image.provenance``, ``.env``.

    Keys and the trusted root are read at each use, so a rotated key file counts from the next pass.
    """

    def __init__(self, config: Config, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.verifier = ImageVerifier.from_config(config.image)
        self.clock = clock

    def verify(self, reference: str) -> ImageVerdict:
        """The cosign signature of ``reference`` (``repo@sha256:…``) by a configured key or keyless identity."""
        if self.config.image.signatures is None:
            raise ConfigError("image.signatures.keys is not set in the config: there is no key to verify against")
        registry = registry_for(reference, credentials=registry_auth(host_dotenv(self.config.paths)))
        return self.verifier.verify(reference, registry=registry, now=self.clock())

    def declared(self, source: GitSource, revision: str) -> ImageVerdict:
        """The signature of the image ``revision``'s manifest declares, judged offline as ``validate`` does."""
        path = f"envs/{self.config.environment}.yaml"
        desired = desired_from_bytes(
            source.read_file(revision, path, max_bytes=MAX_MANIFEST_BYTES),
            environment=self.config.environment,
            repository=self.config.image.repository,
            paths=self.config.paths,
            dotenv=None,  # .env is the pass's business, not verify's
            revision=revision,
            what=f"{path} at {revision[:12]}",
        )
        return self.verify(desired.image)

    def check(self, desired: DesiredContainer) -> ImageVerdict:
        """The pass's image step: the image's verdict, or ``Refused`` before anything is pulled."""
        try:
            return self.verify(desired.image)
        except ConfigError as exc:
            raise Retryable(str(exc), code=Reason.HOST_CONFIG) from None

    def trusted_signer(self, signer: str) -> bool:
        """Whether a recorded image signer is still a configured key or identity (a rotated key is not)."""
        return self.verifier.trusts(signer)


def validate_file(
    file: Path, *, environment: str, config_file: Path | None, data: bytes | None = None
) -> DesiredContainer:
    """Check a manifest offline; with a config, against its image repository and ``.env``.

    ``data``: the manifest's bytes when they come from elsewhere (stdin); ``file`` then only names it.
    """
    config = load_config(config_file) if config_file else None
    if config is not None and config.environment != environment:
        raise ConfigError(f"config is for '{config.environment}', the manifest for '{environment}'")
    try:
        data = file.read_bytes() if data is None else data
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    dotenv = None
    if config is not None:
        try:
            dotenv = read_dotenv(config.paths.dotenv)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {config.paths.dotenv}: {exc}") from None
    return desired_from_bytes(
        data,
        environment=environment,
        repository=config.image.repository if config else DEFAULT_REPOSITORY,
        paths=config.paths if config else HostPaths(Path("/opt/dreichor"), environment),
        dotenv=dotenv,
        what=str(file),
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
