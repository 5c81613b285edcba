"""Verifying a cosign image signature against the registry, against ``git verify-commit`` of one commit.

Run: ``.venv/bin/python -m bench.image_verify`` (from the repository root).  The figure includes
every registry round trip on 127.0.0.1 (signature manifest, payload blob, the bundle lookups that
find nothing) and the ECDSA check; the baseline is git verifying one SSH-signed commit, the check
that already stands before every pull.  Goal: at most 1x, so the image check at most doubles it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Result, median_seconds, report
from controller.signatures.images.cosign import load_cosign_key
from controller.signatures.images.verifier import verify_image
from controller.signatures.registry import RegistryClient
from testbed import LocalRegistry, ManifestRepo, make_ssh_key
from tests.cosign_signing import RegistryWriter, make_signing_key, sign_classic

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def push_tiny_image(writer: RegistryWriter, repository: str) -> str:
    """A one-layer image pushed through the API; its pinned reference."""
    layer_digest = writer.put_blob(repository, b"bench layer")
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    config_digest = writer.put_blob(repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": 11, "digest": layer_digest}],
    }
    data = json.dumps(manifest).encode()
    digest = writer.put_manifest(repository, "bench", data, media_type=DOCKER_MANIFEST)
    return f"{writer.host}/{repository}@{digest}"


def measure(runs: int = 30) -> Result:
    """Median of one image verification and of one ``git verify-commit``."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        registry = LocalRegistry(base / "registry").start()
        try:
            writer = RegistryWriter(registry.host)
            pinned = push_tiny_image(writer, "bench/runtime")
            signing = make_signing_key(base / "cosign")
            sign_classic(writer, pinned, signing)
            keys = [load_cosign_key(signing.public_path)]

            ssh = make_ssh_key(base / "keys", name="bench")
            signers = base / "allowed_signers"
            signers.write_text(ssh.allowed_signers_line + "\n")
            repo = ManifestRepo(base / "repo")
            repo.write("envs/prod.yaml", "environment: prod\n")
            sha = repo.commit("deploy", key=ssh)
            git_args = ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", sha]

            def ours() -> None:
                verify_image(pinned, keys=keys, registry=RegistryClient(registry.host))

            def gits() -> None:
                subprocess.run(git_args, cwd=repo.work, capture_output=True, check=True)

            figure = median_seconds(ours, runs=runs)
            baseline = median_seconds(gits, runs=runs)
        finally:
            registry.stop()
    return Result(
        "image signature verify (registry on 127.0.0.1 vs git verify-commit)", figure * 1e3, baseline * 1e3, "ms", 1.0
    )


def main() -> int:
    """Measure and print."""
    return report(measure())


if __name__ == "__main__":
    sys.exit(main())
