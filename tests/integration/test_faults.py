"""Proof under faults: the daemon killed at every step, dependencies failing, the state folder broken.

Each test checks what a person on call would: the environment keeps exactly one
running runtime container, the status file is valid and says what happened,
the audit chain holds, and the controller recovers by itself once the fault is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import compose
from controller.model.config import load_config
from controller.records.audit import verify_chain
from controller.records.status import read_status
from controller.rollout.base import CRASH_HOOK
from testbed import (
    ControllerHost,
    CuttingProxy,
    LocalRegistry,
    ManifestRepo,
    PrivateDocker,
    SshKey,
    free_port,
    manifest_text,
    wait_for,
)

STEPS = ["fetch", "verify", "validate", "pull", "snapshot", "create", "rename", "stop", "start", "health", "record"]


@pytest.fixture
def host(controller_host: ControllerHost) -> ControllerHost:
    """A host whose prod controller has deployed image A."""
    assert controller_host.sync() == 0
    return controller_host


def state(host: ControllerHost) -> Path:
    return host.root / "prod" / "deploy-agent" / "state"


def assert_sound(host: ControllerHost) -> None:
    """One running runtime container, a readable status file, an intact audit chain."""
    assert host.engine.running_names("dreichor-runtime-prod") == ["dreichor-runtime-prod"]
    assert read_status(state(host) / "status.json") is not None
    assert verify_chain(state(host) / "audit.jsonl") is None


@pytest.mark.parametrize("step", STEPS)
def test_a_daemon_killed_at_any_step_converges_after_a_restart(
    host: ControllerHost, images: dict[str, str], step: str
) -> None:
    host.publish("deploy b", prod=images["healthy-b"])
    host.engine.cli("image", "rm", "--force", images["healthy-b"])
    doomed = host.start_daemon(**{CRASH_HOOK: step})
    assert doomed.wait(timeout=120) == -signal.SIGKILL
    assert len(host.engine.running_names("dreichor-runtime-prod")) <= 1  # never two, even mid-swap
    daemon = host.start_daemon()
    try:
        wait_for(
            lambda: host.status().applied.revision == host.repo.head() and host.status().phase == "InSync",
            timeout=90,
            what="convergence",
        )
        assert host.image() == images["healthy-b"]
        assert_sound(host)
        assert not (state(host) / "inflight.json").exists()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0


def test_dockerd_stopped_during_a_pass_and_restarted(
    tmp_path: Path, registry: LocalRegistry, manifest_repo: ManifestRepo, ssh_key: SshKey, images: dict[str, str]
) -> None:
    engine = PrivateDocker(tmp_path / "d").start()
    try:
        host = ControllerHost(tmp_path, engine, registry, manifest_repo, ssh_key)
        host.publish("initial", prod=images["healthy-a"], dev=images["healthy-a"])
        assert host.sync() == 0
        host.publish("b", prod=images["healthy-b"])
        daemon = host.start_daemon()
        try:
            wait_for(lambda: host.status().phase == "Progressing", timeout=60, what="a pass in flight")
            engine.kill(signal.SIGTERM)
            wait_for(lambda: host.status().phase == "Degraded", timeout=60, what="Degraded while Docker is down")
            assert read_status(state(host) / "status.json") is not None
            engine.start()
            wait_for(
                lambda: host.status().phase == "InSync" and host.image() == images["healthy-b"],
                timeout=120,
                what="recovery after Docker returns",
            )
            assert_sound(host)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    finally:
        engine.stop()


def test_a_corrupted_remote_degrades_and_recovers(host: ControllerHost, images: dict[str, str]) -> None:
    before = host.running()["Id"]
    backup = host.repo.bare.with_name("backup.git")
    host.publish("b", prod=images["healthy-b"])
    shutil.copytree(host.repo.bare, backup)
    subprocess.run(["git", "gc", "-q"], cwd=host.repo.bare, check=True)
    for pack in (host.repo.bare / "objects" / "pack").glob("*.pack"):
        pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    assert host.sync() == 1
    status = host.status()
    assert status.phase == "Degraded" and status.source.last_error
    assert host.running()["Id"] == before
    shutil.rmtree(host.repo.bare)
    backup.rename(host.repo.bare)
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    assert_sound(host)


def test_a_remote_that_answers_nothing_times_out(host: ControllerHost, images: dict[str, str]) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", free_port()))
    silent.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    config = host.configs["prod"]
    original = config.read_text()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/manifests.git"
    config.write_text(original.replace(host.repo.url, url).replace("timeout: 10", "timeout: 2"))
    try:
        assert host.sync() == 1
        status = host.status()
        assert status.phase == "Degraded" and status.container.state == "running"
    finally:
        config.write_text(original)
        silent.close()
        for conn in accepted:
            conn.close()
    assert host.sync() == 0 and host.status().phase == "InSync"


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_broken_state_folder_keeps_the_previous_status_file(
    host: ControllerHost, images: dict[str, str], fault: str
) -> None:
    folder = state(host)
    saved = folder.with_name("state.saved")
    shutil.copytree(folder, saved, symlinks=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    try:
        for item in saved.iterdir():
            if item.name != "repo":
                shutil.copy2(item, folder / item.name) if item.is_file() else shutil.copytree(item, folder / item.name)
        shutil.copytree(saved / "repo", folder / "repo")
        before = (folder / "status.json").read_bytes()
        if fault == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            with (folder / "filler").open("wb") as filler, pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
        host.publish("b", prod=images["healthy-b"])
        assert host.sync() == 1
        assert (folder / "status.json").read_bytes() == before  # the failed write left the old file whole
        assert read_status(folder / "status.json") is not None
        assert host.image() == images["healthy-a"]
        assert host.engine.running_names("dreichor-runtime-prod") == ["dreichor-runtime-prod"]
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert host.sync() == 0 and host.image() == images["healthy-b"]
    assert_sound(host)


@pytest.mark.parametrize("fault", ["missing", "unreadable"])
def test_a_missing_or_unreadable_dotenv_degrades_without_touching_the_container(
    host: ControllerHost, images: dict[str, str], fault: str
) -> None:
    dotenv = host.root / "prod" / "deploy-agent" / ".env"
    saved = dotenv.read_text()
    dotenv.unlink()
    if fault == "unreadable":
        dotenv.mkdir()  # root reads any file mode; a folder in its place cannot be read by anyone
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 1
    assert "cannot read" in host.status().last_attempt.reason  # type: ignore[union-attr]
    assert host.image() == images["healthy-a"]
    if fault == "unreadable":
        dotenv.rmdir()
    dotenv.write_text(saved)
    dotenv.chmod(0o600)  # a new file gets the umask's mode; .env must be private
    assert host.sync() == 0 and host.image() == images["healthy-b"]


def test_an_empty_trust_file_refuses_every_head_until_it_is_restored(
    host: ControllerHost, images: dict[str, str]
) -> None:
    signers = host.root / "prod" / "deploy-agent" / "trust" / "allowed_signers"
    saved = signers.read_text()
    signers.write_text("")
    host.publish("b", prod=images["healthy-b"])
    assert host.sync() == 3
    assert "trust policy is empty" in host.status().last_attempt.reason  # type: ignore[union-attr]
    assert host.image() == images["healthy-a"]
    signers.write_text(saved)  # a changed trust file lifts the quarantine
    assert host.sync() == 0 and host.image() == images["healthy-b"]


def test_the_clock_stepped_back_an_hour_between_passes(host: ControllerHost) -> None:
    config = load_config(host.configs["prod"])
    back = compose.environment_service(config, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    result = back.sync()
    back.close()
    assert result.result == "unchanged"
    status = host.status()
    assert status.phase == "InSync" and not status.source.stale
    assert host.sync() == 0 and host.status().phase == "InSync"
    assert_sound(host)


def test_a_killed_container_whose_image_was_removed_is_repaired_from_the_registry(
    host: ControllerHost, images: dict[str, str]
) -> None:
    host.engine.cli("kill", "--signal", "KILL", "dreichor-runtime-prod")
    host.engine.cli("rm", "--force", "dreichor-runtime-prod")
    host.engine.cli("image", "rm", "--force", images["healthy-a"])
    assert host.sync() == 0
    assert host.image() == images["healthy-a"] and host.status().phase == "InSync"
    assert "drift_repaired" in [e["event"] for e in host.audit()]


def test_a_killed_container_whose_image_was_removed_is_repaired_from_the_kept_copy_when_the_registry_is_gone(
    host: ControllerHost, images: dict[str, str], registry: LocalRegistry
) -> None:
    host.engine.cli("kill", "--signal", "KILL", "dreichor-runtime-prod")
    host.engine.cli("rm", "--force", "dreichor-runtime-prod")
    host.engine.cli("image", "rm", "--force", images["healthy-a"])
    registry.stop()
    try:
        assert host.sync() == 0
        assert host.status().phase == "InSync" and host.status().container.state == "running"
        assert host.sync() == 0 and host.audit()[-1]["event"] == "drift_repaired"  # and no repair loop after it
    finally:
        registry.start()


def test_the_registry_cut_in_the_middle_of_a_pull_leaves_the_container_untouched(
    host: ControllerHost, images: dict[str, str], registry: LocalRegistry, tmp_path: Path
) -> None:
    proxy = CuttingProxy(registry.host)
    try:
        context = tmp_path / "big"
        context.mkdir()
        shutil.copy2("/usr/bin/busybox", context / "busybox")
        (context / "payload").write_bytes(os.urandom(4 * 2**20))  # layers this engine has never seen
        (context / "Dockerfile").write_text(
            'FROM scratch\nCOPY busybox /bin/busybox\nCOPY payload /payload\nCMD ["/bin/busybox", "sleep", "86400"]\n'
        )
        tag = f"{registry.repository}:big"
        host.engine.cli("build", "--quiet", "--tag", tag, str(context))
        host.engine.cli("push", tag)
        digest = host.engine.cli("inspect", "--format", "{{index .RepoDigests 0}}", tag).strip().split("@")[1]
        host.engine.cli("rmi", tag)
        via_proxy = f"{proxy.host}/dreichor/runtime"
        config = host.configs["prod"]
        config.write_text(config.read_text().replace(registry.repository, via_proxy))
        host.repo.write("envs/prod.yaml", manifest_text("prod", f"{via_proxy}@{digest}"))
        host.repo.commit("big image", key=host.key)
        host.repo.push()
        before = host.running()["Id"]
        proxy.cut_after(2 * 2**20)
        assert host.sync() == 1
        status = host.status()
        assert status.phase == "Degraded" and status.last_attempt.result == "failed"  # type: ignore[union-attr]
        assert host.running()["Id"] == before and host.image() == images["healthy-a"]
        assert_sound(host)
        proxy.restore()
        assert host.sync() == 0
        assert host.image() == f"{via_proxy}@{digest}"
    finally:
        proxy.stop()


def _recreate_by_hand(host: ControllerHost, *extra: str) -> None:
    """What a person with the engine's socket does: the same container again, with one setting more."""
    was = host.running()
    config, hostconfig = was["Config"], was["HostConfig"]  # type: ignore[index]
    host.engine.cli("rm", "--force", "dreichor-runtime-prod")
    verb = ["create"] if "--privileged" in extra else ["run", "-d"]  # the test bed's engine cannot start one privileged
    args = [*verb, "--name", "dreichor-runtime-prod", "--init", "--restart", "unless-stopped"]
    for key, value in config["Labels"].items():  # type: ignore[index]
        args += ["--label", f"{key}={value}"]
    for entry in config["Env"]:  # type: ignore[index]
        args += ["--env", entry]
    for bind in hostconfig["Binds"] or []:  # type: ignore[index]
        args += ["--volume", bind]
    host.engine.cli(*args, *extra, config["Image"])  # type: ignore[index]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--pid", "host"], "pid mode host"),
        (["--ipc", "host"], "ipc mode host"),
        (["--uts", "host"], "uts mode host"),
        (["--userns", "host"], "userns mode host"),
        (["--cap-add", "SYS_ADMIN"], "capabilities SYS_ADMIN"),
        (["--device", "/dev/null:/dev/extra"], "devices /dev/null"),
        (["--device-cgroup-rule", "a *:* rwm"], "devices cgroup rule a *:* rwm"),
        (["--security-opt", "seccomp=unconfined"], "security options seccomp=unconfined"),
        (["--user", "0:0"], "user 0:0"),
        (["--tmpfs", "/scratch"], "mounts tmpfs /scratch"),
        (["--volume", "/tmp:/extra"], "mounts"),
        (["--privileged"], "privileged"),
        (["--publish", "127.0.0.1::8080"], "published ports"),
    ],
)
def test_a_runtime_recreated_by_hand_with_more_power_is_recreated_as_desired(
    host: ControllerHost, extra: list[str], named: str
) -> None:
    _recreate_by_hand(host, *extra)
    assert host.sync() == 0
    event = host.audit()[-1]
    assert event["event"] == "drift_repaired" and named in event["drift"], event
    now: dict[str, object] = host.running()["HostConfig"]  # type: ignore[assignment]
    for key in (
        "PidMode",
        "UTSMode",
        "UsernsMode",
        "CapAdd",
        "Devices",
        "DeviceCgroupRules",
        "SecurityOpt",
        "Privileged",
        "Tmpfs",
    ):
        assert not now.get(key), (key, now.get(key))
    assert now.get("IpcMode") in ("private", "shareable") and len(now["Binds"]) == 2  # type: ignore[arg-type]
    assert not any((now.get("PortBindings") or {}).values())  # type: ignore[attr-defined]
    assert host.running()["Config"]["User"] == ""  # type: ignore[index]
    assert host.sync() == 0 and host.audit()[-1] == event  # repaired once, no repair loop


