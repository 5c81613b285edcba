"""Both engine adapters word an engine they cannot reach the same way: where it is and the OS's cause."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.engine.docker import Engine
from controller.engine.swarm import SwarmEngine
from controller.errors import Reason, Retryable

ADAPTERS: dict[str, Callable[[str], object]] = {
    "container": lambda url: Engine(url, environment="prod"),
    "swarm": lambda url: SwarmEngine(url, environment="prod"),
}


@pytest.fixture
def refusing_socket(tmp_path: Path) -> Iterator[Path]:
    """A socket file nobody listens on: connecting to it is refused (ECONNREFUSED), as a stopped dockerd's."""
    path = tmp_path / "docker.sock"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(path))
    bound.close()  # the file stays, the listener is gone
    yield path


@pytest.mark.parametrize("mode", sorted(ADAPTERS))
def test_a_refusing_engine_is_named_with_its_socket_and_errno_in_both_modes(mode: str, refusing_socket: Path) -> None:
    with pytest.raises(Retryable) as raised:
        ADAPTERS[mode](f"unix://{refusing_socket}")
    expected = f"connecting to Docker: the Docker Engine at {refusing_socket} is unreachable"
    assert str(raised.value) == f"{expected}: Connection refused (ECONNREFUSED)"
    assert raised.value.code is Reason.ENGINE_UNAVAILABLE


@pytest.mark.parametrize("mode", sorted(ADAPTERS))
def test_a_missing_socket_reads_the_same_in_both_modes(mode: str, tmp_path: Path) -> None:
    with pytest.raises(Retryable, match=rf"the Docker Engine at {tmp_path}/none.sock is unreachable: .* \(ENOENT\)$"):
        ADAPTERS[mode](f"unix://{tmp_path}/none.sock")
