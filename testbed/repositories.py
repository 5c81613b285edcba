"""Manifest repositories: a bare remote and a working clone with signed commits, and manifest text."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from testbed.common import _run
from testbed.keys import GpgKey, SshKey


class ManifestRepo:
    """A bare 'remote' manifest repository plus a work clone that commits through real git."""

    def __init__(self, base: Path, *, branch: str = "main") -> None:
        self.base = base
        self.bare = base / "remote.git"
        self.work = base / "work"
        self.branch = branch
        self.url = f"file://{self.bare}"
        self._env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": str(base / "gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Dreichor Test",
            "GIT_AUTHOR_EMAIL": "test@dreichor.test",
            "GIT_COMMITTER_NAME": "Dreichor Test",
            "GIT_COMMITTER_EMAIL": "test@dreichor.test",
        }
        base.mkdir(parents=True, exist_ok=True)
        (base / "gitconfig").write_text("")
        _run(["git", "init", "-q", "--bare", "-b", branch, str(self.bare)], env=self._env)
        _run(["git", "init", "-q", "-b", branch, str(self.work)], env=self._env)
        self.git("remote", "add", "origin", self.url)

    def git(self, *args: str, key: SshKey | GpgKey | None = None) -> str:
        """Run git in the work clone, signing with ``key`` when given."""
        env = dict(self._env)
        signing: list[str] = []
        if isinstance(key, SshKey):
            signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.path}"]
        elif isinstance(key, GpgKey):
            signing = ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={key.fingerprint}"]
            env["GNUPGHOME"] = str(key.home)
        return _run(["git", *signing, *args], env=env, cwd=self.work)

    def write(self, path: str, text: str) -> None:
        """Write a file in the work clone and stage it."""
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        self.git("add", path)

    def commit(self, message: str, *, key: SshKey | GpgKey | None = None) -> str:
        """Commit what is staged, signed by ``key`` (unsigned when None); return the sha."""
        self.git("commit", "-q", "--allow-empty", *(["-S"] if key else []), "-m", message, key=key)
        return self.head()

    def head(self) -> str:
        """The work clone's HEAD sha."""
        return self.git("rev-parse", "HEAD").strip()

    def raw_commit(self, sha: str) -> bytes:
        """The commit object's bytes."""
        return subprocess.run(
            ["git", "cat-file", "commit", sha], cwd=self.work, env=self._env, capture_output=True, check=True
        ).stdout

    def store_commit(self, raw: bytes) -> str:
        """Write a hand-made commit object, move the branch to it, return its sha."""
        sha = (
            subprocess.run(
                ["git", "hash-object", "-t", "commit", "-w", "--stdin", "--literally"],
                input=raw,
                cwd=self.work,
                env=self._env,
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        self.git("update-ref", f"refs/heads/{self.branch}", sha)
        self.git("reset", "-q", "--hard", sha)
        return sha

    def push(self, *, force: bool = False) -> None:
        """Push the branch to the bare remote."""
        self.git("push", "-q", *(["--force"] if force else []), "origin", f"HEAD:refs/heads/{self.branch}")


def manifest_text(environment: str, image: str, **env: str) -> str:
    """A manifest file body."""
    lines = [f"environment: {environment}", f"image: {image}"]
    if env:
        lines.append("env:")
        lines += [f'  {k}: "{v}"' for k, v in env.items()]
    return "\n".join(lines) + "\n"
