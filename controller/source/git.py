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

import contextlib
import logging
import os
import shutil
import signal
import string
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import git
from gitdb.exc import BadName, BadObject

from controller.errors import Reason, Refused, Retryable
from controller.model.manifest import MAX_MANIFEST_BYTES, manifest_path
from controller.records.locks import pass_lock

log = logging.getLogger("dreichor.source")
STOP_GRACE = 5  # seconds a git past its timeout has to stop on SIGTERM (and remove its locks) before SIGKILL

REGULAR_FILE = 0o100644
GIT = os.environ.get("GIT_PYTHON_GIT_EXECUTABLE") or "git"  # the git GitPython runs, for the fetch too
_QUIET_GIT = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}  # never wait for a person
EXECUTABLE_FILE = 0o100755
FOLDER = 0o040000
MAX_TREE_BYTES = 4 * 1024 * 1024  # a folder on the way to the one read: thousands of entries, never millions
_KINDS = {0o120000: "a symlink", 0o160000: "a submodule", FOLDER: "a folder"}


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
        self._env: dict[bytes, bytes] | None = None
        self._git_path: str | None = None
        self._maintained_at: str | None = None  # the head after which the cache's maintenance last ran

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
        """Fetch the branch into the cache (force: a rewrite is judged later); return its head.

        ``git fetch`` is run directly rather than through GitPython's command
        wrapper: it runs in every pass, and the wrapper's own work is a good part
        of what a no-change pass costs besides the fetch.  The environment is
        GitPython's (``LC_ALL=C``), so git's messages read the same.

        git's own upkeep of the cache (``git maintenance run --auto``, which a plain
        fetch starts every time) runs only after a fetch that brought a new head, and
        once per process, until it has once run to the end: a fetch that brings
        nothing spawns no second git.
        """
        env = self._git_env()
        with pass_lock(self.lock):  # waits for another process's fetch, at most its timeout
            self.repo()  # the cache exists before git is run in it; created by one process only
            self._fetch(env)
            head = self._fetched_head() or self._peeled_head()  # read before another fetch moves it
            if head != self._maintained_at and self._maintain(env):
                self._maintained_at = head
            return head

    def _git_env(self) -> dict[bytes, bytes]:
        """git's environment, encoded once: the process's (read at the first fetch), C messages, never a prompt.

        Encoded ahead, as are the git executable's full path, because the
        subprocess module would otherwise encode every variable and search
        PATH again in each pass.
        """
        if self._env is None:
            text = {**os.environ, "LANGUAGE": "C", "LC_ALL": "C", **_QUIET_GIT, **self.env}
            self._env = {os.fsencode(k): os.fsencode(v) for k, v in text.items()}
        return self._env

    def _git(self, env: dict[bytes, bytes]) -> str:
        """The git executable's path as the environment's PATH finds it (looked up again after a failed start)."""
        if self._git_path is None:
            path = env.get(b"PATH")
            self._git_path = shutil.which(GIT, path=os.fsdecode(path) if path is not None else None) or GIT
        return self._git_path

    def _fetch(self, env: dict[bytes, bytes]) -> None:
        refspec = f"+refs/heads/{self.branch}:{self.tracking_ref}"
        # FETCH_HEAD is never read here; the upkeep is ``_maintain``'s, when something arrived.
        upkeep = ["--no-write-fetch-head", "--no-auto-maintenance"]
        command = [self._git(env), "fetch", "--quiet", "--no-tags", "--prune", *upkeep, self.url, refspec]
        try:
            code, stderr = self._run(command, env)
        except subprocess.TimeoutExpired:
            self._clean_temporary()
            raise SourceError(
                f"fetching {self.branch} failed: git fetch did not finish within {self.timeout}s"
            ) from None
        except OSError as exc:
            self._git_path = None  # moved or removed: the next pass looks for it again
            raise SourceError(f"fetching {self.branch} failed: cannot run git: {exc.strerror}") from None
        if code != 0:
            self._clean_temporary()
            raise SourceError(f"fetching {self.branch} failed: {_why(stderr) or f'git exited with {code}'}")

    def _clean_temporary(self) -> None:
        """After a failed fetch (a full disk, a timeout): the half-received pack and objects git left behind.

        Under the fetch lock, so no git of ours is writing them; git itself never reads them again.
        """
        objects = self.path / "objects"
        left = [*objects.glob("pack/tmp_*"), *objects.glob("pack/.tmp-*"), *objects.glob("??/tmp_obj_*")]
        for path in left:
            with contextlib.suppress(OSError):
                path.unlink()
        if left:
            log.info("removed what a failed fetch left in the git cache", extra={"files": len(left)})

    def _maintain(self, env: dict[bytes, bytes]) -> bool:
        """``git maintenance run --auto`` in the cache: packs loose objects once git's thresholds say so.

        Whether it ran to the end.  A failure is logged and the pass goes on: the fetched head is
        already there, and the next pass tries again.
        """
        command = [self._git(env), "maintenance", "run", "--auto", "--quiet"]
        try:
            code, stderr = self._run(command, env)
        except (subprocess.TimeoutExpired, OSError) as exc:
            log.warning("git maintenance of the cache did not finish", extra={"error": str(exc)})
            return False
        if code != 0:
            log.warning("git maintenance of the cache failed", extra={"error": _why(stderr) or str(code)})
        return code == 0

    def _run(self, command: list[str], env: dict[bytes, bytes]) -> tuple[int, bytes]:
        """Run git in the cache; its exit code and stderr.

        Past the timeout git and what it started (its own process group) are asked to stop with
        SIGTERM, on which git removes its lock files, and killed only if they have not stopped
        within ``STOP_GRACE`` seconds; then ``TimeoutExpired`` is raised.
        """
        with subprocess.Popen(
            command,
            cwd=self.path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # --quiet: nothing; only stderr carries the reason of a failure
            stderr=subprocess.PIPE,
            start_new_session=True,  # a group of its own, to be stopped as one
        ) as process:
            try:
                _, stderr = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                for signal_number in (signal.SIGTERM, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal_number)
                    try:
                        process.communicate(timeout=STOP_GRACE)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                raise
            return process.returncode, stderr

    def _fetched_head(self) -> str | None:
        """The commit the fetch left in the tracking ref's own file, or None (packed, or not a commit).

        The cheap way for the no-change pass: read the ref file and ask the
        cache's long-lived ``cat-file`` helper the object's type.
        """
        try:
            sha = (self.path / self.tracking_ref).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if len(sha) != 40 or sha.strip(string.hexdigits):
            return None
        try:
            kind = self.repo().odb.info(bytes.fromhex(sha)).type
        except (BadName, BadObject, ValueError):
            return None
        return sha.lower() if kind == b"commit" else None

    def _peeled_head(self) -> str:
        """The tracking ref's commit the way git reads it (a packed ref, a tag peeled to its commit)."""
        try:  # in-process: the no-change pass spawns no second git
            return str(self.repo().rev_parse(f"{self.tracking_ref}^{{commit}}").hexsha)
        except (BadName, BadObject, ValueError):
            return self.resolve(self.tracking_ref)

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

    def committed_at(self, sha: str) -> datetime:
        """When the commit was made, by its committer date (for the history's lead time; never trusted for policy)."""
        return self._commit(sha).committed_datetime.astimezone(UTC)

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

    def read_manifest(self, sha: str, environment: str) -> bytes:
        """``envs/<env>.yaml`` from the commit's tree: a regular file of at most ``MAX_MANIFEST_BYTES``."""
        return self.read_file(sha, manifest_path(environment), max_bytes=MAX_MANIFEST_BYTES)

    def read_file(self, sha: str, path: str, *, max_bytes: int) -> bytes:
        """A regular file from the commit's tree, checked by mode and size before it is read."""
        tree = self._commit(sha).tree
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

    def read_folder(
        self, sha: str, path: str, *, max_entries: int, max_bytes: int, code: Reason
    ) -> list[tuple[str, bytes]]:
        """The regular files directly in folder ``path`` of the commit's tree (none when it is absent).

        Written for folders anyone who may push can fill: every tree on the way is checked by size
        before it is parsed, the folder's entries by count, mode, name and size before a byte of
        them is read.  A symlink, a submodule, a sub-folder or a name that is not UTF-8 refuses the
        folder (``code``), naming the entry.
        """
        tree = self._tree_at(sha, path, limit=max_entries * 512, code=code)
        if tree is None:
            return []
        entries = list(tree)
        if len(entries) > max_entries:
            why = f"{path} holds {len(entries)} entries, more than the limit of {max_entries}"
            raise Refused(why, code=code)
        for entry in entries:
            _check_entry(entry, path, max_bytes=max_bytes, code=code)
        return [(entry.name, entry.data_stream.read()) for entry in entries]

    def _commit(self, sha: str) -> git.Commit:
        try:
            return self.repo().commit(sha)
        except (BadName, BadObject, ValueError):
            raise Refused(
                f"{sha[:12]} is not a commit in the fetched repository", code=Reason.UNKNOWN_REVISION
            ) from None

    def _tree_at(self, sha: str, path: str, *, limit: int, code: Reason) -> git.Tree | None:
        """The tree at ``path`` (None when absent), each tree on the way checked by size before it is read."""
        tree = self._commit(sha).tree
        parts = path.split("/")
        for depth, part in enumerate(parts):
            entry = next((e for e in tree if e.name == part), None)
            if entry is None:
                return None
            where = "/".join(parts[: depth + 1])
            if entry.mode != FOLDER:
                raise Refused(f"{where} at {sha[:12]} is {_KINDS.get(entry.mode, 'a file')}, not a folder", code=code)
            size = self.repo().odb.info(entry.binsha).size
            if size > (limit if depth == len(parts) - 1 else MAX_TREE_BYTES):
                raise Refused(f"{where} at {sha[:12]} is a folder of {size} bytes of entries, too many", code=code)
            tree = entry
        return tree


