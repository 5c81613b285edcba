"""The pass and the service over a fake engine: deploy, refusal, rollback, drift, quarantine, crash recovery.

Real git, real ``ssh-keygen`` signatures and the real host layout; only the
container engine is the in-memory fake (``fake_engine.py``), so these run
without root or Docker.  The same paths run against a real engine in
``tests/integration``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import compose
from controller.errors import Reason, Refused, Retryable
from controller.model.config import Config, ImageSignaturesConfig, parse_config
from controller.model.desired import DesiredContainer
from controller.reconcile.context import ImageStep
from controller.records.audit import read_events
from controller.records.host_init import init_layout
from controller.records.locks import pass_lock
from controller.records.status import Status
from controller.rollout.base import checkpoint
from controller.service import EnvironmentService, PassOptions
from controller.signatures.images.cosign import load_cosign_key
from testbed import ManifestRepo, SshKey, make_ssh_key, manifest_text
from tests.cosign_signing import make_signing_key
from tests.unit.fake_engine import FakeEngine

REPOSITORY = "registry.test/dreichor/runtime"
GOOD_A = f"{REPOSITORY}@sha256:{'a' * 64}"
GOOD_B = f"{REPOSITORY}@sha256:{'b' * 64}"
CRASHING = f"{REPOSITORY}@sha256:{'c' * 64}"


class Crash(BaseException):
    """The process died at a step (a SIGKILL, as the integration tests send)."""


class FakeTime:
    """Monotonic time that advances only when the rollout sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    """One environment on a host: its manifest repo, signing key, config and engine."""

    repo: ManifestRepo
    key: SshKey
    config: Config
    engine: FakeEngine
    time: FakeTime = field(default_factory=FakeTime)

    def service(self, *, crash_at: str | None = None, image_check: ImageStep | None = None) -> EnvironmentService:
        """A fresh service, as a new process would make one (``image_check`` stands in for the registry)."""

        def at_step(step: str) -> None:
            if step == crash_at:
                raise Crash(step)
            checkpoint(step)

        return compose.environment_service(
            self.config,
            engine=lambda: self.engine,
            image_check=image_check,
            at_step=at_step,
            sleep=self.time.sleep,
            monotonic=self.time.monotonic,
        )

    def publish(self, image: str, *, signed: bool = True, **env: str) -> str:
        """Commit and push a manifest running ``image``."""
        self.repo.write("envs/prod.yaml", manifest_text("prod", image, **env))
        sha = self.repo.commit(f"run {image[-6:]}", key=self.key if signed else None)
        self.repo.push()
        return sha

    def sync(self, **options: Any) -> str:
        """One ``sync``; its result word."""
        service = self.service()
        try:
            return service.sync(PassOptions(**options)).result
        finally:
            service.close()

    def status(self) -> Status:
        status = self.service().status()
        assert status is not None
        return status

    def events(self) -> list[str]:
        return [e["event"] for e in read_events(self.config.paths.audit)]

    def image(self) -> str | None:
        running = self.engine.running()
        return running.image if running else None


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    return make_ssh_key(tmp_path_factory.mktemp("keys"), name="alice")


