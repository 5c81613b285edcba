"""The host's trust policy: which keys may sign the commits a controller deploys.

Built only from files on the host (never from the manifest repository):
``allowed_signers`` for SSH keys, an optional armored OpenPGP keyring, and an
optional list of revoked keys that wins over both.  Validity windows are
judged by the controller's clock, passed in, never by the committer date.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller.errors import Reason, Refused
from controller.records.files import FileKey, file_key
from controller.signatures.commits import sshsig
from controller.signatures.commits.allowed_signers import AllowedSigner, parse_allowed_signers
from controller.signatures.commits.openpgp import OpenPgpCheck, OpenPgpKeyring
from controller.signatures.commits.payload import split_commit
from controller.signatures.commits.revocations import Revocations, parse_revoked_keys


@dataclass(frozen=True)
class Verdict:
    """A trusted signature: who signed, with what key, in the words people use."""

    identity: str  # SSH principal(s), or OpenPGP primary fingerprint
    key_type: str  # "ssh-ed25519 SHA256:…" or "RSA 4096"
    detail: str = ""  # the OpenPGP user ID, or the SSH key's allowed_signers line
    kind: str = "ssh"  # "ssh" or "openpgp"

    @property
    def signer(self) -> str:
        """The signer as ``verify``, status, audit and logs all print it."""
        return self.describe()

    def describe(self) -> str:
        """``hs@ox.cx (ssh-ed25519 SHA256:…)`` or ``<fingerprint> GitHub <noreply@github.com> (RSA 4096)``."""
        extra = f" {self.detail}" if self.detail and self.kind == "openpgp" else ""
        return f"{self.identity}{extra} ({self.key_type})"


@dataclass(frozen=True)
class SshCheck:
    """What the SSH cryptography proved: this key signed the commit for namespace ``git``."""

    key: str  # "type base64"
    blob: bytes
    key_type: str
    fingerprint: str


Check = SshCheck | OpenPgpCheck


class TrustPolicy:
    """The loaded trust files, and a verifier of raw commits against them.

    ``check`` is the cryptography (what the verdict cache may keep); ``judge``
    applies the trust files and the clock, and runs on every use.
    """

    def __init__(
        self, *, ssh: list[AllowedSigner], openpgp: OpenPgpKeyring, revoked: Revocations, digests: tuple[str, str]
    ):
        self.ssh = ssh
        self.openpgp = openpgp
        self.revoked = revoked
        self.digest, self.crypto_digest = digests

    @classmethod
    def load(cls, *, allowed_signers: Path, openpgp_keys: Path | None, revoked_keys: Path | None) -> TrustPolicy:
        """Read the trust files; a named file that is missing refuses every commit, a bad line the policy."""
        signers_text = read_trust_file(allowed_signers, name="allowed_signers file")
        openpgp_data = read_trust_file(
            openpgp_keys, name="openpgp_keys file", consequence="the trust policy is not what the config says"
        )
        revoked_data = read_trust_file(
            revoked_keys, name="revoked_keys file", consequence="the keys it revokes would be trusted again"
        )
        digest = hashlib.sha256()
        for part in (signers_text, openpgp_data, revoked_data):
            digest.update(hashlib.sha256(part).digest())
        return cls(
            ssh=parse_allowed_signers(signers_text.decode("utf-8", "replace")),
            openpgp=OpenPgpKeyring(openpgp_data),
            revoked=parse_revoked_keys(revoked_data, path=revoked_keys),
            digests=(digest.hexdigest(), hashlib.sha256(openpgp_data).hexdigest()),
        )

    def require_signers(self) -> None:
        """Refuse at once when no signer at all is trusted."""
        if not self.ssh and not len(self.openpgp):
            raise Refused("the trust policy is empty: no signer is trusted", code=Reason.UNTRUSTED_SIGNER)

    def verify_raw_commit(self, raw: bytes, *, now: datetime) -> Verdict:
        """Verify one raw commit object; return the verdict or raise ``Refused``."""
        self.require_signers()
        return self.judge(self.check(raw, now=now), now=now)

    def check(self, raw: bytes, *, now: datetime) -> Check:
        """The cryptography of one raw commit (``now`` only words an OpenPGP refusal)."""
        signed = split_commit(raw)
        if signed.signature is None:
            raise Refused("the commit is not signed", code=Reason.UNSIGNED)
        armored = signed.signature.strip()
        if armored.startswith(sshsig.BEGIN):
            sig = sshsig.parse_armored(armored)
            sshsig.verify(sig, signed.payload)
            return SshCheck(sig.public_key_line, sig.public_key, sig.key_type, sig.fingerprint)
        if armored.startswith(b"-----BEGIN PGP SIGNATURE-----"):
            return self.openpgp.check(armored, signed.payload, now=now)
        raise Refused("the commit's signature is neither SSH nor OpenPGP", code=Reason.BAD_SIGNATURE)

    def judge(self, check: Check, *, now: datetime) -> Verdict:
        """Whether the key ``check`` names is trusted, unrevoked and valid *now*."""
        if isinstance(check, SshCheck):
            return self._judge_ssh(check, now=now)
        signer = self.openpgp.judge(check, now=now)
        if self.revoked.revokes_openpgp(signer.fingerprint, signer.signing_key):
            raise Refused(f"OpenPGP key {signer.fingerprint} is listed in revoked_keys", code=Reason.REVOKED_KEY)
        return Verdict(signer.fingerprint, signer.algorithm, signer.user_id, kind="openpgp")

    def _judge_ssh(self, check: SshCheck, *, now: datetime) -> Verdict:
        short = f"{check.key_type} {check.fingerprint}"
        if self.revoked.revokes_ssh(check.blob):
            raise Refused(f"SSH key {short} is listed in revoked_keys", code=Reason.REVOKED_KEY)
        entries = [e for e in self.ssh if e.key == check.key]
        if not entries:
            raise Refused(f"SSH key {short} is not in allowed_signers", code=Reason.UNTRUSTED_SIGNER)
        usable = [e for e in entries if e.allows_namespace("git")]
        if not usable:
            raise Refused(f"SSH key {short} is not allowed for namespace 'git'", code=Reason.UNTRUSTED_SIGNER)
        for entry in usable:
            if entry.validity_reason(now) is None:
                return Verdict(",".join(entry.principals), short, f"allowed_signers line {entry.line}")
        reason = usable[0].validity_reason(now)
        raise Refused(f"SSH key {short} {reason} (by the controller's clock)", code=Reason.EXPIRED_KEY)


def read_trust_file(
    path: Path | None,
    *,
    name: str = "trust file",
    consequence: str = "no signer is trusted",
    code: Reason = Reason.UNTRUSTED_SIGNER,
) -> bytes:
    """A trust file's bytes (empty when the config names none); a named file that is missing is ``Refused``.

    A file the config names must be there: a missing ``revoked_keys`` read as "nothing revoked"
    would trust a revoked key again, so every trust file fails closed, naming itself.
    """
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Refused(f"{name} {path} is missing: {consequence}", code=code) from None
    except OSError as exc:
        raise Refused(f"{name} {path} is unreadable: {exc.strerror}", code=code) from None


class PolicyCache:
    """The last loaded trust policy, kept while its files stay as they were when it was read.

    The files are stat'ed before they are read, so a change during the read
    leaves a key that no longer matches and the next load reads them again.
    A load that refuses (a missing or bad file) is not kept: it is tried again.
    """

    def __init__(self) -> None:
        self._kept: tuple[tuple[FileKey | None, ...], TrustPolicy] | None = None

    def load(self, *, allowed_signers: Path, openpgp_keys: Path | None, revoked_keys: Path | None) -> TrustPolicy:
        """``TrustPolicy.load``, or the policy loaded before when no file changed since."""
        key = tuple(file_key(path) for path in (allowed_signers, openpgp_keys, revoked_keys))
        if self._kept is not None and self._kept[0] == key:
            return self._kept[1]
        policy = TrustPolicy.load(allowed_signers=allowed_signers, openpgp_keys=openpgp_keys, revoked_keys=revoked_keys)
        self._kept = (key, policy)
        return policy


class VerifiedCache:
    """Cryptographic results by commit id: an unchanged head costs no cryptography.

    Only the cryptography is kept.  Which keys are trusted, revoked or expired
    is judged against the trust files and the clock on every use, so a cached
    commit whose key expires, or leaves allowed_signers, is refused at once.
    An OpenPGP result depends on the keyring it was checked with, so the
    keyring's digest is part of the key.
    """

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], Check] = {}

    def get(self, commit: str, policy: TrustPolicy) -> Check | None:
        """The cached cryptographic result, if this commit was checked (with this keyring)."""
        return self._checks.get((commit, policy.crypto_digest))

    def put(self, commit: str, policy: TrustPolicy, check: Check) -> None:
        """Remember a signature that verified (refusals are not cached: they are cheap to repeat)."""
        if len(self._checks) > 10_000:
            self._checks.clear()
        self._checks[(commit, policy.crypto_digest)] = check


def verify_commits(
    commits: Sequence[str],
    *,
    read_commit: Callable[[str], bytes],
    policy: TrustPolicy,
    now: datetime,
    cache: VerifiedCache | None = None,
) -> Verdict:
    """Verify every commit (oldest first); return the verdict of the last one (the head).

    The first refused commit refuses the whole range, naming that commit.
    """
    if not commits:
        raise Refused("no commit to verify", code=Reason.UNSIGNED)
    verdicts = [_verify_one(c, read_commit=read_commit, policy=policy, now=now, cache=cache) for c in commits]
    return verdicts[-1]


def _verify_one(
    commit: str,
    *,
    read_commit: Callable[[str], bytes],
    policy: TrustPolicy,
    now: datetime,
    cache: VerifiedCache | None,
) -> Verdict:
    try:
        policy.require_signers()
        check = cache.get(commit, policy) if cache else None
        if check is None:
            check = policy.check(read_commit(commit), now=now)
            if cache:
                cache.put(commit, policy, check)
        return policy.judge(check, now=now)
    except Refused as exc:
        raise Refused(f"commit {commit[:12]}: {exc}", code=exc.code) from None
