"""The daemon's SIGHUP reload: the new config takes effect whole, only the process's hooks carry over.

Real config files and the real layout; no pass runs, so no engine is needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.daemon.scheduler import JOB_ID, Daemon
from controller.errors import Reason, Retryable
from controller.model.desired import DesiredContainer
from controller.reconcile.record import PassResult
from controller.records.host_init import init_layout
from controller.service import EnvironmentService
from testbed import ManifestRepo

CONFIG = """\
environment: prod
root: {root}
source:
  url: {url}
trust:
  allowed_signers: trust/allowed_signers
image:
  repository: registry.test/dreichor/runtime
{signatures}
"""
IMAGE = "registry.test/dreichor/runtime@sha256:" + "a" * 64


def write_config(path: Path, *, root: Path, url: str, keys: list[str] | None) -> None:
    signatures = "  signatures:\n    keys: [" + ", ".join(keys) + "]" if keys else ""
    path.write_text(CONFIG.format(root=root, url=url, signatures=signatures))


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    init_layout(tmp_path / "opt", "prod")
    agent = tmp_path / "opt" / "prod" / "deploy-agent"
    repo = ManifestRepo(tmp_path / "manifests")
    write_config(agent / "controller.yaml", root=tmp_path / "opt", url=repo.url, keys=None)
    daemon = Daemon(agent / "controller.yaml")
    daemon.scheduler.add_job(daemon.tick, daemon._trigger(), id=JOB_ID)
    return daemon


def reconfigure(daemon: Daemon, keys: list[str] | None) -> None:
    config = daemon.config
    write_config(daemon.config_path, root=config.root, url=config.source.url, keys=keys)
    daemon.reload()


def image_check_names(service: EnvironmentService) -> str:
    """What the service's image check says about a key file that is not there (no registry is asked)."""
    assert service.world.image_check is not None
    desired = DesiredContainer(name="dreichor-runtime-prod", image=IMAGE, env={}, mounts=(), labels={})
    with pytest.raises(Retryable) as refused:
        service.world.image_check(desired)
    return refused.value.reason


def test_a_reload_that_adds_image_signatures_turns_the_check_on(daemon: Daemon) -> None:
    assert daemon.service.world.image_check is None
    reconfigure(daemon, ["trust/cosign.pub"])
    assert "trust/cosign.pub" in image_check_names(daemon.service)


def test_a_reload_that_rotates_the_cosign_key_checks_against_the_new_key(daemon: Daemon) -> None:
    reconfigure(daemon, ["trust/old.pub"])
    reconfigure(daemon, ["trust/new.pub"])
    said = image_check_names(daemon.service)
    assert "trust/new.pub" in said and "old.pub" not in said


def test_a_reload_that_removes_image_signatures_turns_the_check_off(daemon: Daemon) -> None:
    reconfigure(daemon, ["trust/cosign.pub"])
    reconfigure(daemon, None)
    assert daemon.service.world.image_check is None


def test_a_reload_keeps_the_hooks(daemon: Daemon) -> None:
    heard: list[object] = []
    daemon.service.audit_hooks.append(heard.append)
    daemon.service.notice_hooks.append(heard.append)
    reconfigure(daemon, ["trust/cosign.pub"])
    assert daemon.service.audit_hooks == [heard.append] and daemon.service.notice_hooks == [heard.append]


# -- SIGHUP rebuilds the notifier too (issue 21, 6) -----------------------------------------------


