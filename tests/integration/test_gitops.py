"""The three user flows end to end: real dockerd, registry, git, ssh-keygen; the controller's own CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import compose
from controller.cli import main
from controller.model.config import load_config
from controller.records.audit import verify_chain
from testbed import (
    ControllerHost as Host,
)
from testbed import (
    JwksServer,
    free_port,
    make_ssh_key,
    manifest_text,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(controller_host: Host) -> Host:
    """The test bed's controller host: dev and prod configured, nothing deployed yet."""
    return controller_host


def test_merge_deploys_and_revert_rolls_back_with_the_status_file_saying_so(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.sync() == 0
    first = host.status()
    assert first.phase == "InSync" and first.applied is not None
    assert first.applied.image == images["healthy-a"]
    assert first.applied.signer.startswith(f"{host.key.principal} (ssh-ed25519 SHA256:")
    repo = host.repo
    repo.git("checkout", "-q", "-b", "bump-prod")
    host.publish("prod: healthy-b", key=None, prod=images["healthy-b"])
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-S", "-m", "Merge pull request #7 from bump-prod", "bump-prod", key=host.key)
    repo.push()
    merge = repo.head()
    capsys.readouterr()
    assert host.sync("prod", "--json") == 0
    assert json.loads(capsys.readouterr().out)["result"] == "applied"
    deployed = host.status()
    assert deployed.applied is not None and deployed.applied.revision == merge
    assert deployed.applied.image == images["healthy-b"] == host.image()
    assert deployed.last_attempt is not None and deployed.last_attempt.result == "applied"
    assert deployed.last_snapshot and deployed.container.state == "running"
    repo.git("revert", "-S", "-m", "1", "--no-edit", merge, key=host.key)
    repo.push()
    assert host.sync() == 0
    reverted = host.status()
    assert reverted.applied is not None and reverted.applied.revision == repo.head()
    assert host.image() == images["healthy-a"] and reverted.phase == "InSync"
    assert [e["event"] for e in host.audit()] == ["applied", "applied", "applied"]
    assert verify_chain(host.root / "prod/deploy-agent/state/audit.jsonl") is None


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("unsigned", "is not signed"), ("untrusted", "is not in allowed_signers"), ("contract", "'ports' is owned")],
)
def test_a_bad_head_is_refused_and_the_container_untouched(
    host: Host, images: dict[str, str], tmp_path: Path, kind: str, reason: str
) -> None:
    assert host.sync() == 0
    before = host.running()
    if kind == "contract":
        host.repo.write("envs/prod.yaml", manifest_text("prod", images["healthy-b"]) + "ports: ['80:80']\n")
        host.repo.commit("open a port", key=host.key)
        host.repo.push()
    else:
        key = None if kind == "unsigned" else make_ssh_key(tmp_path / "k", name="mallory")
        host.publish("sneaky", key=key, prod=images["healthy-b"])
    assert host.sync() == 3
    status = host.status()
    assert status.last_attempt is not None and status.last_attempt.result == "refused"
    assert reason in status.last_attempt.reason
    assert status.phase == "Degraded"
    assert host.running()["Id"] == before["Id"] and host.image() == images["healthy-a"]
    assert host.sync() == 3  # held: every pass says so, nothing retried, the applied revision keeps running
    assert [e["event"] for e in host.audit()] == ["applied", "refused"]


def test_a_force_push_back_to_an_older_commit_is_refused(host: Host, images: dict[str, str]) -> None:
    old = host.repo.head()
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0
    host.repo.git("reset", "-q", "--hard", old)
    host.repo.push(force=True)
    assert host.sync() == 3
    assert "history rewritten" in (host.status().last_attempt.reason or "")  # type: ignore[union-attr]
    assert host.image() == images["healthy-b"]
    assert host.sync("prod", "--allow-rewrite", "--force") == 0
    assert host.image() == images["healthy-a"]
    assert "rewrite_allowed" in [e["event"] for e in host.audit()]


def test_a_rolled_back_revision_is_not_retried_until_forced(host: Host, images: dict[str, str]) -> None:
    assert host.sync() == 0
    good = host.running()["Id"]
    host.publish("broken", prod=images["exits"])
    assert host.sync() == 4
    status = host.status()
    assert status.last_attempt is not None and status.last_attempt.result == "rolled_back"
    assert "giving up" in (status.last_attempt.logs or "")
    assert host.running()["Id"] == good
    assert host.sync() == 3  # held since the rollback: not retried, said on every pass
    assert host.running()["Id"] == good and host.status().last_attempt.result == "rolled_back"  # type: ignore[union-attr]
    assert host.sync("prod", "--force") == 4


