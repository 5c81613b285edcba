"""The manifest repository: the controller's git cache, fetched and read through GitPython.

The only module that imports ``git``.  The cache is a bare repository under
``state/repo``; nothing is ever checked out.  Every fetch into it (and its
creation) holds ``state/fetch.lock``, whichever process fetches — the daemon's
pass, ``sync``, ``plan``, ``verify`` — so two git processes never update its refs
at once and none of them fails for the other.  Files are read from a commit's
tree by mode and size first, so a symlink, a submodule or a huge blob in the
manifest repository is refused before a byte of it is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import git
from gitdb.exc import BadName, BadObject

from controller.errors import Reason, Refused, Retryable
from controller.records.locks import pass_lock

REGULAR_FILE = 0o100644


class SourceError(Retryable):
    """git failed in a way that may pass: the remote is unreachable, slow or broken."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code=Reason.FETCH_FAILED)


class GitSource:
    """A bare cache of one branch of the manifest repository."""

    def __init__(
        self,
        path: Path,
        *,
        url: str,
        branch: str,
        timeout: int = 60,
        env: dict[str, str] | None = None,
        lock: Path | None = None,
    ) -> None:
        self.path = path
        self.lock = lock or path.with_name("fetch.lock")
        self.url = url
        self.branch = branch
        self.timeout = timeout
        self.env = env or {}
        self._repo: git.Repo | None = None

    @property
    def tracking_ref(self) -> str:
        """Where the fetched head is kept in the cache."""
        return f"refs/remotes/origin/{self.branch}"

    def repo(self) -> git.Repo:
        """The cache repository, created on first use."""
        if self._repo is None:
            if not (self.path / "HEAD").exists():
                self.path.mkdir(parents=True, exist_ok=True)
                self._repo = git.Repo.init(self.path, bare=True)
            else:
                self._repo = git.Repo(self.path)
        return self._repo

    def fetch(self) -> str:
        """Fetch the branch into the cache (force: a rewrite is judged later); return its head."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", **self.env}
        with pass_lock(self.lock):  # waits for another process's fetch, at most its timeout
            self._fetch(env)
        try:  # in-process: the no-change pass spawns no second git
            return str(self.repo().rev_parse(f"{self.tracking_ref}^{{commit}}").hexsha)
        except (BadName, BadObject, ValueError):
            return self.resolve(self.tracking_ref)

    def _fetch(self, env: dict[str, str]) -> None:
        try:
            self.repo().git.fetch(
                "--quiet",
                "--no-tags",
                "--prune",
                self.url,
                f"+refs/heads/{self.branch}:{self.tracking_ref}",
                env=env,
                kill_after_timeout=self.timeout,
            )
        except git.GitCommandError as exc:
            raise SourceError(f"fetching {self.branch} failed: {_stderr(exc)}") from None

    def resolve(self, rev: str) -> str:
        """The full commit id of ``rev`` in the cache, as ``git rev-parse`` reads it.

        The cache keeps the branch as ``origin/<branch>``; a user names it as in
        their clone (``main``, ``main~1``, ``HEAD^``), so those are read there first.
        Short and full ids and ``origin/main~1`` work as they are.
        """
        for candidate in self._candidates(rev):
            try:
                out = self.repo().git.rev_parse("--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}")
            except git.GitCommandError:
                continue
            return str(out).strip()
        raise Refused(f"revision '{rev}' is not a commit in the fetched repository", code=Reason.UNKNOWN_REVISION)

    def _candidates(self, rev: str) -> list[str]:
        for name in (self.branch, "HEAD"):
            if rev == name or rev.startswith((f"{name}~", f"{name}^")):
                return [self.tracking_ref + rev[len(name) :], rev]
        return [rev]

    def raw_commit(self, sha: str) -> bytes:
        """The commit object's bytes exactly as stored (what was signed)."""
        stream = self.repo().odb.stream(bytes.fromhex(sha))
        if stream.type != b"commit":
            raise Refused(f"{sha} is not a commit", code=Reason.UNKNOWN_REVISION)
        data: bytes = stream.read()
        return data

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether ``old`` is ``new`` or one of its ancestors (not when the repository lacks ``old``)."""
        if old == new:
            return True  # the common no-change poll: no git process for it
        try:
            self.repo().git.merge_base("--is-ancestor", old, new)
        except git.GitCommandError as exc:
            if exc.status == 1 or not self.has_commit(old):
                return False
            raise SourceError(f"checking ancestry failed: {_stderr(exc)}") from None
        return True

    def has_commit(self, sha: str) -> bool:
        """Whether the fetched repository holds the commit ``sha`` (a rewrite and a gc can lose one)."""
        try:
            self.repo().git.cat_file("-e", f"{sha}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    def first_parent_range(self, old: str | None, new: str) -> list[str]:
        """First-parent commits after ``old`` up to ``new``, oldest first (``new`` alone without ``old``)."""
        if old is None:
            return [new]
        out = self.repo().git.rev_list("--first-parent", "--reverse", f"{old}..{new}")
        return str(out).split()

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        """A regular file from the commit's tree, checked by mode and size before it is read."""
        tree = self.repo().commit(sha).tree
        try:
            blob = tree[path]
        except KeyError:
            raise Refused(f"{path} does not exist at {sha[:12]}", code=Reason.MANIFEST_MISSING) from None
        if blob.type != "blob" or blob.mode != REGULAR_FILE:
            kind = {0o120000: "a symlink", 0o160000: "a submodule", 0o040000: "a folder"}.get(
                blob.mode, "not a regular file"
            )
            raise Refused(f"{path} at {sha[:12]} is {kind}, not a regular file", code=Reason.MANIFEST_MISSING)
        if blob.size > max_bytes:
            raise Refused(
                f"{path} is {blob.size} bytes, more than the limit of {max_bytes} bytes",
                code=Reason.MANIFEST_TOO_LARGE,
            )
        data: bytes = blob.data_stream.read()
        return data


def _stderr(exc: git.GitCommandError) -> str:
    text = str(exc.stderr or exc).strip().strip("'").replace("stderr: ", "")
    return " ".join(text.split())[-300:] or f"git exited with {exc.status}"