@pytest.fixture
def env(tmp_path: Path, key: SshKey) -> Iterator[Env]:
    repo = ManifestRepo(tmp_path / "manifests")
    init_layout(tmp_path / "opt", "prod")
    agent = tmp_path / "opt" / "prod" / "deploy-agent"
    (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
    (agent / ".env").write_text("DATABASE_URL=postgresql://h/dreichor_prod\n")
    config = parse_config(
        {
            "environment": "prod",
            "root": str(tmp_path / "opt"),
            "source": {"url": repo.url, "interval": 60},
            "trust": {"allowed_signers": "trust/allowed_signers"},
            "image": {"repository": REPOSITORY},
            "health": {"timeout": 5, "stable": 1},
        },
        base=agent,
    )
    engine = FakeEngine("prod", registry={GOOD_A, GOOD_B, CRASHING}, crashing=frozenset({CRASHING}))
    yield Env(repo=repo, key=key, config=config, engine=engine)


@pytest.fixture
def deployed(env: Env) -> Env:
    env.publish(GOOD_A)
    assert env.sync() == "applied"
    return env


def test_the_first_pass_creates_the_container_and_records_it(env: Env) -> None:
    head = env.publish(GOOD_A)
    assert env.sync() == "applied"
    status = env.status()
    assert env.image() == GOOD_A
    assert status.phase == "InSync"
    assert status.applied is not None and status.applied.revision == head
    assert status.applied.signer.startswith("alice@dreichor.test (ssh-ed25519 SHA256:")
    assert status.container.state == "running"
    assert env.events() == ["applied"]


def test_a_switched_docker_mode_is_refused_without_quarantining_the_head(env: Env) -> None:
    env.engine.swarm_service = True
    env.publish(GOOD_A)
    assert env.sync() == "refused"
    status = env.status()
    assert status.last_attempt is not None and "docker service rm dreichor-runtime-prod" in status.last_attempt.reason
    assert env.engine.names_present() == set() and status.quarantined is None
    env.engine.swarm_service = False  # the service removed: the same head deploys, no --force
    assert env.sync() == "applied" and env.image() == GOOD_A


def test_a_no_change_pass_makes_one_engine_call_and_no_audit_line(deployed: Env) -> None:
    service = deployed.service()
    service.sync()
    deployed.engine.calls.clear()
    assert service.sync().result == "unchanged"
    assert deployed.engine.calls == ["current"]
    assert deployed.events() == ["applied"]
    assert deployed.status().phase == "InSync"


def test_a_new_signed_revision_replaces_the_container_after_a_snapshot(deployed: Env) -> None:
    head = deployed.publish(GOOD_B)
    assert deployed.sync() == "applied"
    status = deployed.status()
    assert deployed.image() == GOOD_B
    assert deployed.engine.names_present() == {"dreichor-runtime-prod"}
    assert status.applied is not None and status.applied.revision == head
    assert status.last_snapshot is not None
    assert (deployed.config.paths.snapshots / f"{status.last_snapshot}.json").is_file()


def test_an_unsigned_head_is_refused_once_and_the_container_keeps_running(deployed: Env) -> None:
    deployed.publish(GOOD_B, signed=False)
    assert deployed.sync() == "refused"
    assert deployed.sync() == "refused"  # held: every pass says so; the applied revision is kept
    status = deployed.status()
    assert deployed.image() == GOOD_A
    assert status.phase == "Degraded" and status.quarantined
    assert status.last_attempt is not None and status.last_attempt.result == "refused"
    assert status.last_attempt.code == "Unsigned"
    assert deployed.events() == ["applied", "refused"]


def test_force_retries_a_quarantined_head(deployed: Env) -> None:
    deployed.publish(GOOD_B, signed=False)
    assert deployed.sync() == "refused"
    assert deployed.sync(force=True) == "refused"
    assert deployed.events() == ["applied", "refused"]  # the same reason is not logged twice


def test_a_crashing_image_is_rolled_back_and_quarantined(deployed: Env) -> None:
    deployed.publish(CRASHING)
    assert deployed.sync() == "rolled_back"
    status = deployed.status()
    assert deployed.image() == GOOD_A
    assert deployed.engine.names_present() == {"dreichor-runtime-prod"}
    assert status.phase == "Degraded" and status.quarantined
    assert status.last_attempt is not None and status.last_attempt.logs
    assert deployed.sync() == "refused"  # held since: no second rollback, no second event
    assert deployed.image() == GOOD_A
    assert deployed.events() == ["applied", "rolled_back"]


def test_a_fixed_head_lifts_the_quarantine(deployed: Env) -> None:
    deployed.publish(CRASHING)
    assert deployed.sync() == "rolled_back"
    deployed.publish(GOOD_B)
    assert deployed.sync() == "applied"
    status = deployed.status()
    assert deployed.image() == GOOD_B and status.phase == "InSync" and not status.quarantined


def test_a_removed_container_is_repaired_as_drift(deployed: Env) -> None:
    deployed.engine.remove("dreichor-runtime-prod")
    assert deployed.sync() == "applied"
    assert deployed.image() == GOOD_A
    assert deployed.events() == ["applied", "drift_repaired"]


def test_a_stopped_container_is_repaired_even_while_the_head_is_quarantined(deployed: Env) -> None:
    deployed.publish(GOOD_B, signed=False)
    assert deployed.sync() == "refused"
    deployed.engine.stop("dreichor-runtime-prod")
    assert deployed.sync() == "refused"  # repaired, and still held
    assert deployed.image() == GOOD_A
    assert deployed.status().quarantined  # the head stays quarantined
    assert deployed.events() == ["applied", "refused", "drift_repaired"]


def test_a_suspended_environment_is_left_alone_until_forced(deployed: Env) -> None:
    deployed.service().suspend()
    deployed.publish(GOOD_B)
    assert deployed.sync() == "suspended"
    assert deployed.image() == GOOD_A and deployed.status().phase == "Suspended"
    assert deployed.sync(force=True) == "applied"
    assert deployed.image() == GOOD_B


def test_a_rewritten_history_is_refused_unless_allowed(deployed: Env) -> None:
    deployed.repo.git("reset", "-q", "--hard", "HEAD~0")
    deployed.repo.git("checkout", "-q", "--orphan", "other")
    deployed.repo.write("envs/prod.yaml", manifest_text("prod", GOOD_B))
    deployed.repo.commit("unrelated", key=deployed.key)
    deployed.repo.push(force=True)
    assert deployed.sync() == "refused"
    assert deployed.status().last_attempt.code == "HistoryRewritten"  # type: ignore[union-attr]
    assert deployed.sync(allow_rewrite=True, force=True) == "applied"
    assert deployed.image() == GOOD_B
    assert deployed.events() == ["applied", "refused", "rewrite_allowed", "applied"]


def test_an_applied_revision_gone_from_the_history_is_a_rewrite_that_allow_rewrite_passes(deployed: Env) -> None:
    applied = deployed.status().applied
    assert applied is not None
    deployed.repo.git("checkout", "-q", "--orphan", "other")
    deployed.repo.write("envs/prod.yaml", manifest_text("prod", GOOD_B))
    deployed.repo.commit("unrelated", key=deployed.key)
    deployed.repo.push(force=True)
    bare = ["git", "-C", str(deployed.repo.bare)]
    subprocess.run([*bare, "reflog", "expire", "--expire=now", "--all"], check=True)
    subprocess.run([*bare, "gc", "-q", "--prune=now"], check=True)
    shutil.rmtree(deployed.config.paths.repo)  # the cache is rebuilt from a remote without the applied commit
    assert deployed.sync() == "refused"
    attempt = deployed.status().last_attempt
    assert attempt is not None and attempt.code == "HistoryRewritten"
    assert f"applied revision {applied.revision[:12]} is not in the fetched history" in attempt.reason
    assert deployed.image() == GOOD_A
    assert deployed.sync(allow_rewrite=True, force=True) == "applied"
    assert deployed.image() == GOOD_B
    assert deployed.events() == ["applied", "refused", "rewrite_allowed", "applied"]


def test_an_unreachable_engine_fails_retryably_and_reconnects(deployed: Env) -> None:
    service = deployed.service()
    closed = deployed.engine.closed
    deployed.engine.unavailable = True
    result = service.sync()
    assert result.result == "failed" and result.retryable
    assert deployed.engine.closed == closed + 1
    status = deployed.status()
    assert status.phase == "Degraded" and status.container.state == "unknown"
    deployed.engine.unavailable = False
    assert service.sync().result == "unchanged"
    assert deployed.status().phase == "InSync"


def test_an_image_check_refuses_before_anything_is_pulled(deployed: Env) -> None:
    def check(desired: object) -> str:
        raise Refused("the image carries no trusted signature", code=Reason.UNSIGNED)

    service = deployed.service(image_check=check)
    deployed.publish(GOOD_B)
    deployed.engine.calls.clear()
    assert service.sync().result == "refused"
    assert "pull" not in deployed.engine.calls and deployed.image() == GOOD_A


class RegistryCheck:
    """An image check that counts its calls; ``down`` answers like a registry that cannot be reached."""

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.down = False
        self.signer = "SHA256:cosign-key"
        self.refusal: Refused | None = None

    def __call__(self, desired: DesiredContainer) -> str:
        self.checked.append(desired.image)
        if self.down:
            raise Retryable("the registry cannot be reached", code=Reason.REGISTRY_UNAVAILABLE)
        if self.refusal is not None:
            raise self.refusal
        return self.signer


@pytest.mark.parametrize("drift", ["remove", "stop"])
def test_repairing_the_verified_image_needs_no_registry(deployed: Env, drift: str) -> None:
    check = RegistryCheck()
    service = deployed.service(image_check=check)
    deployed.publish(GOOD_B)
    assert service.sync().result == "applied" and check.checked == [GOOD_B]
    check.down = True
    getattr(deployed.engine, drift)("dreichor-runtime-prod")
    assert service.sync().result == "applied"
    assert deployed.image() == GOOD_B and check.checked == [GOOD_B]
    applied = deployed.status().applied
    assert applied is not None and applied.image_signer == "SHA256:cosign-key"
    assert deployed.events()[-1] == "drift_repaired"


def test_a_new_image_is_checked_even_after_a_verified_one(deployed: Env) -> None:
    check = RegistryCheck()
    service = deployed.service(image_check=check)
    deployed.publish(GOOD_B)
    assert service.sync().result == "applied"
    check.down = True
    deployed.publish(CRASHING)
    result = service.sync()
    assert result.result == "failed" and result.retryable and check.checked == [GOOD_B, CRASHING]
    assert deployed.image() == GOOD_B


def test_an_image_applied_without_a_verified_signature_is_checked_when_repaired(deployed: Env) -> None:
    check = RegistryCheck()
    service = deployed.service(image_check=check)
    check.down = True
    deployed.engine.remove("dreichor-runtime-prod")
    assert service.sync().result == "failed" and check.checked == [GOOD_A]


def _trust_image_keys(env: Env, key: Path) -> None:
    image = env.config.image.model_copy(update={"signatures": ImageSignaturesConfig(keys=[str(key)])})
    env.config = env.config.model_copy(update={"image": image})


def test_a_repair_checks_the_image_again_after_its_signing_key_was_rotated_out(deployed: Env, tmp_path: Path) -> None:
    old, new = (make_signing_key(tmp_path, name=name) for name in ("old", "new"))
    _trust_image_keys(deployed, old.public_path)
    check = RegistryCheck()
    service = deployed.service(image_check=check)
    check.signer = load_cosign_key(old.public_path).fingerprint
    deployed.publish(GOOD_B)
    assert service.sync().result == "applied"
    deployed.engine.remove("dreichor-runtime-prod")
    assert service.sync().result == "applied" and check.checked == [GOOD_B]  # the same key: no new check
    _trust_image_keys(deployed, new.public_path)
    check.down, service = True, deployed.service(image_check=check)
    deployed.engine.remove("dreichor-runtime-prod")
    assert service.sync().result == "failed" and check.checked == [GOOD_B, GOOD_B]


def test_an_image_signed_after_the_merge_is_deployed_by_the_next_pass(deployed: Env) -> None:
    check = RegistryCheck()
    service = deployed.service(image_check=check)
    unsigned = Refused("the image carries no signature", code=Reason.IMAGE_UNSIGNED)
    check.refusal = unsigned
    deployed.publish(GOOD_B)
    assert service.sync().result == "refused" and deployed.image() == GOOD_A
    assert service.sync().result == "refused" and deployed.events() == ["applied", "refused"]  # told once
    check.refusal = None  # the image was signed
    assert service.sync().result == "applied" and deployed.image() == GOOD_B
    assert check.checked == [GOOD_B] * 3


def test_adding_the_cosign_key_lifts_the_quarantine_of_an_untrusted_image_signature(
    deployed: Env, tmp_path: Path
) -> None:
    key = make_signing_key(tmp_path, name="cosign")
    _trust_image_keys(deployed, key.public_path)
    check = RegistryCheck()
    service = deployed.service(image_check=check)
    check.refusal = Refused("signed by an unknown key", code=Reason.UNTRUSTED_IMAGE_SIGNATURE)
    deployed.publish(GOOD_B)
    assert service.sync().result == "refused"
    assert service.sync().result == "refused" and check.checked == [GOOD_B]  # held: not asked again
    key.public_path.write_bytes(make_signing_key(tmp_path / "other", name="cosign").public_path.read_bytes())
    check.refusal = None
    assert service.sync().result == "applied" and deployed.image() == GOOD_B


@pytest.mark.parametrize("fix", ["identity", "trusted_root"])
def test_fixing_the_keyless_identity_or_root_lifts_the_quarantine_of_an_untrusted_image_signature(
    deployed: Env, tmp_path: Path, fix: str
) -> None:
    root = tmp_path / "trusted_root.json"
    root.write_text('{"pinned": 1}')
    issuer = "https://token.actions.githubusercontent.com"
    keyless = {"trusted_root": str(root), "identities": [{"issuer": issuer, "subject": "https://github.com/o/r/a"}]}
    signatures = ImageSignaturesConfig.model_validate({"keyless": keyless})
    deployed.config = deployed.config.model_copy(
        update={"image": deployed.config.image.model_copy(update={"signatures": signatures})}
    )
    check = RegistryCheck()
    check.refusal = Refused("not a configured keyless identity", code=Reason.UNTRUSTED_IMAGE_SIGNATURE)
    deployed.publish(GOOD_B)
    assert deployed.service(image_check=check).sync().result == "refused"
    assert deployed.service(image_check=check).sync().result == "refused" and check.checked == [GOOD_B]
    if fix == "identity":  # the operator names the workflow that really signs
        keyless["identities"] = [{"issuer": issuer, "subject": "https://github.com/o/r/b"}]
        signatures = ImageSignaturesConfig.model_validate({"keyless": keyless})
        image = deployed.config.image.model_copy(update={"signatures": signatures})
        deployed.config = deployed.config.model_copy(update={"image": image})
    else:  # a refreshed trusted root
        root.write_text('{"pinned": 2}')
    check.refusal = None
    assert deployed.service(image_check=check).sync().result == "applied" and deployed.image() == GOOD_B


def test_audit_hooks_hear_every_event(deployed: Env) -> None:
    heard: list[str] = []
    service = deployed.service()
    service.audit_hooks.append(lambda event: heard.append(event["event"]))
    service.suspend()
    service.resume()
    deployed.publish(CRASHING)
    service.sync()
    assert heard == ["suspended", "resumed", "rolled_back"]


def test_break_glass_rollback_restores_the_snapshot_and_suspends(deployed: Env) -> None:
    deployed.publish(GOOD_B)
    assert deployed.sync() == "applied"
    snapshot = deployed.service().rollback()
    status = deployed.status()
    assert snapshot.image == GOOD_A and deployed.image() == GOOD_A
    assert status.phase == "Suspended" and status.suspended
    assert status.applied is not None and status.applied.signer == "break-glass rollback"
    assert deployed.events()[-2:] == ["suspended", "rollback"]


@pytest.mark.parametrize("step", ["create", "rename", "stop"])  # a kill at "start" is gated on (below)
def test_a_crash_mid_swap_is_undone_then_the_change_applied(deployed: Env, step: str) -> None:
    deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at=step).sync()
    assert deployed.config.paths.journal.exists()
    assert deployed.sync() == "applied"
    assert deployed.image() == GOOD_B
    assert deployed.engine.names_present() == {"dreichor-runtime-prod"}
    assert deployed.events()[-2:] == ["recovered", "applied"]
    assert not deployed.config.paths.journal.exists()