def test_dev_and_prod_controllers_touch_only_their_own_container(host: Host, images: dict[str, str]) -> None:
    assert host.sync("dev") == 0 and host.sync("prod") == 0
    prod_id = host.running("prod")["Id"]
    host.publish("dev only", dev=images["healthy-b"])
    assert host.sync("dev") == 0 and host.sync("prod") == 0
    assert host.image("dev") == images["healthy-b"] and host.image("prod") == images["healthy-a"]
    assert host.running("prod")["Id"] == prod_id


def test_an_unreachable_remote_degrades_and_recovers(host: Host, images: dict[str, str]) -> None:
    assert host.sync() == 0
    bare = host.repo.bare
    bare.rename(bare.with_name("moved.git"))
    try:
        assert host.sync() == 1
        status = host.status()
        assert status.phase == "Degraded" and status.source.last_error
        assert host.image() == images["healthy-a"] and status.container.state == "running"
        later = compose.environment_service(
            load_config(host.configs["prod"]), clock=lambda: datetime.now(UTC) + timedelta(seconds=10)
        )
        assert later.sync().result == "failed"
        later.close()
        assert host.status().source.stale  # no fetch for more than 5 intervals of 1 s
    finally:
        bare.with_name("moved.git").rename(bare)
    assert host.sync() == 0 and host.status().phase == "InSync"
    assert not host.status().source.stale


