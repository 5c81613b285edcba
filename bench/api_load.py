"""The API under hundreds of slow clients: ``/healthz`` time against the idle API, threads and memory.

500 clients on 127.0.0.1 each start a request and then send one header byte
every half second (the slowloris pattern a per-receive timeout never drops),
for 25 s; meanwhile ``/healthz`` is asked every 100 ms.  The server runs with
its real limits (a 10 s whole-request deadline, 256 connections, 16 requests
in flight).  Printed: ``/healthz`` median and worst, peak threads, RSS growth,
clients dropped.  Run: ``.venv/bin/python -m bench.api_load``.  Goal:
``/healthz`` under load at most 5x the idle median.
"""

from __future__ import annotations

import http.client
import resource
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from bench.common import Result, report
from controller.api.routes import ApiContext, ApiServer, Guards, WebhookVerifier
from controller.daemon.metrics import Metrics
from testbed import free_port

CLIENTS = 500
SECONDS = 25
TRICKLE = 0.5


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _healthz_ms(port: int) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    return (time.perf_counter() - start) * 1e3


class _Slow(threading.Thread):
    """The slow clients, from one thread: connect them all, then trickle a byte to each."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.dropped = 0
        self.connected = 0

    def run(self) -> None:
        socks = []
        for _ in range(CLIENTS):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
            self.connected += 1
        while not self.stop.wait(TRICKLE):
            for sock in list(socks):
                try:
                    sock.send(b"y")
                except OSError:
                    socks.remove(sock)
                    sock.close()
                    self.dropped += 1
        for sock in socks:
            sock.close()


def measure() -> Result:
    """``/healthz`` median under the slow clients vs idle; prints threads, memory and drops."""
    port = free_port()
    ctx = ApiContext(
        status_json=lambda: b"{}",
        healthy=lambda: True,
        trigger=lambda _by: None,
        metrics=Metrics(),
        guards=Guards(access=None, webhook=WebhookVerifier(None, branch="main")),
    )
    server = ApiServer(f"127.0.0.1:{port}", ctx)
    server.start()
    try:
        idle = [_healthz_ms(port) for _ in range(200)]
        threads_before, rss_before = threading.active_count(), _rss_mb()
        slow = _Slow(port)
        slow.start()
        loaded, peak_threads, peak_rss = [], threads_before, rss_before
        until = time.monotonic() + SECONDS
        while time.monotonic() < until:
            loaded.append(_healthz_ms(port))
            peak_threads = max(peak_threads, threading.active_count())
            peak_rss = max(peak_rss, _rss_mb())
            time.sleep(0.1)
        slow.stop.set()
        slow.join()
    finally:
        server.shutdown()
        server.server_close()
    figure, base = statistics.median(loaded), statistics.median(idle)
    print(
        f"{CLIENTS} slow clients for {SECONDS} s: /healthz median {figure:.2f} ms, worst {max(loaded):.2f} ms"
        f" over {len(loaded)} asks (idle {base:.2f} ms); threads {threads_before} -> peak {peak_threads}"
        f" (one is the clients' own); RSS {rss_before:.1f} -> peak {peak_rss:.1f} MB;"
        f" {slow.connected} connected, {slow.dropped} dropped by the server"
    )
    return Result(f"/healthz under {CLIENTS} slow clients (vs idle)", figure, base, "ms", 5)


def main() -> int:
    """Measure and print."""
    return report(measure())


if __name__ == "__main__":
    sys.exit(main())