def test_a_crash_after_the_health_gate_finishes_the_swap(deployed: Env) -> None:
    head = deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="health").sync()
    assert deployed.sync() == "unchanged"
    status = deployed.status()
    assert deployed.image() == GOOD_B and deployed.engine.names_present() == {"dreichor-runtime-prod"}
    assert status.applied is not None and status.applied.revision == head
    assert deployed.events()[-2:] == ["recovered", "applied"]


@pytest.mark.parametrize("step", ["fetch", "verify", "validate", "pull", "snapshot"])
def test_a_crash_before_the_swap_leaves_the_container_and_needs_no_recovery(deployed: Env, step: str) -> None:
    deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at=step).sync()
    assert deployed.image() == GOOD_A
    assert deployed.sync() == "applied"
    assert deployed.image() == GOOD_B
    assert "recovered" not in deployed.events()


def test_the_daemon_start_recovers_and_records_it(deployed: Env) -> None:
    deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="stop").sync()
    assert deployed.service().recover()
    assert deployed.image() == GOOD_A
    assert deployed.events()[-1] == "recovered"


def test_recovery_with_the_engine_unreachable_is_a_recorded_retryable_failure(deployed: Env) -> None:
    deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="stop").sync()
    deployed.engine.unavailable = True
    service = deployed.service()
    result = service.sync()
    assert result.result == "failed" and result.retryable and str(result.code) == "EngineUnavailable"
    status = deployed.status()
    assert status.phase == "Degraded" and status.last_attempt is not None
    assert "Docker Engine at /var/run/docker.sock is unreachable" in status.last_attempt.reason
    deployed.engine.unavailable = False
    assert service.sync().result == "applied" and deployed.image() == GOOD_B
    assert deployed.events()[-2:] == ["recovered", "applied"]