def _check_entry(entry: git.objects.base.IndexObject, path: str, *, max_bytes: int, code: Reason) -> None:
    """One entry of a folder read by ``read_folder``: a regular file, a UTF-8 name, at most ``max_bytes``."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(f"{path} holds a file whose name is not UTF-8", code=code) from None
    where = f"{path}/{entry.name}"
    if entry.mode not in (REGULAR_FILE, EXECUTABLE_FILE):
        raise Refused(f"{where} is {_KINDS.get(entry.mode, 'not a regular file')}, not a regular file", code=code)
    if entry.size > max_bytes:
        raise Refused(f"{where} is {entry.size} bytes, more than the limit of {max_bytes} bytes", code=code)


def _stderr(exc: git.GitCommandError) -> str:
    text = str(exc.stderr or exc).strip().strip("'").replace("stderr: ", "")
    return " ".join(text.split())[-300:] or f"git exited with {exc.status}"


def clone_facts(file: Path) -> tuple[Path, str | None, str | None]:
    """For ``approve``: (the work tree holding ``file``, ``remote.origin.url``, ``user.signingkey``)."""
    try:
        clone = git.Repo(file.absolute().parent, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise Refused(f"{file} is not in a clone of the manifest repository", code=Reason.NOT_FOUND) from None
    if clone.working_tree_dir is None:
        raise Refused(f"{file} is in a bare repository, not a clone", code=Reason.NOT_FOUND)
    reader = clone.config_reader()
    origin = reader.get_value('remote "origin"', "url", "") or None
    key = reader.get_value("user", "signingkey", "") or None
    return Path(clone.working_tree_dir), str(origin) if origin else None, str(key) if key else None


def _why(stderr: bytes) -> str:
    """git's reason in one line: the end of what it said, without a usage text it printed after it."""
    lines = stderr.decode("utf-8", "replace").splitlines()
    usage = next((n for n, line in enumerate(lines) if line.startswith("usage: ")), len(lines))
    return " ".join(" ".join(lines[:usage]).split())[-300:]
