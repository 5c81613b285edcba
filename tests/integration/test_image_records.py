"""Who signed the image, where people look (docs/design.md §14): the page, the notifications and ``verify``.

End to end with the real engine, registry and git: images signed in both cosign formats through the
registry's API, a running daemon serving the page, a notification receiver on 127.0.0.1, the
controller's own command line.  And the other side of the check: a pass with nothing to change never
asks the registry (counted at a relay in front of it).
"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.api.page import render_page
from controller.cli import main
from controller.signatures.images.cosign import fingerprint
from testbed import ControllerHost, CuttingProxy, NotificationReceiver, wait_for
from tests.cosign_signing import sign_bundle, sign_classic
from tests.integration.test_image_pass import SignedHost


def _told(receiver: NotificationReceiver, title: str) -> list[str]:
    """The bodies of the messages with ``title`` the receiver got, in order."""
    bodies = [json.loads(r.body) for r in list(receiver.requests) if r.path == "/hook"]
    return [body["message"] for body in bodies if body["title"] == title]


def _image_signer(host: ControllerHost) -> str | None:
    applied = host.status().applied
    return applied.image_signer if applied else None


def _page(host: ControllerHost) -> str:
    port = re.search(r"listen: '127\.0\.0\.1:([0-9]+)'", host.configs["prod"].read_text())
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/", timeout=10) as reply:
        return str(reply.read().decode())


def _verify(bed: SignedHost, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["verify", "--config", str(bed.host.configs["prod"]), *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_the_image_signer_is_on_the_page_in_the_notification_and_in_verify(
    controller_host: ControllerHost,
    images: dict[str, str],
    tmp_path: Path,
    receiver: NotificationReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bed, host = SignedHost(controller_host, images, tmp_path), controller_host
    with host.configs["prod"].open("a") as config:
        config.write(f"notify: {{urls: ['json://127.0.0.1:{receiver.port}/hook']}}\n")
    signer = fingerprint(bed.key.private.public_key())
    sign_classic(bed.writer, bed.a, bed.key)
    first = host.publish("signed image a", prod=bed.a)
    daemon = host.start_daemon()
    try:
        wait_for(lambda: _image_signer(host) == signer, what="the signed deploy")
        page = _page(host)
        wait_for(lambda: bool(_told(receiver, f"prod: applied {first[:7]}")), what="the applied message")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert re.search(rf"Image signed by</th><td><code>{re.escape(signer)}</code>", page)
    assert host.key.principal in page  # the commit signer, on the row above
    (message,) = _told(receiver, f"prod: applied {first[:7]}")
    assert f"Image signer: {signer}" in message and host.key.principal in message
    code, out = bed.cli(capsys, "verify")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("trusted: ") and host.key.principal in lines[0]
    assert lines[1] == f"image signed by {signer}"

    sign_bundle(bed.writer, bed.b, bed.key)  # the bundle format, through the tag fallback
    second = host.publish("signed image b", prod=bed.b)
    assert host.sync() == 0 and host.image() == bed.b
    (message,) = _told(receiver, f"prod: applied {second[:7]}")
    assert f"Image signer: {signer}" in message
    code, answer = _verify(bed, capsys)
    assert (code, answer["revision"], answer["image_signer"]) == (0, second, signer)
    assert _verify(bed, capsys, first)[1]["image_signer"] == signer  # REV's own manifest, not the head's
    html, _ = render_page(
        host.status(), snapshots=[], events=host.audit(), chain=None, plan=None, now=datetime.now(UTC)
    )
    assert f"<code>{signer}</code>" in html.decode()


def test_verify_refuses_a_trusted_commit_that_declares_an_unsigned_image(
    controller_host: ControllerHost, images: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bed, host = SignedHost(controller_host, images, tmp_path), controller_host
    sign_classic(bed.writer, bed.a, bed.key)
    signed = host.publish("signed image a", prod=bed.a)
    unsigned = host.publish("unsigned image b", prod=bed.b)
    code, answer = _verify(bed, capsys)
    assert (code, answer["revision"], answer["trusted"]) == (3, unsigned, False)
    assert answer["signer"].startswith(host.key.principal) and "signature" in answer["error"]
    code, out = bed.cli(capsys, "verify")
    assert code == 3 and out.startswith("refused") and "Traceback" not in out
    assert _verify(bed, capsys, signed)[0] == 0


def test_verify_without_image_signatures_says_nothing_about_the_image(
    controller_host: ControllerHost, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(controller_host.configs["prod"])
    assert main(["verify", "--config", config]) == 0
    assert "image" not in capsys.readouterr().out
    assert main(["verify", "--config", config, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image_signer"] is None


def test_a_pass_with_nothing_to_change_does_not_ask_the_registry(
    controller_host: ControllerHost, images: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = CuttingProxy(controller_host.registry.host)
    try:
        bed, host = SignedHost(controller_host, images, tmp_path, via=relay.host), controller_host
        sign_classic(bed.writer, bed.a, bed.key)
        host.publish("signed image a", prod=bed.a)
        assert host.sync() == 0 and host.image() == bed.a
        before = relay.connections
        assert host.sync() == 0 and host.sync() == 0
        assert host.status().last_attempt.result == "unchanged"  # type: ignore[union-attr]
        assert relay.connections == before
        sign_classic(bed.writer, bed.b, bed.key)
        host.publish("signed image b", prod=bed.b)
        before = relay.connections
        assert bed.cli(capsys, "plan")[0] == 0
        assert relay.connections > before  # the relay does see the check when there is a change
    finally:
        relay.stop()
