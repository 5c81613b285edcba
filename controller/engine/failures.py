"""One translation of the docker SDK's errors, and one pull, for both engine adapters.

Container mode (``docker``) and Swarm mode (``swarm``) talk to the same
engine through the same SDK, so an outage must read the same in both: an
engine that cannot be reached names its address and the operating system's
own cause (``…the Docker Engine at /var/run/docker.sock is unreachable:
Connection refused (ECONNREFUSED)``), a registry that lacks a digest is
refused, anything transient is retried.  The engine reports a failed pull
inside its progress stream rather than as an HTTP error, so the stream is read
to the end and judged here, once.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker.errors
import requests.exceptions

from controller.errors import ControllerError, Reason, Refused, Retryable

NOT_A_MANAGER = (
    "the Docker Engine is not a swarm manager: point docker.url at a manager "
    "('docker swarm init' on a new swarm, 'docker node promote <node>' in one), or use docker.mode: container"
)


class EngineError(Retryable):
    """The Docker Engine or the registry could not be reached, or failed transiently."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code=Reason.ENGINE_UNAVAILABLE)


@contextmanager
def translated(action: str, *, url: str) -> Iterator[None]:
    """The SDK's errors as ours: ``Refused`` when retrying cannot help, ``EngineError`` otherwise."""
    try:
        yield
    except ControllerError:
        raise
    except docker.errors.NotFound as exc:
        raise Refused(f"{action}: {explain(exc)}", code=Reason.NOT_FOUND) from None
    except docker.errors.APIError as exc:
        if exc.status_code == 503 and "not a swarm manager" in explain(exc):
            raise Refused(NOT_A_MANAGER, code=Reason.SWARM_PLACEMENT) from None
        raise EngineError(f"{action}: {explain(exc)}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise EngineError(f"{action}: {unreachable(url, exc)}") from None


def unreachable(url: str, exc: BaseException) -> str:
    """How an engine that cannot be reached is worded in both modes: where it is and why."""
    where = f" at {url.removeprefix('unix://')}" if url else ""
    return f"the Docker Engine{where} is unreachable: {cause(exc)}"


def cause(exc: BaseException) -> str:
    """The root cause under the SDK's wrappers: the OS error and its errno name when there is one."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno:
            return f"{error.strerror or os.strerror(error.errno)} ({errno.errorcode.get(error.errno, error.errno)})"
        inner = [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
        stack += [e for e in inner if isinstance(e, BaseException)]
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def explain(exc: docker.errors.APIError) -> str:
    """The engine's own explanation of a refused call, on one bounded line."""
    return " ".join(str(exc.explanation or exc).split())[:300]


def pull(api: Any, pinned: str, *, auth: dict[str, str] | None, url: str) -> str:
    """Pull ``repo@sha256:…`` and check the engine holds exactly that digest; return the image id."""
    repository, _, digest = pinned.partition("@")
    with translated(f"pulling {pinned}", url=url):
        try:
            stream = api.pull(repository, tag=digest, auth_config=auth or None, stream=True, decode=True)
        except docker.errors.APIError as exc:
            raise pull_error(pinned, explain(exc)) from None
        for message in stream:
            error = message.get("error") if isinstance(message, dict) else None
            if error:
                raise pull_error(pinned, str(error))
    with translated("inspecting the pulled image", url=url):
        try:
            image = api.inspect_image(pinned)
        except docker.errors.NotFound:
            raise EngineError(f"the pull of {pinned} did not complete") from None
    if pinned not in image.get("RepoDigests", []):
        raise Refused(f"the pulled image does not carry digest {digest}", code=Reason.DIGEST_MISMATCH)
    return str(image["Id"])


def pull_error(pinned: str, error: str) -> ControllerError:
    """A digest the registry does not have is refused; anything else (network, registry down) is retried."""
    if "manifest unknown" in error or "not found" in error.lower():
        return Refused(f"image {pinned} does not exist in the registry", code=Reason.IMAGE_NOT_FOUND)
    return EngineError(f"pulling {pinned} failed: {' '.join(error.split())[:300]}")