def test_recovery_records_inside_the_pass_lock(deployed: Env) -> None:
    deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="stop").sync()
    service = deployed.service()
    held: list[bool] = []

    def hook(event: dict[str, Any]) -> None:
        fd = os.open(deployed.config.paths.pass_lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)

    service.audit_hooks.append(hook)
    assert service.recover()
    assert held == [True]


def test_verify_fetches_with_the_credentials_from_dotenv(env: Env) -> None:
    env.config.paths.dotenv.write_text("DATABASE_URL=postgresql://h/dreichor_prod\nGIT_TOKEN=s3cret\n")
    service = env.service()
    assert service.source.env.get("GIT_CONFIG_KEY_0") == "http.extraHeader"
    head = env.publish(GOOD_A)
    answer = service.verify()
    assert answer.revision == head and answer.verdict is not None
    assert answer.verdict.signer.startswith("alice@dreichor.test (ssh-ed25519 SHA256:")


@pytest.mark.parametrize("operation", ["suspend", "resume"])
def test_suspend_and_resume_wait_for_a_pass_in_progress(deployed: Env, operation: str) -> None:
    if operation == "resume":
        deployed.service().suspend()
    done = threading.Event()

    def run() -> None:
        getattr(deployed.service(), operation)()
        done.set()

    with pass_lock(deployed.config.paths.pass_lock):  # a pass holds the lock
        worker = threading.Thread(target=run)
        worker.start()
        assert not done.wait(0.5)
        assert deployed.config.paths.suspended_marker.exists() == (operation == "resume")
    worker.join(10)
    assert done.is_set()
    assert deployed.config.paths.suspended_marker.exists() == (operation == "suspend")


