"""systemd's notification protocol: datagrams a real socket receives, and a full queue never blocks the daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from controller.daemon import systemd


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    return sock


def test_each_notification_is_one_datagram(listener: socket.socket) -> None:
    systemd.ready()
    systemd.status("InSync, Healthy: applied:\ndeploying B")
    systemd.watchdog()
    systemd.stopping()
    got = [listener.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1", "STATUS=InSync, Healthy: applied: deploying B", "WATCHDOG=1", "STOPPING=1"]


def test_a_receiver_that_does_not_read_never_stops_the_daemon(listener: socket.socket) -> None:
    """The kernel queues a few datagrams (net.unix.max_dgram_qlen, 10 here); a blocking send past them
    froze the whole process with the GIL held (cysystemd's sd_notify): this loop never returned."""
    for _ in range(2000):
        systemd.watchdog()
    assert listener.recv(4096) == b"WATCHDOG=1"  # the first ones were queued; the rest were dropped
    listener.setblocking(False)
    queued = 1
    while True:
        try:
            listener.recv(4096)
        except BlockingIOError:
            break
        queued += 1
    assert queued < 2000


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.enabled()
    systemd.ready()  # no socket to send to: a silent no-op