def _log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_kill_in_the_health_gate_lets_the_sick_container_run_no_longer_than_the_gate_or_the_restart(
    host: ControllerHost, images: dict[str, str]
) -> None:
    config = host.configs["prod"]
    config.write_text(config.read_text().replace("timeout: 20", "timeout: 3"))
    sick = host.publish("sick", prod=images["unhealthy"])
    doomed = host.start_daemon(**{CRASH_HOOK: "start"})  # killed as the gate begins
    assert doomed.wait(timeout=120) == -signal.SIGKILL
    journal = json.loads((state(host) / "inflight.json").read_text())
    deadline, sick_id = datetime.fromisoformat(journal["gate_deadline"]), journal["new_id"]
    assert host.engine.inspect(sick_id)["State"]["Running"]  # type: ignore[index]
    while datetime.now(UTC) <= deadline + timedelta(seconds=1):  # the restart comes after the deadline
        threading.Event().wait(0.2)
    since = f"{datetime.now(UTC).timestamp():.6f}"
    daemon = host.start_daemon()
    try:
        wait_for(lambda: host.engine.inspect(sick_id) is None, timeout=60, what="the sick container removed")
        wait_for(lambda: host.image() == images["healthy-a"], timeout=60, what="the previous container back")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    lines = _log_lines(host.daemon_output(daemon)[0])
    started = next(line for line in lines if line["msg"] == "controller started")
    gone = next(e for e in host.engine.events(since=since) if e["id"] == sick_id and e["Action"] == "destroy")
    assert int(gone["timeNano"]) / 1e9 <= datetime.fromisoformat(started["ts"]).timestamp()  # before anything else
    late = next(line for line in lines if line["msg"].startswith("a runtime killed in its health gate ran past"))
    assert late["seconds"] > 1
    recovered = [e for e in host.audit() if e["event"] == "recovered"][-1]
    assert recovered["revision"] == sick and recovered["container"] == sick_id[:12]
    assert_sound(host)