def test_the_watermark_follows_every_applied_revision(deployed: Env) -> None:
    watermark = deployed.config.paths.watermark
    assert watermark.read_text().strip() == deployed.repo.head()
    head = deployed.publish(GOOD_B)
    assert deployed.sync() == "applied"
    assert watermark.read_text().strip() == head


@pytest.mark.parametrize("lagging", ["watermark", "status", "watermark and status"])
def test_a_force_push_back_to_what_a_lagging_record_names_is_refused(deployed: Env, lagging: str) -> None:
    older = deployed.repo.head()
    newer = deployed.publish(GOOD_B)
    assert deployed.sync() == "applied"
    paths = deployed.config.paths
    if "watermark" in lagging:  # a failed write, or a backup restored over it
        paths.watermark.write_text(older + "\n")
    if "status" in lagging:
        paths.status.write_text(paths.status.read_text().replace(newer, older))
    deployed.repo.git("reset", "-q", "--hard", older)
    deployed.repo.push(force=True)  # back to the older signed commit
    assert deployed.sync() == "refused"
    status = deployed.status()
    assert status.last_attempt is not None and status.last_attempt.code == "HistoryRewritten"
    assert newer[:12] in status.last_attempt.reason
    assert deployed.image() == GOOD_B


def test_a_watermark_that_cannot_be_written_fails_the_pass_and_the_next_pass_writes_it(deployed: Env) -> None:
    watermark = deployed.config.paths.watermark
    older = watermark.read_text().strip()
    watermark.unlink()
    watermark.mkdir()  # a write can only fail
    (watermark / "x").write_text("")
    head = deployed.publish(GOOD_B)
    service = deployed.service()
    try:
        result = service.sync()
    finally:
        service.close()
    assert (result.result, result.code) == ("failed", Reason.STATE_IO) and "watermark" in result.reason
    assert deployed.status().last_attempt is not None and deployed.status().last_attempt.result == "failed"
    shutil.rmtree(watermark)
    watermark.write_text(older + "\n")
    deployed.sync()  # the running container is recorded as applied; the watermark follows
    applied = deployed.status().applied
    assert applied is not None and applied.revision == head
    assert watermark.read_text().strip() == head


