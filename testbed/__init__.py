"""The real-component test bed: a private Docker Engine, a local registry, tiny images, signed repos.

A top-level package of the repository, not shipped in the wheel: the tests,
the benchmarks and ``scripts/demo`` import it from a checkout, as they all
build the same sandbox.  Everything
listens on 127.0.0.1 or a unix socket under a temporary folder, and nothing
touches a Docker Engine that may already run on the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from controller.cli import main as cli_main
from controller.records.audit import read_events
from controller.records.host_init import init_layout
from controller.records.status import Status, read_status

BUSYBOX = Path("/usr/bin/busybox")
_ENGINES = itertools.count()
REPOSITORY_PATH = "dreichor/runtime"


class BedError(RuntimeError):
    """A component of the test bed could not be started."""


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=300)
    if proc.returncode != 0:
        raise BedError(f"{' '.join(args[:4])}… failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _wait(predicate: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise BedError(f"{what} did not come up within {timeout:.0f}s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_cli() -> str:
    """The Docker CLI that ships with the engine (Debian's), else any on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    raise BedError("no docker CLI found: install docker.io")


def peak_running(events: list[dict[str, Any]], *, prefix: str) -> int:
    """The most containers named ``prefix…`` running at one instant, from ``docker events`` in time order."""
    running: set[str] = set()
    peak = 0
    for event in events:
        if not event.get("Actor", {}).get("Attributes", {}).get("name", "").startswith(prefix):
            continue
        if event.get("Action") == "start":
            running.add(event["id"])
        elif event.get("Action") in ("die", "destroy"):
            running.discard(event["id"])
        peak = max(peak, len(running))
    return peak


class PrivateDocker:
    """A ``dockerd`` with its own data root, exec root, pidfile, socket and bridge."""

    def __init__(self, base: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.base = base
        self.extra_args = extra_args
        self.socket = base / "docker.sock"
        self.url = f"unix://{self.socket}"
        serial = next(_ENGINES)  # two engines in one process must not share a bridge
        octet = (os.getpid() + 37 * serial) % 250 + 1
        self.bridge = f"drtb{os.getpid() % 100000}x{serial}"
        self.bridge_cidr = f"198.18.{octet}.1/24"  # RFC 2544 benchmark range: never routed
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = base / "dockerd.log"

    def start(self) -> PrivateDocker:
        """Start the engine and wait until it answers."""
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise BedError("dockerd is not installed (Debian package docker.io)")
        self.base.mkdir(parents=True, exist_ok=True)
        self._make_bridge()
        args = [
            dockerd,
            f"--data-root={self.base / 'data'}",
            f"--exec-root={self.base / 'exec'}",
            f"--pidfile={self.base / 'dockerd.pid'}",
            f"--host={self.url}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--max-download-attempts=1",  # a cut pull fails at once instead of retrying for a minute
            *self.extra_args,
        ]
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(self.launcher(args), stdout=log, stderr=log, start_new_session=True)
        _wait(self._answers, timeout=60, what=f"dockerd (log: {self._log})")
        return self

    def launcher(self, args: list[str]) -> list[str]:
        """The command line that starts ``dockerd`` (a subclass may wrap it in namespaces)."""
        return args

    def ip(self, *args: str) -> list[str]:
        """An ``ip`` command line in the engine's network namespace (the host's here)."""
        return ["ip", *args]

    def _make_bridge(self) -> None:
        subprocess.run(self.ip("link", "del", self.bridge), capture_output=True, check=False)
        _run(self.ip("link", "add", self.bridge, "type", "bridge"))
        _run(self.ip("addr", "add", self.bridge_cidr, "dev", self.bridge))
        _run(self.ip("link", "set", self.bridge, "up"))

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise BedError(f"dockerd exited with {self._proc.returncode}; see {self._log}")
        probe = subprocess.run(self.cli_args("version"), capture_output=True, check=False, timeout=30)
        return probe.returncode == 0

    def cli_args(self, *args: str) -> list[str]:
        """A docker CLI command line aimed at this engine."""
        return [docker_cli(), "--host", self.url, *args]

    def cli(self, *args: str) -> str:
        """Run the docker CLI against this engine; return stdout."""
        env = {**os.environ, "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(self.base / "cli")}
        return _run(self.cli_args(*args), env=env)

    def inspect(self, name: str) -> dict[str, object] | None:
        """``docker inspect`` of a container, or None when it does not exist."""
        proc = subprocess.run(self.cli_args("inspect", "--type", "container", name), capture_output=True, check=False)
        if proc.returncode != 0:
            return None
        data: list[dict[str, object]] = json.loads(proc.stdout)
        return data[0]

    def running_names(self, prefix: str = "") -> list[str]:
        """Names of running containers starting with ``prefix``."""
        out = self.cli("ps", "--format", "{{.Names}}")
        return sorted(n for n in out.split() if n.startswith(prefix))

    def remove_all_containers(self) -> None:
        """Force-remove every container of this engine."""
        ids = self.cli("ps", "-aq").split()
        if ids:
            self.cli("rm", "-f", *ids)

    def events(self, *, since: str) -> list[dict[str, Any]]:
        """Container events from ``docker events`` since ``since`` (a UNIX time), oldest first."""
        out = self.cli(
            "events",
            "--since",
            since,
            "--until",
            f"{time.time():.6f}",
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        )
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return sorted(events, key=lambda e: int(e["timeNano"]))

    def max_running_at_once(self, *, since: str, prefix: str) -> int:
        """From ``docker events``: the most containers named ``prefix…`` running at one instant."""
        return peak_running(self.events(since=since), prefix=prefix)

    def stop(self) -> None:
        """Remove all containers, stop the engine, delete the bridge, unmount what the engine left."""
        if self._proc is not None:
            with contextlib.suppress(BedError, subprocess.TimeoutExpired):
                self.remove_all_containers()
            self.kill(signal.SIGTERM)
        subprocess.run(self.ip("link", "del", self.bridge), capture_output=True, check=False)
        unmount_under(self.base)  # also after a fault test killed the engine and left it down

    def kill(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the engine with ``sig`` and wait for it (used by fault tests too)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def mounts_under(folder: Path) -> list[str]:
    """The mount points at or below ``folder`` in this mount namespace, deepest first."""
    root = os.path.realpath(folder)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with space, tab, newline and backslash written in octal.
        point = line.split(" ")[4].encode().decode("unicode_escape")
        if point == root or point.startswith(root + "/"):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_under(folder: Path) -> None:
    """Unmount what a stopped engine left below ``folder`` (a swarm's ``nsfs`` netns, overlays, shm).

    A killed or swarm-mode dockerd leaves network namespaces bind-mounted under
    its exec root (the ingress sandbox's ``exec/netns/1-…``) and sometimes its
    overlay mounts: the folder cannot be removed until they are gone.  Lazy, so
    a mount still in use is detached now and freed when its last user leaves.
    """
    for point in mounts_under(folder):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


class LocalRegistry:
    """Debian's ``docker-registry`` on 127.0.0.1 with storage under a temp folder."""

    def __init__(self, base: Path, *, address: str = "127.0.0.1") -> None:
        self.base = base
        self.port = free_port()
        self.host = f"{address}:{self.port}"
        self.repository = f"{self.host}/{REPOSITORY_PATH}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRegistry:
        """Start the registry and wait for ``/v2/``."""
        binary = shutil.which("docker-registry")
        if binary is None:
            raise BedError("docker-registry is not installed (Debian package docker-registry)")
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.base / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        with (self.base / "registry.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True
            )
        _wait(self.answers, timeout=30, what="docker-registry")
        return self

    def answers(self) -> bool:
        """Whether ``GET /v2/`` answers."""
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the registry (tests also use this to simulate an outage)."""
        if self._proc is None:
            return
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self._proc = None


IMAGE_VARIANTS: dict[str, list[str]] = {
    "healthy-a": [
        'HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/busybox", "true"]',
        'CMD ["/bin/busybox", "sleep", "86400"]',
    ],
    "healthy-b": [
        'HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/busybox", "true"]',
        'CMD ["/bin/busybox", "sleep", "86400"]',
    ],
    "plain": ['CMD ["/bin/busybox", "sleep", "86400"]'],
    "exits": ['CMD ["/bin/busybox", "sh", "-c", "echo starting; echo giving up >&2; exit 3"]'],
    "stubborn": ['CMD ["/bin/busybox", "sh", "-c", "trap \'\' TERM; /bin/busybox sleep 86400"]'],
    "unhealthy": [
        'HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/bin/busybox", "false"]',
        'CMD ["/bin/busybox", "sleep", "86400"]',
    ],
}


def build_images(
    engine: PrivateDocker, registry: LocalRegistry, work: Path, *, variants: tuple[str, ...] = ()
) -> dict[str, str]:
    """Build every variant ``FROM scratch`` with busybox, push it, drop the local copy.

    Returns variant → ``repository@sha256:…``.  The local copies are removed so
    the controller has to pull from the registry like on a real host.
    """
    if not BUSYBOX.exists():
        raise BedError("/usr/bin/busybox is missing (Debian package busybox-static)")
    digests: dict[str, str] = {}
    for variant, lines in IMAGE_VARIANTS.items():
        if variants and variant not in variants:
            continue
        context = work / variant
        context.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, context / "busybox")
        dockerfile = [
            "FROM scratch",
            "COPY busybox /bin/busybox",
            f"LABEL io.dreichor.test.variant={variant}",
        ]
        (context / "Dockerfile").write_text("\n".join([*dockerfile, *lines]) + "\n")
        tag = f"{registry.repository}:{variant}"
        engine.cli("build", "--quiet", "--tag", tag, str(context))
        engine.cli("push", tag)
        digest = engine.cli("inspect", "--format", "{{index .RepoDigests 0}}", tag).strip()
        engine.cli("rmi", tag)
        digests[variant] = digest
    return digests


@dataclass(frozen=True)
class SshKey:
    """An SSH signing key made by ``ssh-keygen``."""

    path: Path
    public: str
    principal: str

    @property
    def allowed_signers_line(self) -> str:
        """This key as a line of git's allowed_signers file."""
        return f'{self.principal} namespaces="git" {self.public}'


def make_ssh_key(folder: Path, *, name: str, key_type: str = "ed25519", bits: int | None = None) -> SshKey:
    """Generate an unencrypted SSH key pair with ``ssh-keygen``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    args = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", f"{name}@dreichor.test", "-f", str(path)]
    if bits:
        args += ["-b", str(bits)]
    _run(args)
    public = " ".join(path.with_suffix(".pub").read_text().split()[:2])
    return SshKey(path=path, public=public, principal=f"{name}@dreichor.test")


@dataclass(frozen=True)
class GpgKey:
    """An OpenPGP key in a private GNUPGHOME."""

    home: Path
    fingerprint: str
    uid: str

    def export(self) -> str:
        """The armored public key."""
        return _run(["gpg", "--homedir", str(self.home), "--armor", "--export", self.fingerprint])


def make_gpg_key(
    home: Path,
    *,
    name: str,
    algo: str = "ed25519",
    expire: str = "never",
    subkey: bool = False,
    subkey_expire: str | None = None,
    at: str | None = None,
) -> GpgKey:
    """Generate an unprotected OpenPGP key; ``subkey``: a cert-only primary plus a signing subkey.

    ``at`` (``20200101T000000``) makes the key as if the clock said so, for keys that expired long ago.
    """
    gnupg_home(home)
    uid = f"{name} <{name}@dreichor.test>"
    clock = ["--faked-system-time", at] if at else []
    _run([*_gpg(home), *clock, "--quick-gen-key", uid, algo, "cert" if subkey else "sign", expire])
    listing = _run([*_gpg(home), "--with-colons", "--list-keys", uid])
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    if subkey:
        _run([*_gpg(home), *clock, "--quick-add-key", fingerprint, algo, "sign", subkey_expire or expire])
    return GpgKey(home=home, fingerprint=fingerprint, uid=uid)


_GNUPG_HOMES: list[Path] = []  # every GNUPGHOME made here, oldest first: each may hold a running gpg-agent


def gnupg_home(home: Path) -> Path:
    """Make ``home`` a private GNUPGHOME and remember it, so ``stop_gpg_agents`` can stop its agent."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _GNUPG_HOMES.append(home)
    return home


def gnupg_homes() -> int:
    """How many GNUPGHOMEs ``gnupg_home`` made so far: a mark to pass to ``stop_gpg_agents``."""
    return len(_GNUPG_HOMES)


def stop_gpg_agents(*, since: int = 0) -> None:
    """``gpgconf --kill all`` in every GNUPGHOME made since the mark ``since``.

    gpg starts a gpg-agent per home on the first secret-key operation and leaves it running;
    a fixture finaliser calls this so that no test run leaves agents behind.
    """
    for home in _GNUPG_HOMES[since:]:
        kill = ["gpgconf", "--homedir", str(home), "--kill", "all"]
        subprocess.run(kill, capture_output=True, check=False, timeout=30)


def revoke_gpg_key(key: GpgKey) -> None:
    """Import the revocation certificate gpg made at generation time."""
    rev = key.home / "openpgp-revocs.d" / f"{key.fingerprint}.rev"
    text = rev.read_text().replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----")
    (key.home / "revoke.asc").write_text(text)
    _run([*_gpg(key.home), "--import", str(key.home / "revoke.asc")])


def drop_signing_usage(key: GpgKey) -> None:
    """Re-certify the (RSA) primary key as certification-only, as ``gpg --edit-key`` change-usage does."""
    gpg_edit(key, "change-usage\nS\nQ\nsave\n")


def ssh_fingerprint(key: SshKey) -> str:
    """``SHA256:…`` of the key, as ``ssh-keygen -l`` prints it."""
    return _run(["ssh-keygen", "-l", "-f", str(key.path.with_suffix(".pub"))]).split()[1]


def gpg_algorithm(key: GpgKey) -> str:
    """The signing key's algorithm as gpg lists it: ``RSA 3072``, ``ed25519``."""
    listing = _run([*_gpg(key.home), "--with-colons", "--list-keys", key.fingerprint])
    for fields in (line.split(":") for line in listing.splitlines()):
        if fields[0] in ("pub", "sub") and "s" in fields[11]:
            return f"RSA {fields[2]}" if fields[3] in ("1", "3") else fields[16]
    raise BedError(f"{key.fingerprint} has no signing key")


def gpg_edit(key: GpgKey, commands: str, *, select: str | None = None) -> None:
    """Run ``gpg --edit-key`` with scripted answers (``key N`` first when ``select`` names a subkey)."""
    prefix = f"key {select}\n" if select else ""
    subprocess.run(
        [*_gpg(key.home), "--expert", "--command-fd", "0", "--status-fd", "1", "--edit-key", key.fingerprint],
        input=prefix + commands,
        text=True,
        capture_output=True,
        check=True,
        timeout=60,
    )


def revoke_gpg_subkey(key: GpgKey, *, reason: int) -> None:
    """Revoke the first subkey; gpg's menu ``reason``: 0 none, 1 compromised (both hard), 2 superseded, 3 retired."""
    gpg_edit(key, f"revkey\ny\n{reason}\nretired\n\ny\nsave\n", select="1")


def revoke_gpg_primary(key: GpgKey, *, reason: int) -> None:
    """Revoke the whole key with gpg's menu ``reason`` (see ``revoke_gpg_subkey``)."""
    gpg_edit(key, f"revkey\ny\n{reason}\nretired\n\ny\nsave\n")


def gpg_detach_sign(key: GpgKey, payload: bytes, *, extra: tuple[str, ...] = ()) -> bytes:
    """An armored detached signature over ``payload`` made by gpg (``extra``: e.g. ``--digest-algo SHA1``)."""
    return subprocess.run(
        [*_gpg(key.home), "--armor", "--detach-sign", "--local-user", key.fingerprint, *extra],
        input=payload,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def _gpg(home: Path) -> list[str]:
    return ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]


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


def ssh_sign(key: SshKey, payload: bytes, *, namespace: str = "git") -> bytes:
    """An armored SSHSIG over ``payload`` made by ``ssh-keygen -Y sign``."""
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key.path)],
        input=payload,
        capture_output=True,
        check=True,
    )
    return proc.stdout


def with_signature(payload: bytes, signature: bytes) -> bytes:
    """A raw commit: ``payload`` with a ``gpgsig`` header carrying ``signature`` (as git writes it)."""
    headers, _sep, message = payload.partition(b"\n\n")
    lines = signature.rstrip(b"\n").split(b"\n")
    header = b"gpgsig " + b"\n ".join(lines)
    return headers + b"\n" + header + b"\n\n" + message


def manifest_text(environment: str, image: str, **env: str) -> str:
    """A manifest file body."""
    lines = [f"environment: {environment}", f"image: {image}"]
    if env:
        lines.append("env:")
        lines += [f'  {k}: "{v}"' for k, v in env.items()]
    return "\n".join(lines) + "\n"


class CuttingProxy:
    """A TCP relay on 127.0.0.1 in front of a registry that can cut a transfer part-way."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.host = f"127.0.0.1:{self.port}"
        self._budget: int | None = None  # bytes still allowed downstream; None: unlimited
        self.connections = 0  # accepted so far: a test that must not reach the registry asserts it stays put
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, nbytes: int) -> None:
        """From now on, relay ``nbytes`` more to clients, then drop every connection and refuse new ones."""
        with self._lock:
            self._budget = nbytes

    def restore(self) -> None:
        """Relay everything again."""
        with self._lock:
            self._budget = None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with self._lock:
                refused = self._budget is not None and self._budget <= 0
            if refused:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(16384):
                if downstream and not self._spend(len(chunk)):
                    break
                sink.sendall(chunk)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _spend(self, nbytes: int) -> bool:
        with self._lock:
            if self._budget is None:
                return True
            self._budget -= nbytes
            return self._budget > 0

    def stop(self) -> None:
        """Close the listener and every relayed connection."""
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


class JwksServer:
    """An RSA signing key and its JWKS served on 127.0.0.1, standing in for Cloudflare Access."""

    def __init__(self, *, team: str, audience: str) -> None:
        self.team = team
        self.audience = audience
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "kid-1"
        self.fetches = 0
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}).encode()
        outer = self

        class Jwks(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cdn-cgi/access/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, *, kid: str | None = None, key: Any = None, alg: str = "RS256", **claims: Any) -> str:
        """A signed access token; a claim given as None is left out."""
        now = int(time.time())
        payload = {
            "aud": self.audience,
            "iss": self.team,
            "iat": now,
            "exp": now + 300,
            "email": "ops@dreichor.io",
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.private, algorithm=alg, headers={"kid": kid or self.kid})

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ReceivedRequest:
    """One request a ``NotificationReceiver`` recorded."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case: HTTP header names are case-insensitive
    body: bytes


class NotificationReceiver:
    """An HTTP server on 127.0.0.1 that records every request: Apprise's ``json://`` and ``form://``
    posts, GitHub's statuses API.

    ``status`` is what it answers; ``hold`` (an Event) keeps each request waiting until it is set;
    ``stop`` closes the port, so a stopped receiver is a dead one.
    """

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.status = 200
        self.hold: threading.Event | None = None
        self.arrived = threading.Event()
        self.answered = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._stopped = False
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append(ReceivedRequest(self.command, self.path, headers, body))
                outer.arrived.set()
                if outer.hold is not None:
                    outer.hold.wait(30)
                outer.answered += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def stop(self) -> None:
        """Release held requests and close the port (again: no effect)."""
        if self.hold is not None:
            self.hold.set()
        if not self._stopped:
            self._stopped = True
            self.server.shutdown()
            self.server.server_close()


class ControllerHost:
    """A host with dev and prod controllers configured against one signed manifest repo.

    ``sync`` runs the controller's own command line in-process; the paths are the
    layout's, under a temporary root.
    """

    def __init__(self, tmp: Path, engine: PrivateDocker, registry: LocalRegistry, repo: ManifestRepo, key: SshKey):
        self.root = tmp / "opt"
        self.engine = engine
        self.registry = registry
        self.repo = repo
        self.key = key
        self.configs: dict[str, Path] = {}
        self._runs = 0
        self._outputs: dict[int, tuple[Path, Path]] = {}
        for env in ("dev", "prod"):
            init_layout(self.root, env)
            agent = self.root / env / "deploy-agent"
            (agent / "trust" / "allowed_signers").write_text(key.allowed_signers_line + "\n")
            (agent / ".env").write_text(f"DATABASE_URL=postgresql://dreichor@127.0.0.1/dreichor_{env}\n")
            config = agent / "controller.yaml"
            config.write_text(
                f"environment: {env}\nroot: {self.root}\n"
                f"source: {{url: '{repo.url}', branch: main, interval: 1, timeout: 10}}\n"
                "trust: {allowed_signers: trust/allowed_signers}\n"
                f"image: {{repository: {registry.repository}}}\n"
                f"docker: {{url: '{engine.url}'}}\n"
                f"api: {{listen: '127.0.0.1:{free_port()}'}}\n"
                "health: {timeout: 20, stable: 2}\n"
            )
            self.configs[env] = config

    def sync(self, env: str = "prod", *args: str) -> int:
        """``dreichor-controller sync`` for ``env``, in-process; returns its exit code."""
        return cli_main(["sync", "--config", str(self.configs[env]), *args])

    def status(self, env: str = "prod") -> Status:
        """The status file of ``env``; a missing or unreadable one is an error."""
        status = read_status(self.root / env / "deploy-agent" / "state" / "status.json")
        if status is None:
            raise BedError(f"no readable status file for {env}")
        return status

    def running(self, env: str = "prod") -> dict[str, object]:
        """``docker inspect`` of the runtime container of ``env``; a missing one is an error."""
        inspect = self.engine.inspect(f"dreichor-runtime-{env}")
        if inspect is None:
            raise BedError(f"dreichor-runtime-{env} does not exist")
        return inspect

    def image(self, env: str = "prod") -> str:
        """The image reference the runtime container of ``env`` was created from."""
        return str(self.running(env)["Config"]["Image"])  # type: ignore[index]

    def publish(self, message: str, *, key: SshKey | str | None = "trusted", **manifests: str) -> str:
        """Write the manifests given (env=image), commit signed by the trusted key (or ``key``), push."""
        for env, image in manifests.items():
            self.repo.write(f"envs/{env}.yaml", manifest_text(env, image))
        sha = self.repo.commit(message, key=self.key if key == "trusted" else key)  # type: ignore[arg-type]
        self.repo.push()
        return sha

    def audit(self, env: str = "prod") -> list[dict[str, object]]:
        """The audit events of ``env``, oldest first."""
        return read_events(self.root / env / "deploy-agent" / "state" / "audit.jsonl")

    def start_daemon(self, env: str = "prod", **extra_env: str) -> subprocess.Popen[str]:
        """``dreichor-controller run`` for ``env`` in a child process.

        Its stdout and stderr go to files (a pipe nobody reads would block its logging):
        read them with ``daemon_output``.
        """
        package_root = Path(__file__).resolve().parents[1]
        self._runs += 1
        out = (self.root / f"daemon-{env}-{self._runs}.out").open("w")
        err = (self.root / f"daemon-{env}-{self._runs}.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "run", "--config", str(self.configs[env])],
            env={**os.environ, "PYTHONPATH": str(package_root), **extra_env},
            stdout=out,
            stderr=err,
            text=True,
        )
        out.close()
        err.close()
        self._outputs[proc.pid] = (Path(out.name), Path(err.name))
        return proc

    def daemon_output(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        """What a daemon started by ``start_daemon`` wrote to stdout and stderr so far."""
        out, err = self._outputs[proc.pid]
        return out.read_text(), err.read_text()


def wait_for(predicate: Callable[[], bool], *, timeout: float = 60, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; an exception in it counts as 'not yet'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, BedError, KeyError, TypeError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s")


def page_sample(*, now: datetime, reason: str = "", environment: str = "prod", events: int = 60) -> dict[str, Any]:
    """The keyword arguments of ``page.render_page`` for a host that runs one revision and refused the next.

    ``reason`` replaces the refusal's reason (tests put markup there); ``events``
    audit lines are generated, so the page's cut to the last 50 shows.
    """
    running, refused, older = (
        "3f9c2a7e5b1d4c6f8a0e9b2d7c4f1a3e5b6d8c0f",
        "a71be04c9d2f6e8b1c3a5d7f9e0b2c4d6f8a1b3c",
        "9" * 40,
    )
    image = "registry.example/dreichor-runtime@sha256:" + "4b1d" * 16
    minutes = [now - timedelta(minutes=m) for m in (0, 1, 2, 3, 42, 43, 900)]
    reason = reason or "image tag 'latest' is refused in prod, even next to a digest (layout: image source)"
    status = {
        "environment": environment,
        "phase": "Degraded",
        "updated_at": minutes[0].isoformat(),
        "source": {
            "url": "git@github.com:dreichor/manifests.git",
            "branch": "main",
            "head": refused,
            "fetched_at": minutes[1].isoformat(),
            "stale": False,
        },
        "applied": {
            "revision": running,
            "image": image,
            "signer": "Ada Lovelace <ada@dreichor.example> (ed25519)",
            "image_signer": "SHA256:" + "Zm9vYmFy" * 5 + "Zm9v",
            "applied_at": minutes[4].isoformat(),
        },
        "last_attempt": {"revision": refused, "result": "refused", "reason": reason, "at": minutes[2].isoformat()},
        "container": {
            "name": f"dreichor-runtime-{environment}",
            "id": "c0ffee",
            "image": image,
            "state": "running",
            "health": "healthy",
        },
        "quarantined": "content:" + "5555" * 16,
    }
    lines = [
        {
            "at": (minutes[6] + timedelta(minutes=i)).isoformat(),
            "event": "applied",
            "revision": older,
            "reason": f"deploy {i}",
            "prev": "0" * 64,
        }
        for i in range(events - 2)
    ]
    lines += [
        {"at": minutes[4].isoformat(), "event": "applied", "revision": running, "image": image, "prev": "0" * 64},
        {"at": minutes[2].isoformat(), "event": "refused", "revision": refused, "reason": reason, "prev": "0" * 64},
    ]
    snapshots = [
        {
            "id": f"{minutes[4]:%Y%m%dT%H%M%S%fZ}-{older[:12]}",
            "created_at": minutes[4].isoformat(),
            "revision": older,
            "image": image,
            "reason": f"replace: revision {running[:12]}",
        },
    ]
    plan = {"action": "nothing", "reason": "the running container matches the applied revision", "drift": []}
    return {"status": status, "snapshots": snapshots, "events": lines, "chain": None, "plan": plan, "now": now}


def history_events(*, now: datetime) -> list[dict[str, Any]]:
    """Four weeks of decisions before the last day, oldest first: the timeline's sample.

    Thirteen changes applied (each 40 minutes after its commit), two rolled back (restored by
    the next change 3 h and 5 h later), a refusal, a change that waited for approvals, and a
    suspension by alice: 15 deployments, a failure rate of 2 ÷ 15, a lead time of 40 min
    and a time to restore of 4 h.
    """
    start = now - timedelta(days=28)
    image = "registry.example/dreichor-runtime@sha256:" + "4b1d" * 16
    events: list[dict[str, Any]] = []

    def add(at: datetime, event: str, **fields: Any) -> None:
        revision = f"{len(events):02d}" + "c0de" * 9 + "aa"
        events.append({"at": at.isoformat(), "event": event, "revision": revision, **fields, "prev": "0" * 64})

    for day in range(0, 22, 2):
        at = start + timedelta(days=day, hours=10)
        tag = f"1.{day // 2}.0"
        add(at, "applied", image=image, tag=tag, committed_at=(at - timedelta(minutes=40)).isoformat(), signer="ada")
        if day in (4, 12):
            failed = at + timedelta(days=1)
            add(failed, "rolled_back", image=image, tag=f"{tag}-rc", reason="health gate failed")
            fixed = failed + timedelta(hours=3 if day == 4 else 5)
            add(
                fixed,
                "applied",
                image=image,
                tag=f"{tag}-fix",
                committed_at=(fixed - timedelta(minutes=40)).isoformat(),
            )
    add(start + timedelta(days=17, hours=15), "refused", reason="not signed by a trusted key")
    add(start + timedelta(days=23, hours=9), "waiting_approval", reason="waiting for approvals (1 of 2: alice)")
    add(start + timedelta(days=25, hours=8), "suspended", by="alice", reason="database maintenance")
    add(start + timedelta(days=25, hours=12), "resumed", by="alice")
    events.sort(key=lambda e: e["at"])
    return events