def test_rollback_restores_a_snapshot_and_suspends_until_resume(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.sync() == 0
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    config = str(host.configs["prod"])
    assert main(["rollback", "--config", config]) == 0
    assert host.image() == images["healthy-a"]
    status = host.status()
    assert status.phase == "Suspended" and status.suspended
    assert host.sync() == 3 and host.image() == images["healthy-a"]  # suspended: the poll does not undo it
    assert main(["resume", "--config", config]) == 0
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    assert main(["history", "--verify", "--config", config]) == 0
    assert "audit chain: intact" in capsys.readouterr().out
    events = [e["event"] for e in host.audit()]
    assert events[-4:] == ["suspended", "rollback", "resumed", "applied"]


def _env_of(container: dict[str, object]) -> dict[str, str]:
    pairs = container["Config"]["Env"]  # type: ignore[index]
    return dict(str(pair).partition("=")[::2] for pair in pairs)


def test_rollback_never_restores_another_environments_snapshot_or_its_database(
    host: Host, images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert host.sync("dev") == 0 and host.sync("prod") == 0
    host.publish("b", prod=images["healthy-b"])
    assert host.sync("prod") == 0
    prod_snapshots = host.root / "prod/deploy-agent/state/snapshots"
    snapshot = sorted(prod_snapshots.glob("*.json"))[-1]  # of healthy-a, before healthy-b
    dev, dev_container = str(host.configs["dev"]), host.running("dev")
    dev_database = _env_of(dev_container)["DATABASE_URL"]
    traversal = f"../../../../prod/deploy-agent/state/snapshots/{snapshot.stem}"
    assert main(["rollback", traversal, "--config", dev]) == 3
    assert "is not a snapshot id" in capsys.readouterr().err
    (host.root / "dev/deploy-agent/state/snapshots" / snapshot.name).write_bytes(snapshot.read_bytes())
    assert main(["rollback", snapshot.stem, "--config", dev]) == 3
    assert "of environment 'prod', not 'dev'" in capsys.readouterr().err
    assert host.running("dev")["Id"] == dev_container["Id"] and not host.status("dev").suspended
    assert [e["event"] for e in host.audit("dev")] == ["applied"]
    data = json.loads(snapshot.read_text())
    data["prior"]["env"]["DATABASE_URL"] = dev_database  # a snapshot file is host state, not trusted
    snapshot.write_text(json.dumps(data))
    assert main(["rollback", snapshot.stem, "--config", str(host.configs["prod"])]) == 0
    restored = host.running("prod")
    assert host.image("prod") == images["healthy-a"]
    assert _env_of(restored)["DATABASE_URL"].endswith("/dreichor_prod")
    assert restored["Config"]["Labels"]["io.dreichor.environment"] == "prod"  # type: ignore[index]


def test_a_tampered_audit_log_is_detected(host: Host, images: dict[str, str]) -> None:
    assert host.sync() == 0
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 0
    path = host.root / "prod/deploy-agent/state/audit.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[1] + "\n")
    assert main(["history", "--verify", "--config", str(host.configs["prod"])]) == 3


def test_the_daemon_deploys_a_push_and_stops_cleanly_on_sigterm(host: Host, images: dict[str, str]) -> None:
    daemon = host.start_daemon()
    try:
        wait_for(lambda: host.engine.inspect("dreichor-runtime-prod") is not None and host.status().phase == "InSync")
        second = host.start_daemon()
        assert second.wait(timeout=30) == 1
        assert "another controller holds" in host.daemon_output(second)[1]
        host.publish("b", prod=images["healthy-b"])
        wait_for(lambda: host.status().phase == "Progressing" or host.image() == images["healthy-b"])
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        assert host.running()["State"]["Running"]  # type: ignore[index]
        assert host.engine.running_names("dreichor-runtime-prod") == ["dreichor-runtime-prod"]
        lines = [json.loads(line) for line in host.daemon_output(daemon)[0].splitlines()]
        assert any(line.get("msg") == "pass" for line in lines)
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_access_tokens_and_webhooks_drive_the_daemon_and_systemd_hears_it(
    host: Host, images: dict[str, str], tmp_path: Path
) -> None:
    team, audience = "https://dreichor.cloudflareaccess.com", "aud-1"
    jwks = JwksServer(team=team, audience=audience)
    port = free_port()
    config = host.configs["prod"]
    text = config.read_text().replace("interval: 1,", "interval: 3600,")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("api:"))
    config.write_text(
        text + f"\napi: {{listen: '127.0.0.1:{port}', access: {{team_domain: '{team}', audience: {audience},"
        f" jwks_url: '{jwks.url}'}}}}\n"
    )
    dotenv = host.root / "prod/deploy-agent/.env"
    dotenv.write_text(dotenv.read_text() + "GITHUB_WEBHOOK_SECRET=s3cret\n")
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.5)
    messages: list[str] = []
    listening = threading.Event()

    def listen() -> None:  # as systemd does: read every notification as it comes, the queue never fills
        while not listening.is_set():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    daemon = host.start_daemon(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000")
    base = f"http://127.0.0.1:{port}"

    def post(path: str, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(base + path, data=body, headers=headers, method="POST")  # noqa: S310 loopback
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 loopback
            return int(reply.status)

    try:
        wait_for(lambda: "READY=1" in messages, what="READY=1")
        assert any(m.startswith("STATUS=InSync, Healthy: ") for m in messages)
        assert host.image() == images["healthy-a"]
        wait_for(lambda: "WATCHDOG=1" in messages, what="WATCHDOG=1")
        with urllib.request.urlopen(base + "/healthz", timeout=10) as reply:  # noqa: S310 loopback
            assert reply.status == 200

        for n in range(1000):  # a hostile burst first: none of it may disturb the scheduler
            try:
                post("/sync" if n % 2 else "/hooks/github", b"{", {"Cf-Access-Jwt-Assertion": "x"})
            except urllib.error.HTTPError as exc:
                assert exc.code in (400, 401)
        host.publish("b", prod=images["healthy-b"])
        assert post("/sync", b"", {"Cf-Access-Jwt-Assertion": jwks.token()}) == 202
        wait_for(lambda: host.image() == images["healthy-b"])

        host.publish("a again", prod=images["healthy-a"])
        body = b'{"ref": "refs/heads/main"}'
        signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature,
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "1",
        }
        assert post("/hooks/github", body, headers) == 202
        wait_for(lambda: host.image() == images["healthy-a"])
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        wait_for(lambda: "STOPPING=1" in messages, timeout=5, what="STOPPING=1")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        listening.set()
        reader.join(timeout=5)
        listener.close()
        jwks.stop()


def test_sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_invalid(host: Host) -> None:
    config = host.configs["prod"]
    daemon = host.start_daemon()
    try:
        wait_for(lambda: host.status().phase == "InSync", what="the first deploy")
        good = config.read_text()
        config.write_text(good + "colour: blue\n")
        daemon.send_signal(signal.SIGHUP)
        time.sleep(1)
        config.write_text(good.replace("interval: 1,", "interval: 2,"))
        daemon.send_signal(signal.SIGHUP)
        time.sleep(1)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    messages = [json.loads(line) for line in host.daemon_output(daemon)[0].splitlines()]
    refused = [m for m in messages if m["msg"] == "config reload refused; keeping the running config"]
    assert refused and "colour: unknown key" in refused[0]["reason"]
    assert any(m["msg"] == "config reloaded" for m in messages)


def test_credentials_never_reach_the_container_the_status_or_the_logs(host: Host, images: dict[str, str]) -> None:
    dotenv = host.root / "prod" / "deploy-agent" / ".env"
    dotenv.write_text(dotenv.read_text() + "GIT_TOKEN=ghp_supersecret\nREGISTRY_PASSWORD=hunter2\n")
    config = host.configs["prod"]
    config.write_text(config.read_text().replace(host.repo.url, "https://127.0.0.1:9/manifests.git"))
    assert host.sync() == 1
    config.write_text(config.read_text().replace("https://127.0.0.1:9/manifests.git", host.repo.url))
    assert host.sync() == 0
    env = host.running()["Config"]["Env"]  # type: ignore[index]
    assert not any("supersecret" in e or "hunter2" in e for e in env)
    state = host.root / "prod" / "deploy-agent" / "state"
    for name in ("status.json", "audit.jsonl"):
        text = (state / name).read_text()
        assert "supersecret" not in text and "hunter2" not in text