def test_the_audit_anchor_follows_every_append(deployed: Env) -> None:
    service = deployed.service()
    service.suspend()
    service.resume()
    anchor = deployed.status().audit
    assert anchor is not None and anchor.events == len(deployed.events()) == 3
    assert service.history(verify=True).broken is None


def test_a_rolled_back_change_under_another_commit_id_stays_quarantined(deployed: Env) -> None:
    deployed.publish(CRASHING)
    assert deployed.sync() == "rolled_back"
    deployed.publish(CRASHING)  # the same content, a new (empty) commit id
    deployed.engine.calls.clear()
    assert deployed.sync() == "refused"  # held
    assert deployed.image() == GOOD_A and deployed.events() == ["applied", "rolled_back"]
    assert not {"stop", "start", "create"} & set(deployed.engine.calls)
    deployed.publish(CRASHING, LOG_LEVEL="debug")  # a different change is tried
    assert deployed.sync() == "rolled_back"


def test_a_damaged_status_file_stops_passes_until_the_copy_is_dealt_with(deployed: Env) -> None:
    status = deployed.config.paths.status
    status.write_text("{")
    deployed.publish(GOOD_B)
    assert deployed.sync() == "refused"
    assert deployed.image() == GOOD_A
    copies = list(status.parent.glob("status.json.damaged-*"))
    assert len(copies) == 1 and copies[0].read_text() == "{"
    assert deployed.service().plan().result == "refused"
    copies[0].unlink()
    assert deployed.sync() == "applied" and deployed.image() == GOOD_B


