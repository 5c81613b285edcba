"""A bounded HTTP/1.1 server for the local API: no client can hold a thread, or the API, for long.

The stdlib's threaded server gives every connection a thread and times out
each receive, so hundreds of clients that never finish their headers (or send
a byte every few seconds) hold hundreds of threads.  Here one asyncio loop
reads every connection; ``h11`` (the only importer) parses HTTP, so nothing is
hand-parsed.  A connection that sends nothing is closed after ``idle`` seconds;
from its first byte a request has one deadline for its head and body together,
whatever the route, not per receive.  Every answer closes the connection.

No client can fill the server: at most ``connections`` are open, and a newcomer
makes room.  Near the cap, connections that hold nothing (idle, or closing after
their answer) are closed at once; at the cap, the oldest connection not yet in
the app goes (still reading, waiting for a worker, or being answered), never
one whose request runs.  At most ``bodies`` bodies are read at once and a new
one pushes out the oldest reader: a sender that stalls mid-body holds a slot
only until someone needs it.  At most ``in_flight`` requests run in the app's
worker threads.  The app sees the head first and says whether to read a body at
all (``App.screen``), so no body is read before its headers check out.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import h11

log = logging.getLogger("dreichor.api")
READ_CHUNK = 16 * 1024
LINGER_BYTES = 64 * 1024
LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """How much any client may take."""

    deadline: float = 10.0  # seconds from a request's first byte to its body's last
    idle: float = 3.0  # seconds a connection may stay open without sending its first byte
    in_flight: int = 16  # requests the app runs at once (its worker threads)
    connections: int = 256  # open connections; past it the oldest one not in the app goes
    headroom: int = 32  # within this many of the cap, connections holding nothing are closed at once
    bodies: int = 4  # bodies read at once (each at most what the app allowed); a new one pushes out the oldest
    max_head: int = 16 * 1024  # bytes of request line and headers


@dataclass(frozen=True)
class Request:
    """A request head (names lower-cased, a repeated header joined by ", "), and its body once read."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """What to send; the server adds the framing and ``Connection: close``."""

    status: HTTPStatus
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class App(Protocol):
    """The routes behind the server."""

    def screen(self, request: Request) -> Response | int:
        """On the loop, before any body: an answer now, or how many body bytes to read (0: none). Must not block."""

    def handle(self, request: Request) -> Response:
        """In a worker thread, with the body read when ``screen`` asked for one."""


class Closed(Exception):
    """The client went away, or broke HTTP."""


# Where a connection is: "idle" (nothing sent yet), "read" (head or body), "wait" (for a worker),
# "app" (its request runs: never pushed out), "send" (the answer), "linger" (closing after it).
GRACE = 0.5  # seconds a new connection has to send its first bytes before it counts as holding nothing


class BoundedServer:
    """One loop thread reading every connection, a fixed pool running the app."""

    def __init__(self, host: str, port: int, app: App, *, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.sock = socket.create_server((host, port), backlog=512)  # bind now: the caller hears an OSError
        self.server_address = self.sock.getsockname()
        self.pool = ThreadPoolExecutor(max_workers=self.limits.in_flight, thread_name_prefix="api")
        self.loop = asyncio.new_event_loop()
        self.phases: collections.OrderedDict[asyncio.StreamWriter, str] = collections.OrderedDict()  # oldest first
        self.admitted: dict[asyncio.StreamWriter, float] = {}
        self.readers: collections.OrderedDict[asyncio.StreamWriter, None] = collections.OrderedDict()  # bodies
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> threading.Thread:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._run, name="api-loop", daemon=True)
        self._thread.start()
        return self._thread

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.slots = asyncio.Semaphore(self.limits.in_flight)
        server = self.loop.run_until_complete(asyncio.start_server(self._connection, sock=self.sock, limit=READ_CHUNK))
        try:
            self.loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting and serving; requests in the app's threads finish on their own."""
        if self._thread is None or not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._stopped.wait(timeout=10)

    def server_close(self) -> None:
        """Release the socket and the workers."""
        self.sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one connection ----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._admit(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        try:
            await self._first_bytes(conn, reader)
            self._enter(writer, "read")
            response = await self._respond(conn, reader, writer)
            self._enter(writer, "send")
            await asyncio.wait_for(self._send(conn, writer, response), self.limits.deadline)
            self._enter(writer, "linger")
            await self._linger(reader, writer)
        except (Closed, TimeoutError, OSError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            # Shutdown cancels every connection; ending the task quietly keeps asyncio's stream
            # callback from logging the cancellation as an error with a traceback.
            pass
        finally:
            self._forget(writer)
            writer.transport.abort()

    def _enter(self, writer: asyncio.StreamWriter, phase: str) -> None:
        if writer in self.phases:  # a connection pushed out stays out
            self.phases[writer] = phase

    def _admit(self, writer: asyncio.StreamWriter) -> None:
        """Make room for the newcomer: near the cap close what holds nothing, at the cap the oldest not in the app."""
        now = self.loop.time()
        self.phases[writer], self.admitted[writer] = "idle", now
        near = self.limits.connections - self.limits.headroom
        for other, phase in list(self.phases.items()):
            if len(self.phases) <= near:
                break
            if phase == "linger" or (phase == "idle" and now - self.admitted[other] > GRACE):
                self._push_out(other)
        if len(self.phases) > self.limits.connections:
            oldest = next((w for w, phase in self.phases.items() if phase != "app" and w is not writer), writer)
            log.debug("connection cap reached: closing the oldest connection not in the app")
            self._push_out(oldest)

    def _push_out(self, writer: asyncio.StreamWriter) -> None:
        self._forget(writer)
        writer.transport.abort()

    def _forget(self, writer: asyncio.StreamWriter) -> None:
        self.phases.pop(writer, None)
        self.admitted.pop(writer, None)
        self.readers.pop(writer, None)

    async def _first_bytes(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        """Wait at most ``idle`` seconds for the first bytes; the request's deadline starts with them."""
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), self.limits.idle)
        except TimeoutError:
            raise Closed from None  # nothing was asked: nothing to answer
        if not data:
            raise Closed
        conn.receive_data(data)

    async def _respond(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Response:
        try:
            async with asyncio.timeout(self.limits.deadline):
                request = await self._head(conn, reader)
                verdict = self.app.screen(request)
                if isinstance(verdict, Response):
                    return verdict
                if verdict:
                    self._take_body_slot(writer)
                    request = await self._body(conn, reader, request, verdict)
                    self.readers.pop(writer, None)
                self._enter(writer, "wait")
                await self.slots.acquire()
                if writer not in self.phases:  # pushed out while it waited: nobody to answer
                    self.slots.release()
                    raise Closed
                self._enter(writer, "app")
        except h11.RemoteProtocolError as exc:
            return Response(HTTPStatus(exc.error_status_hint), b'{"error": "bad request"}', JSON)
        except TimeoutError:
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                raise Closed from None  # nothing was asked: nothing to answer
            if conn.their_state is h11.DONE:
                return Response(HTTPStatus.SERVICE_UNAVAILABLE, b'{"error": "busy"}', JSON)
            return Response(HTTPStatus.REQUEST_TIMEOUT, b'{"error": "request not complete within the deadline"}', JSON)
        try:
            return await self.loop.run_in_executor(self.pool, self.app.handle, request)
        except Exception:
            log.exception("an API request failed with a bug", extra={"target": request.target[:200]})
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, b'{"error": "internal error"}', JSON)
        finally:
            self.slots.release()

    def _take_body_slot(self, writer: asyncio.StreamWriter) -> None:
        """Read bodies ``bodies`` at a time; a newcomer pushes out the oldest reader (a stalled one)."""
        while len(self.readers) >= self.limits.bodies:
            oldest = next(iter(self.readers))
            log.debug("body slots taken: closing the oldest body still being read")
            self._push_out(oldest)
        self.readers[writer] = None

    async def _head(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request:
        event = await self._next(conn, reader)
        if not isinstance(event, h11.Request):
            raise Closed
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Request(event.method.decode("ascii"), event.target.decode("latin-1"), headers)

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader, request: Request, limit: int) -> Request:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.EndOfMessage):
                return Request(request.method, request.target, request.headers, b"".join(chunks))
            if not isinstance(event, h11.Data):
                raise Closed
            size += len(event.data)
            if size > limit:
                raise Closed
            chunks.append(bytes(event.data))

    @staticmethod
    async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise Closed
            if isinstance(event, h11.Event):
                return event
            data = await reader.read(READ_CHUNK)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                raise Closed

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response) -> None:
        headers = [
            *((name, value) for name, value in response.headers.items()),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
            ("Server", "dreichor-controller"),
        ]
        if conn.our_state is not h11.SEND_RESPONSE:
            conn = h11.Connection(h11.SERVER)  # the request was broken: answer outside its state machine
            conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.next_event()
        writer.write(
            conn.send(h11.Response(status_code=response.status, headers=headers, reason=response.status.phrase))
        )
        writer.write(conn.send(h11.Data(data=response.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close gently: stop sending, drop what the client still sends (a body not read), briefly.

        Closing with unread bytes makes the kernel reset the connection, and a
        reset can reach the client before it has read the answer.
        """
        if writer.can_write_eof():
            writer.write_eof()
        left = LINGER_BYTES
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while left > 0 and (data := await reader.read(READ_CHUNK)):
                    left -= len(data)
        except TimeoutError:
            return


JSON = {"Content-Type": "application/json"}
