"""The steady pass's one engine call, a container inspect, over the engine's unix socket without the SDK.

A no-change pass asks the engine one thing: the runtime container as it is.
Through the docker SDK that one GET costs more CPU than the rest of the pass
besides the fetch (``requests`` prepares, merges settings and hooks on every
call), and a controller polls all day; so reads of a container go through one
persistent HTTP/1.1 connection of the standard library instead, on the same
socket and API version as the SDK.  Errors stay the SDK's kind: the socket's
``OSError`` is translated by ``engine.failures`` like any other, and an answer
other than 200 or 404 is an ``EngineError`` with the engine's own message.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import quote

from controller.engine.failures import EngineError


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 to a unix socket."""

    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        """Connect to the socket instead of a TCP address."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixInspector:
    """``GET /v<version>/containers/<ref>/json`` on one kept-alive connection, one caller at a time."""

    def __init__(self, path: str, *, version: str, timeout: float) -> None:
        self.path = path
        self.version = version
        self.timeout = timeout
        self.calls = 0
        self._connection: _UnixConnection | None = None
        self._lock = threading.Lock()  # the status API's thread may read while a pass does

    def container(self, ref: str, *, action: str) -> dict[str, Any] | None:
        """The engine's inspect of container ``ref``; None when it does not exist."""
        status, body = self._get(f"/v{self.version}/containers/{quote(ref, safe='/:')}/json", action=action)
        if status == 404:
            return None
        answer = json.loads(body) if body else {}
        if status != 200:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise EngineError(f"{action}: {' '.join(str(message or status).split())[:300]}")
        return answer if isinstance(answer, dict) else {}

    def _get(self, url: str, *, action: str) -> tuple[int, bytes]:
        with self._lock:
            for attempt in (1, 2):
                reused, connection = self._connection is not None, self._connection
                connection = connection or _UnixConnection(self.path, timeout=self.timeout)
                self._connection = None
                try:
                    connection.request("GET", url)
                    response = connection.getresponse()
                    body = response.read()
                except (http.client.HTTPException, OSError) as exc:
                    connection.close()
                    if reused and attempt == 1:
                        continue  # a kept-alive connection the engine had closed (idle, restarted): once more
                    if isinstance(exc, OSError):
                        raise  # the socket's own error: ``engine.failures`` names the engine and the errno
                    raise EngineError(f"{action}: the Docker Engine answered no HTTP: {type(exc).__name__}") from None
                self._connection = connection
                self.calls += 1
                return response.status, body
        raise AssertionError("not reached: the second attempt returns or raises")

    def close(self) -> None:
        """Drop the connection; the next read opens a new one."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
