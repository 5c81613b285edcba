"""Stand-ins for the outside the controller talks to: a proxy that cuts connections, a JWKS server, a receiver."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class CuttingProxy:
    """A TCP relay on 127.0.0.1 in front of a registry that can cut a transfer part-way."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.host = f"127.0.0.1:{self.port}"
        self._budget: int | None = None  # bytes still allowed downstream; None: unlimited
        self.connections = 0  # accepted so far: a test that must not reach the registry asserts it stays put
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, nbytes: int) -> None:
        """From now on, relay ``nbytes`` more to clients, then drop every connection and refuse new ones."""
        with self._lock:
            self._budget = nbytes

    def restore(self) -> None:
        """Relay everything again."""
        with self._lock:
            self._budget = None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with self._lock:
                refused = self._budget is not None and self._budget <= 0
            if refused:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(16384):
                if downstream and not self._spend(len(chunk)):
                    break
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _spend(self, nbytes: int) -> bool:
        with self._lock:
            if self._budget is None:
                return True
            self._budget -= nbytes
            return self._budget > 0

    def stop(self) -> None:
        """Close the listener and every relayed connection."""
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


class JwksServer:
    """An RSA signing key and its JWKS served on 127.0.0.1, standing in for Cloudflare Access."""

    def __init__(self, *, team: str, audience: str) -> None:
        self.team = team
        self.audience = audience
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "kid-1"
        self.fetches = 0
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}).encode()
        outer = self

        class Jwks(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cdn-cgi/access/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, *, kid: str | None = None, key: Any = None, alg: str = "RS256", **claims: Any) -> str:
        """A signed access token; a claim given as None is left out."""
        now = int(time.time())
        payload = {
            "aud": self.audience,
            "iss": self.team,
            "iat": now,
            "exp": now + 300,
            "email": "ops@dreichor.io",
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.private, algorithm=alg, headers={"kid": kid or self.kid})

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ReceivedRequest:
    """One request a ``NotificationReceiver`` recorded."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case: HTTP header names are case-insensitive
    body: bytes


class NotificationReceiver:
    """An HTTP server on 127.0.0.1 that records every request: Apprise's ``json://`` and ``form://``
    posts, GitHub's statuses API.

    ``status`` is what it answers; ``hold`` (an Event) keeps each request waiting until it is set;
    ``stop`` closes the port, so a stopped receiver is a dead one.
    """

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.status = 200
        self.hold: threading.Event | None = None
        self.arrived = threading.Event()
        self.answered = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._stopped = False
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append(ReceivedRequest(self.command, self.path, headers, body))
                outer.arrived.set()
                if outer.hold is not None:
                    outer.hold.wait(30)
                outer.answered += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def stop(self) -> None:
        """Release held requests and close the port (again: no effect)."""
        if self.hold is not None:
            self.hold.set()
        if not self._stopped:
            self._stopped = True
            self.server.shutdown()
            self.server.server_close()