class _Heard(BaseHTTPRequestHandler):
    """Records each request's path and Authorization header."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.heard.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receivers() -> Iterator[list[ThreadingHTTPServer]]:
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Heard)
        server.heard = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _tell_refusal(daemon: Daemon, revision: str) -> None:
    """What the service tells its hooks when a pass refuses ``revision``."""
    for hook in daemon.service.audit_hooks:
        hook({"event": "refused", "revision": revision, "reason": "not signed", "code": "Unsigned"})
    assert daemon.notifier is None or daemon.notifier.drain(10)


def _notify_config(daemon: Daemon, receiver: ThreadingHTTPServer | None) -> None:
    config = daemon.config
    write_config(daemon.config_path, root=config.root, url=config.source.url, keys=None)
    if receiver is not None:
        port = receiver.server_address[1]
        with daemon.config_path.open("a") as handle:
            handle.write(
                "notify: {urls: ['json://127.0.0.1:${NOTIFY_PORT}/hook'], events: [refused]}\n"
                f"github: {{repository: o/r, api_url: 'http://127.0.0.1:{port}'}}\n"
            )


def _dotenv(daemon: Daemon, receiver: ThreadingHTTPServer, token: str) -> None:
    dotenv = daemon.config.paths.dotenv
    kept = [line for line in dotenv.read_text().splitlines() if not line.startswith(("NOTIFY_PORT", "GITHUB_TOKEN"))]
    dotenv.write_text("\n".join([*kept, f"NOTIFY_PORT={receiver.server_address[1]}", f"GITHUB_TOKEN={token}", ""]))


def test_a_reload_rebuilds_the_notifier_its_receivers_dotenv_values_and_github_statuses(
    daemon: Daemon, receivers: list[ThreadingHTTPServer]
) -> None:
    old, new = receivers
    _notify_config(daemon, old)
    _dotenv(daemon, old, "old-token")
    daemon.reload()
    _tell_refusal(daemon, "a" * 40)
    assert sorted(old.heard) == [("/hook", None), ("/repos/o/r/statuses/" + "a" * 40, "Bearer old-token")]  # type: ignore[attr-defined]

    _notify_config(daemon, new)  # another receiver, another GitHub, a rotated token and ${NOTIFY_PORT}
    _dotenv(daemon, new, "new-token")
    daemon.reload()
    _tell_refusal(daemon, "b" * 40)
    assert sorted(new.heard) == [("/hook", None), ("/repos/o/r/statuses/" + "b" * 40, "Bearer new-token")]  # type: ignore[attr-defined]
    assert len(old.heard) == 2  # type: ignore[attr-defined]

    _notify_config(daemon, None)  # notify and github removed: nobody is told any more
    daemon.reload()
    assert daemon.notifier is None
    _tell_refusal(daemon, "c" * 40)
    assert (len(old.heard), len(new.heard)) == (2, 2)  # type: ignore[attr-defined]


def test_a_reload_whose_notify_url_the_env_cannot_fill_keeps_the_running_config(
    daemon: Daemon, receivers: list[ThreadingHTTPServer]
) -> None:
    _notify_config(daemon, receivers[0])
    _dotenv(daemon, receivers[0], "token")
    daemon.reload()
    running = daemon.notifier
    daemon.config_path.write_text(daemon.config_path.read_text().replace("${NOTIFY_PORT}", "${MISSING}"))
    daemon.reload()
    assert daemon.notifier is running and "${NOTIFY_PORT}" in str(daemon.config.notify)
    _tell_refusal(daemon, "d" * 40)
    assert len(receivers[0].heard) == 2  # type: ignore[attr-defined]


# -- the webhook replay memory is the daemon's, on disk (issue 21, 7) --------------------------


def test_the_daemon_keeps_webhook_deliveries_under_state_and_reads_them_at_start(daemon: Daemon) -> None:
    hook = daemon._api_guards().webhook
    assert hook.deliveries.path == daemon.config.paths.deliveries
    assert hook.deliveries.first(delivery="d1", body=b"{}")
    restarted = Daemon(daemon.config_path)
    assert not restarted._api_guards().webhook.deliveries.first(delivery="d1", body=b"{}")
    daemon.reload()
    assert daemon._api_guards().webhook.deliveries is hook.deliveries  # a reload keeps the memory


def test_a_held_change_is_one_warning_and_no_refusal_in_the_metrics(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = PassResult("waiting", "waiting for approvals (1 of 2: alice)", code=Reason.AWAITING_APPROVALS)
    monkeypatch.setattr(daemon.service, "sync", lambda options=None: held)
    with caplog.at_level(logging.INFO, logger="dreichor"):
        for _ in range(3):
            daemon.tick()
    passes = [r for r in caplog.records if r.getMessage() == "pass"]
    assert [r.levelno for r in passes] == [logging.WARNING, logging.INFO, logging.INFO]
    text = daemon.metrics.exposition().decode()
    assert 'dreichor_passes_total{result="waiting"} 3.0' in text
    assert "dreichor_refusals_total{" not in text


def test_a_refusal_retried_every_pass_is_one_warning_and_one_count(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    unsigned = PassResult("refused", "image B has no signature yet", code=Reason.IMAGE_UNSIGNED)
    monkeypatch.setattr(daemon.service, "sync", lambda options=None: unsigned)
    with caplog.at_level(logging.INFO, logger="dreichor"):
        for _ in range(3):
            daemon.tick()
    passes = [r for r in caplog.records if r.getMessage() == "pass"]
    assert [(r.levelno, r.result) for r in passes] == [  # type: ignore[attr-defined]
        (logging.WARNING, "refused"),
        (logging.INFO, "held"),
        (logging.INFO, "held"),
    ]
    text = daemon.metrics.exposition().decode()
    assert 'dreichor_refusals_total{reason="ImageUnsigned"} 1.0' in text
    assert 'dreichor_passes_total{result="held"} 2.0' in text
