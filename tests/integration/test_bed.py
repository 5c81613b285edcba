"""The test bed itself: the private engine runs a registry image by digest with the contract's mounts, and cleans up."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from controller.model.config import HostPaths
from controller.model.desired import desired_from_bytes
from testbed import LocalRegistry, ManifestRepo, PrivateDocker, SshKey, manifest_text, mounts_under
from testbed.swarm import PrivateSwarm


def test_a_contract_container_runs_from_the_registry_by_digest(
    docker_engine: PrivateDocker, registry: LocalRegistry, images: dict[str, str], tmp_path: Path
) -> None:
    paths = HostPaths(tmp_path, "dev")
    for folder in (paths.audit_events, paths.runtime_snapshots):
        folder.mkdir(parents=True)
    desired = desired_from_bytes(
        manifest_text("dev", images["healthy-a"]).encode(),
        environment="dev",
        repository=registry.repository,
        paths=paths,
        dotenv={"DATABASE_URL": "postgresql://127.0.0.1/dreichor_dev"},
    )
    mounts = [arg for m in desired.mounts for arg in ("--volume", f"{m.source}:{m.target}")]
    docker_engine.cli("run", "--detach", "--init", "--name", "bed-proof", *mounts, desired.image)
    try:
        docker_engine.cli("exec", "bed-proof", "/bin/busybox", "touch", "/var/lib/dreichor/audit-events/proof")
        inspect = docker_engine.inspect("bed-proof")
        assert inspect is not None
        assert inspect["Config"]["Image"] == desired.image  # type: ignore[index]
        binds = sorted((m["Source"], m["Destination"]) for m in inspect["Mounts"])  # type: ignore[index, attr-defined]
        assert binds == sorted((m.source, m.target) for m in desired.mounts)
        assert (paths.audit_events / "proof").exists()
    finally:
        docker_engine.cli("rm", "--force", "bed-proof")


def test_the_images_have_distinct_digests_from_the_local_registry(
    images: dict[str, str], registry: LocalRegistry
) -> None:
    assert all(ref.startswith(f"{registry.repository}@sha256:") for ref in images.values())
    assert len(set(images.values())) == len(images)


@pytest.mark.parametrize("signer", ["ssh", "gpg"])
def test_the_manifest_repo_signs_commits_through_real_git(
    signer: str, manifest_repo: ManifestRepo, ssh_key: SshKey, gpg_key: object, tmp_path: Path
) -> None:
    key = ssh_key if signer == "ssh" else gpg_key
    manifest_repo.write("envs/dev.yaml", "environment: dev\n")
    sha = manifest_repo.commit("first", key=key)  # type: ignore[arg-type]
    manifest_repo.push()
    raw = manifest_repo.git("cat-file", "commit", sha)
    marker = "-----BEGIN SSH SIGNATURE-----" if signer == "ssh" else "-----BEGIN PGP SIGNATURE-----"
    assert marker in raw
    if signer == "ssh":
        signers = tmp_path / "allowed_signers"
        signers.write_text(ssh_key.allowed_signers_line + "\n")
        out = manifest_repo.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", "--raw", sha)
        assert out is not None
    remote_head = manifest_repo.git("ls-remote", manifest_repo.url, "refs/heads/main").split()[0]
    assert remote_head == sha


def test_a_swarm_engine_that_died_leaves_no_mount_once_stopped_and_its_folder_can_be_removed(
    docker_engine: PrivateDocker,
) -> None:
    # The swarm's ingress sandboxes are nsfs mounts under the engine's exec root (exec/netns/1-…);
    # an engine that dies cannot unmount them, and removing the folder then fails with EBUSY.
    base = Path(tempfile.mkdtemp(prefix="dreichor-bed-"))
    swarm = PrivateSwarm(base / "swarm")
    try:
        swarm.start()
        swarm.engine.kill(signal.SIGKILL)
        assert any("/exec/netns/" in point for point in mounts_under(base)), "nothing left: the test proves nothing"
    finally:
        swarm.stop()
    assert mounts_under(base) == []
    shutil.rmtree(base)