def test_notice_hooks_hear_progressing_before_the_apply_and_unchanged_only_at_the_head(deployed: Env) -> None:
    heard: list[tuple[str, str | None]] = []
    service = deployed.service()
    service.audit_hooks.append(lambda event: heard.append((event["event"], event.get("log"))))
    service.notice_hooks.append(lambda event: heard.append((event["event"], event.get("revision"))))
    head = deployed.publish(GOOD_B)
    service.sync()
    service.sync()
    assert heard == [("progressing", head), ("applied", None), ("unchanged", head)]
    heard.clear()
    crashing = deployed.publish(CRASHING)
    service.sync()
    service.sync()  # quarantined: the applied revision runs on, nothing is said about it
    assert [kind for kind, _ in heard] == ["progressing", "rolled_back"]
    assert heard[0][1] == crashing and heard[1][1]  # the rollback carries the failed container's log


def test_a_notice_hook_hears_stale_once_when_the_source_becomes_stale(deployed: Env) -> None:
    heard: list[str] = []
    service = deployed.service()
    service.notice_hooks.append(lambda event: heard.append(f"{event['event']}:{event.get('code', '')}"))
    shutil.rmtree(deployed.repo.bare)
    service.clock = lambda: datetime.now(UTC) + timedelta(days=1)
    service.sync()
    service.sync()
    assert heard == ["stale:FetchFailed"]


def test_each_swap_step_is_logged_with_its_duration(deployed: Env, caplog: pytest.LogCaptureFixture) -> None:
    deployed.publish(GOOD_B)
    with caplog.at_level(logging.INFO, logger="dreichor.rollout"):
        assert deployed.sync() == "applied"
    steps = {r.step: r for r in caplog.records if hasattr(r, "step")}  # type: ignore[attr-defined]
    assert list(steps) == ["pull", "snapshot", "create", "stop", "start", "health"]
    assert all(isinstance(r.seconds, float) and r.levelno == logging.INFO for r in steps.values())  # type: ignore[attr-defined]
    assert steps["pull"].bytes == 1024  # type: ignore[attr-defined]


def test_a_failed_health_gate_is_logged_at_warning_with_the_rollback(
    deployed: Env, caplog: pytest.LogCaptureFixture
) -> None:
    deployed.publish(CRASHING)
    with caplog.at_level(logging.INFO, logger="dreichor.rollout"):
        assert deployed.sync() == "rolled_back"
    failed = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "step", None) for r in failed] == ["health"]
    assert "rollback" in [getattr(r, "step", None) for r in caplog.records]


# -- break-glass rollback takes only this environment's snapshots, re-judged by the contract --------


def _newest_snapshot_file(env: Env) -> Path:
    files = sorted(env.config.paths.snapshots.glob("*.json"))
    assert files
    return files[-1]


