"""Notifications end to end: real engine, registry, git and keys; receivers on 127.0.0.1.

The controller's own command line runs the passes; a one-shot command waits
for its messages before it exits, so what the receiver recorded when ``sync``
returns is everything that pass told.  One receiver plays both parts: Apprise's
``json://`` posts to ``/hook``, GitHub's statuses API is under ``/repos/``.
"""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from typing import Any

import pytest

from controller import compose
from controller.cli import main
from controller.model.config import load_config
from testbed import ControllerHost, NotificationReceiver, manifest_text, wait_for

TOKEN = "ghp_e2etoken"
STATUSES = "/repos/ceerkle/dreichor-deployments/statuses/"


@pytest.fixture
def host(controller_host: ControllerHost, receiver: NotificationReceiver) -> ControllerHost:
    """prod told through json:// and commit statuses, both to the receiver."""
    agent = controller_host.root / "prod" / "deploy-agent"
    with (agent / "controller.yaml").open("a") as config:
        config.write(
            f"notify: {{urls: ['json://127.0.0.1:{receiver.port}/hook']}}\n"
            f"github: {{repository: ceerkle/dreichor-deployments, api_url: 'http://127.0.0.1:{receiver.port}'}}\n"
        )
    with (agent / ".env").open("a") as dotenv:
        dotenv.write(f"GITHUB_TOKEN={TOKEN}\n")
    return controller_host


def messages(receiver: NotificationReceiver) -> list[dict[str, Any]]:
    """What people were told, in order."""
    return [json.loads(r.body) for r in list(receiver.requests) if r.path == "/hook"]


def statuses(receiver: NotificationReceiver) -> list[tuple[str, str]]:
    """The commit statuses posted: (sha, state), in order."""
    posted = [r for r in list(receiver.requests) if r.path.startswith(STATUSES)]
    for request in posted:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    return [(r.path.removeprefix(STATUSES), json.loads(r.body)["state"]) for r in posted]


def test_a_deploy_is_told_once_with_a_success_status(host: ControllerHost, receiver: NotificationReceiver) -> None:
    head = host.repo.head()
    assert host.sync() == 0
    assert host.sync() == 0  # nothing changed: nothing more to tell
    (told,) = messages(receiver)
    assert (told["title"], told["type"]) == (f"prod: applied {head[:7]}", "success")
    assert host.key.principal in told["message"] and host.image().rpartition("@")[2] in told["message"]
    assert statuses(receiver) == [(head, "pending"), (head, "success")]


def test_a_sick_image_is_rolled_back_and_told_with_its_log_and_a_failure_status(
    host: ControllerHost, receiver: NotificationReceiver, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    sick = host.publish("sick", prod=images["exits"])
    assert host.sync() == 4
    assert host.image() == images["healthy-a"]
    told = messages(receiver)[-1]
    assert (told["title"], told["type"]) == (f"prod: rolled back {sick[:7]}", "failure")
    assert "giving up" in told["message"]  # the failed container's own last words
    assert statuses(receiver)[-2:] == [(sick, "pending"), (sick, "failure")]


def test_the_same_refusal_is_told_once_and_its_fix_is_told_as_resolved(
    host: ControllerHost, receiver: NotificationReceiver, images: dict[str, str]
) -> None:
    assert host.sync() == 0
    host.repo.write("envs/prod.yaml", manifest_text("prod", images["healthy-b"]) + "ports: ['80:80']\n")
    bad = host.repo.commit("open a port", key=host.key)
    host.repo.push()
    assert host.sync() == 3
    assert host.sync() == 3  # held: said again by every pass, told once; the applied revision keeps running
    assert host.sync() == 3
    assert [m["title"] for m in messages(receiver)][1:] == [f"prod: refused {bad[:7]}"]
    assert statuses(receiver).count((bad, "failure")) == 1
    fixed = host.publish("signed again", prod=images["healthy-b"])
    assert host.sync() == 0
    resolved = messages(receiver)[-1]
    assert (resolved["title"], resolved["type"]) == (f"prod runs {fixed[:7]} again", "success")
    assert f"refused {bad[:7]}" in resolved["message"]
    assert len(messages(receiver)) == 3
    assert statuses(receiver)[-1] == (fixed, "success")


def test_a_receiver_that_hangs_or_is_gone_never_holds_up_a_deploy(
    host: ControllerHost, receiver: NotificationReceiver, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.hold = threading.Event()
    service = compose.service_from_file(host.configs["prod"])
    notifier = compose.notifier(service)
    assert notifier is not None
    try:
        assert service.sync().result == "applied"
        # The deploy is done while the receiver has answered nothing.
        assert receiver.answered == 0 and host.status().phase == "InSync"
    finally:
        service.close()
        receiver.hold.set()
        notifier.close(10)
    receiver.stop()  # the receiver is gone: its port refuses
    capsys.readouterr()
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0
    assert host.image() == images["healthy-b"] and host.status().phase == "InSync"
    assert "could not be sent" in capsys.readouterr().err


def test_the_daemon_tells_its_deploys_counts_what_failed_and_drains_on_sigterm(
    host: ControllerHost, receiver: NotificationReceiver
) -> None:
    daemon = host.start_daemon()
    try:
        wait_for(lambda: any(m["title"].startswith("prod: applied") for m in messages(receiver)), what="told")
        listen = load_config(host.configs["prod"]).listen
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as reply:
            assert "dreichor_notifications_failed_total 0.0" in reply.read().decode()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert statuses(receiver)[-1] == (host.repo.head(), "success")


def test_the_daemon_refuses_to_start_with_a_notify_url_the_env_cannot_fill(host: ControllerHost) -> None:
    config = host.configs["prod"]
    config.write_text(config.read_text().replace("/hook']", "/${HOOK_SECRET}']"))
    daemon = host.start_daemon()
    assert daemon.wait(timeout=60) == 1
    err = host.daemon_output(daemon)[1]
    assert "notify.urls[0] names ${HOOK_SECRET}, which the .env file does not define" in err
    assert "Traceback" not in err


def test_notify_test_says_which_targets_answered(
    host: ControllerHost, receiver: NotificationReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["notify", "--test", "--config", str(host.configs["prod"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "answered  notify.urls[0] (JSON)" in out and "answered  github ceerkle/dreichor-deployments" in out
    assert messages(receiver)[0]["title"] == "Dreichor test message"
    receiver.stop()
    assert main([*args, "--json"]) == 1
    answers = json.loads(capsys.readouterr().out)["targets"]
    assert [a["answered"] for a in answers] == [False, False]
