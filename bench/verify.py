"""Verifying one signed commit in process, against ``git verify-commit`` of the same commit.

Two rows: an ed25519 SSH signature made here, and a real GitHub web-flow merge
(RSA 4096, from ``tests/data/real-commits``) against git through gpg.
Run: ``.venv/bin/python -m bench.verify``.  Goal: at most 0.1x git's time
(git spawns ssh-keygen or gpg per verification; the controller does not).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Result, median_seconds, report
from controller.signatures.commits.policy import TrustPolicy
from testbed import ManifestRepo, make_ssh_key

REAL_COMMITS = Path(__file__).resolve().parents[1] / "tests" / "data" / "real-commits"


def measure(runs: int = 30) -> Result:
    """Median of both verifications of one commit."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        key = make_ssh_key(base / "keys", name="bench")
        signers = base / "allowed_signers"
        signers.write_text(key.allowed_signers_line + "\n")
        repo = ManifestRepo(base / "repo")
        repo.write("envs/prod.yaml", "environment: prod\n")
        sha = repo.commit("deploy", key=key)
        raw = repo.raw_commit(sha)
        policy = TrustPolicy.load(allowed_signers=signers, openpgp_keys=None, revoked_keys=None)
        now = datetime.now(UTC)
        git_args = ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", sha]

        def ours() -> None:
            policy.verify_raw_commit(raw, now=now)

        def gits() -> None:
            subprocess.run(git_args, cwd=repo.work, capture_output=True, check=True)

        figure = median_seconds(ours, runs=runs * 10)
        baseline = median_seconds(gits, runs=runs)
    return Result("signature verify (in-process vs git verify-commit)", figure * 1e3, baseline * 1e3, "ms", 0.1)


def measure_webflow(runs: int = 30) -> Result:
    """Median of both verifications of a real web-flow (RSA 4096) merge commit."""
    commit = sorted(REAL_COMMITS.glob("webflow-current-*.commit"))[0]
    keys = REAL_COMMITS / "github-web-flow.asc"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo = ManifestRepo(base / "repo")
        gnupg = base / "gnupg"
        gnupg.mkdir(mode=0o700)
        subprocess.run(
            ["gpg", "--homedir", str(gnupg), "--batch", "--import", str(keys)], capture_output=True, check=True
        )
        sha = repo.git("hash-object", "-t", "commit", "-w", str(commit)).strip()
        raw = repo.raw_commit(sha)
        signers = base / "allowed_signers"
        signers.write_text("")
        policy = TrustPolicy.load(allowed_signers=signers, openpgp_keys=keys, revoked_keys=None)
        now = datetime.now(UTC)
        env = {"GNUPGHOME": str(gnupg), "PATH": "/usr/bin:/bin"}

        def ours() -> None:
            policy.verify_raw_commit(raw, now=now)

        def gits() -> None:
            subprocess.run(["git", "verify-commit", sha], cwd=repo.work, env=env, capture_output=True, check=True)

        figure = median_seconds(ours, runs=runs * 10)
        baseline = median_seconds(gits, runs=runs)
    return Result("signature verify, web-flow RSA 4096 (vs git verify-commit)", figure * 1e3, baseline * 1e3, "ms", 0.1)


def main() -> int:
    """Measure and print both rows."""
    report(measure())
    return report(measure_webflow())


if __name__ == "__main__":
    sys.exit(main())