def _rewrite_prior(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data["prior"] = {**data["prior"], **changes}
    path.write_text(json.dumps(data))


@pytest.fixture
def changed(deployed: Env) -> Env:
    """prod ran GOOD_A, now runs GOOD_B: the newest snapshot holds GOOD_A."""
    deployed.publish(GOOD_B)
    assert deployed.sync() == "applied"
    return deployed


def _refused_rollback(env: Env, snapshot_id: str | None, match: str) -> None:
    events = env.events()
    with pytest.raises(Refused, match=match):
        env.service().rollback(snapshot_id)
    assert env.image() == GOOD_B and not env.config.paths.suspended_marker.exists()
    assert env.events() == events


@pytest.mark.parametrize(
    "name",
    [
        "../../../../dev/deploy-agent/state/snapshots/{id}",
        "/{folder}/{id}",
        "{id}.json",
        "{id}/../{id}",
        "",
    ],
)
def test_rollback_takes_only_a_snapshot_id_not_a_path(changed: Env, name: str) -> None:
    snapshot = _newest_snapshot_file(changed)
    dev = changed.config.paths.root / "dev" / "deploy-agent" / "state" / "snapshots"
    dev.mkdir(parents=True)
    shutil.copy(snapshot, dev / snapshot.name)
    bad = name.format(id=snapshot.stem, folder=str(dev).lstrip("/")) or "x"
    _refused_rollback(changed, bad, "is not a snapshot id")


def test_rollback_refuses_a_snapshot_of_another_environment(changed: Env) -> None:
    path = _newest_snapshot_file(changed)
    data = json.loads(path.read_text())
    data["environment"] = "dev"
    path.write_text(json.dumps(data))
    _refused_rollback(changed, path.stem, "is of environment 'dev', not 'prod'")
    _refused_rollback(changed, None, "no snapshot of a prior container")


def test_rollback_takes_database_url_from_the_current_dotenv(changed: Env) -> None:
    path = _newest_snapshot_file(changed)
    _rewrite_prior(path, env={"DATABASE_URL": "postgresql://h/dreichor_dev", "MODE": "paper"})
    changed.service().rollback(path.stem)
    running = changed.engine.running()
    assert running is not None and running.image == GOOD_A
    assert running.env == {"DATABASE_URL": "postgresql://h/dreichor_prod", "MODE": "paper"}


@pytest.mark.parametrize(
    ("prior", "match"),
    [
        ({"labels": {"io.dreichor.environment": "dev"}}, "label io.dreichor.environment"),
        ({"env": {"MODE": "paper\nlive"}}, "control character"),
        ({"env": {"BAD-NAME": "x"}}, "not a valid variable name"),
        ({"image": f"registry.test/other/runtime@sha256:{'a' * 64}"}, "not the configured"),
        ({"image": "dreichor/keep-dev:" + "a" * 64}, "not the configured"),
        ({"image": f"{REPOSITORY}:latest"}, "pinned by digest"),
    ],
)
def test_rollback_rechecks_the_snapshot_against_the_contract(changed: Env, prior: dict[str, Any], match: str) -> None:
    path = _newest_snapshot_file(changed)
    _rewrite_prior(path, **prior)
    _refused_rollback(changed, path.stem, match)


def test_rollback_of_a_kept_image_restores_it_by_digest(changed: Env) -> None:
    path = _newest_snapshot_file(changed)
    _rewrite_prior(path, image="dreichor/keep-prod:" + "a" * 64)
    changed.service().rollback(path.stem)
    running = changed.engine.running()
    assert running is not None and running.image.endswith("a" * 64)


def test_rollback_refused_by_a_bad_dotenv_says_so(changed: Env) -> None:
    changed.config.paths.dotenv.write_text("DATABASE_URL=postgresql://h/dreichor_dev\n")
    _refused_rollback(changed, _newest_snapshot_file(changed).stem, "dreichor_dev")


def test_a_refused_rollback_leaves_the_environment_unsuspended(changed: Env) -> None:
    path = _newest_snapshot_file(changed)
    data = json.loads(path.read_text())
    data["prior"] = None  # recorded no container: the rollout refuses it
    path.write_text(json.dumps(data))
    _refused_rollback(changed, path.stem, "recorded no container")
    assert not changed.status().suspended and changed.status().phase == "InSync"


def test_a_rollback_whose_swap_fails_leaves_the_environment_unsuspended(changed: Env) -> None:
    changed.engine.registry.discard(GOOD_A)
    changed.engine.local.clear()
    with pytest.raises(Refused, match="does not exist in the registry"):
        changed.service().rollback()
    assert changed.image() == GOOD_B and not changed.config.paths.suspended_marker.exists()
    assert "suspended" not in changed.events()


def test_a_kill_in_the_health_gate_before_its_deadline_is_gated_on_and_finished(deployed: Env) -> None:
    head = deployed.publish(GOOD_B)
    with pytest.raises(Crash):
        deployed.service(crash_at="start").sync()  # killed as the gate began; the restart comes at once
    old = next(c for c in deployed.engine.containers.values() if c.image == GOOD_A)
    assert deployed.sync() == "unchanged"
    assert deployed.image() == GOOD_B and deployed.engine.names_present() == {"dreichor-runtime-prod"}
    assert old.id not in deployed.engine.containers  # finished: the old one was not started again
    status = deployed.status()
    assert status.applied is not None and status.applied.revision == head
    recovered = [e for e in read_events(deployed.config.paths.audit) if e["event"] == "recovered"][-1]
    assert "passed its health gate after the restart" in recovered["reason"] and recovered["revision"] == head


def test_a_sick_container_killed_in_its_gate_is_undone_when_the_rest_of_its_gate_fails(deployed: Env) -> None:
    deployed.publish(CRASHING)
    with pytest.raises(Crash):
        deployed.service(crash_at="start").sync()
    service = deployed.service()
    assert service.recover() is not None
    assert deployed.image() == GOOD_A
