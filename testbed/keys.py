"""Real signing keys: ssh-keygen keys and SSHSIG signatures, gpg keys, their revocations and detached signatures."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.common import BedError, _run


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
