"""Real signed commits from a public repository, verified through the CLI as a user would.

The raw commit objects and keys live in ``tests/data/real-commits``, with the
verdict each must get in ``tests/data/SOURCES.md``: GitHub's
web-flow merges (RSA 4096, non-minimal MPIs), merges by web-flow's expired
key, a maintainer's SSH signatures, and a stranger's OpenPGP key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.model.config import load_config
from testbed import ManifestRepo

DATA = Path(__file__).resolve().parents[1] / "data" / "real-commits"
CURRENT = "968479A1AFF927E37D1A566BB5690EEEBB952194 GitHub <noreply@github.com> (RSA 4096)"


def _files(prefix: str) -> list[Path]:
    """The commits of one verdict; none is a collection error, never a silently shorter run."""
    found = sorted(DATA.glob(f"{prefix}-*.commit"))
    if not found:
        raise FileNotFoundError(f"no {prefix}-*.commit in {DATA}")
    return found


class RealHost:
    """A controller config whose git cache holds the real commit objects."""

    def __init__(self, tmp_path: Path, repo: ManifestRepo) -> None:
        self.config = tmp_path / "controller.yaml"
        self.config.write_text(
            f"environment: prod\nroot: {tmp_path / 'root'}\nsource: {{url: '{repo.url}'}}\n"
            f"trust: {{allowed_signers: {DATA / 'allowed_signers'}, openpgp_keys: {DATA / 'github-web-flow.asc'},"
            " mode: head}\n"
        )
        repo.write("envs/prod.yaml", "environment: prod\n")
        repo.commit("init")
        repo.push()
        self.run("verify")  # the first fetch creates the controller's git cache (the head is unsigned)
        self.cache = load_config(self.config).paths.repo

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``dreichor-controller ARGS --config …``, the installed command."""
        command = Path(sys.executable).with_name("dreichor-controller")
        assert command.exists(), "dreichor-controller is not installed beside this Python"
        return subprocess.run(
            [str(command), *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def load(self, commit: Path) -> str:
        """``git hash-object -t commit -w``: the raw object into the cache; git's sha must be the file's."""
        sha = subprocess.run(
            ["git", "--git-dir", str(self.cache), "hash-object", "-t", "commit", "-w", str(commit)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert sha.startswith(commit.stem.rsplit("-", 1)[1])
        return sha


@pytest.fixture
def host(tmp_path: Path, manifest_repo: ManifestRepo) -> RealHost:
    assert DATA.is_dir(), f"the real commits are missing: {DATA}"
    return RealHost(tmp_path, manifest_repo)


def _ssh_fingerprint() -> str:
    """The maintainer key's fingerprint as ``ssh-keygen -l`` prints it."""
    key = " ".join((DATA / "allowed_signers").read_text().split()[-2:])
    out = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=key, capture_output=True, text=True, check=True).stdout
    return out.split()[1]


@pytest.mark.parametrize("commit", _files("webflow-current"), ids=lambda p: p.stem)
def test_a_github_web_flow_merge_is_trusted(host: RealHost, commit: Path) -> None:
    proc = host.run("verify", host.load(commit))
    assert (proc.returncode, proc.stdout.strip()) == (0, f"trusted: {CURRENT}")


@pytest.mark.parametrize("commit", _files("webflow-expired"), ids=lambda p: p.stem)
def test_a_merge_by_the_expired_web_flow_key_is_refused_because_it_expired(host: RealHost, commit: Path) -> None:
    proc = host.run("verify", host.load(commit))
    assert proc.returncode == 3
    assert "5DE3E0509C47EA3CF04A42D34AEE18F83AFDEB23 expired at 2024-01-16" in proc.stderr + proc.stdout
    assert "malformed" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("commit", _files("ssh-maintainer"), ids=lambda p: p.stem)
def test_a_maintainers_ssh_signature_is_trusted(host: RealHost, commit: Path) -> None:
    proc = host.run("verify", host.load(commit))
    assert (proc.returncode, proc.stdout.strip()) == (0, f"trusted: hs@ox.cx (ssh-ed25519 {_ssh_fingerprint()})")


@pytest.mark.parametrize("commit", _files("openpgp-other"), ids=lambda p: p.stem)
def test_an_unknown_openpgp_key_is_refused_as_untrusted(host: RealHost, commit: Path) -> None:
    proc = host.run("verify", host.load(commit))
    assert proc.returncode == 3
    assert "is not by a trusted key" in proc.stderr + proc.stdout


def test_a_changed_signature_value_still_fails(host: RealHost) -> None:
    raw = _files("webflow-current")[0].read_bytes()
    lines = raw.split(b"\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(b" -----END PGP")) - 3
    lines[index] = lines[index][:10] + (b"A" if lines[index][10:11] != b"A" else b"B") + lines[index][11:]
    forged = host.cache.parent / "forged.commit"
    forged.write_bytes(b"\n".join(lines))
    sha = subprocess.run(
        ["git", "--git-dir", str(host.cache), "hash-object", "-t", "commit", "-w", str(forged)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = host.run("verify", sha)
    assert proc.returncode == 3
    assert "does not verify against the trusted keys" in proc.stderr
