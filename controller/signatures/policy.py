"""The host's trust policy: which keys may sign the commits a controller deploys.

Built only from files on the host (never from the manifest repository):
``allowed_signers`` for SSH keys, an optional armored OpenPGP keyring, and an
optional list of revoked keys that wins over both.  Validity windows are
judged by the controller's clock, passed in, never by the committer date.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller.errors import Refused
from controller.signatures import sshsig
from controller.signatures.allowed_signers import AllowedSigner, parse_allowed_signers, parse_public_keys
from controller.signatures.openpgp import OpenPgpKeyring
from controller.signatures.payload import split_commit


@dataclass(frozen=True)
class Verdict:
    """A trusted signature: who signed, with what kind of key."""

    signer: str  # SSH principal, or OpenPGP primary fingerprint
    key_type: str
    detail: str = ""  # the OpenPGP user ID, or the SSH key's allowed_signers line

    def describe(self) -> str:
        """``<signer> (<key type>)`` as ``verify`` prints it."""
        extra = f" {self.detail}" if self.detail and self.key_type.startswith("openpgp") else ""
        return f"{self.signer}{extra} ({self.key_type})"


class TrustPolicy:
    """The loaded trust files, and a verifier of raw commits against them."""

    def __init__(self, *, ssh: list[AllowedSigner], openpgp: OpenPgpKeyring, revoked: set[str], digest: str):
        self.ssh = ssh
        self.openpgp = openpgp
        self.revoked = revoked
        self.digest = digest

    @classmethod
    def load(cls, *, allowed_signers: Path, openpgp_keys: Path | None, revoked_keys: Path | None) -> TrustPolicy:
        """Read the trust files; a missing allowed_signers file refuses every commit."""
        signers_text = _read(allowed_signers, required=True)
        openpgp_data = _read(openpgp_keys, required=False)
        revoked_text = _read(revoked_keys, required=False)
        digest = hashlib.sha256()
        for part in (signers_text, openpgp_data, revoked_text):
            digest.update(hashlib.sha256(part).digest())
        return cls(
            ssh=parse_allowed_signers(signers_text.decode("utf-8", "replace")),
            openpgp=OpenPgpKeyring(openpgp_data),
            revoked=parse_public_keys(revoked_text.decode("utf-8", "replace")),
            digest=digest.hexdigest(),
        )

    def verify_raw_commit(self, raw: bytes, *, now: datetime) -> Verdict:
        """Verify one raw commit object; return the verdict or raise ``Refused``."""
        if not self.ssh and not len(self.openpgp):
            raise Refused("the trust policy is empty: no signer is trusted", code="UntrustedSigner")
        signed = split_commit(raw)
        if signed.signature is None:
            raise Refused("the commit is not signed", code="Unsigned")
        armored = signed.signature.strip()
        if armored.startswith(sshsig.BEGIN):
            return self._verify_ssh(armored, signed.payload, now=now)
        if armored.startswith(b"-----BEGIN PGP SIGNATURE-----"):
            signer = self.openpgp.verify(armored, signed.payload, now=now)
            if signer.fingerprint in self.revoked or signer.signing_key in self.revoked:
                raise Refused(f"OpenPGP key {signer.fingerprint} is listed in revoked_keys", code="RevokedKey")
            return Verdict(signer.fingerprint, f"openpgp {signer.algorithm}", signer.user_id)
        raise Refused("the commit's signature is neither SSH nor OpenPGP", code="BadSignature")

    def _verify_ssh(self, armored: bytes, payload: bytes, *, now: datetime) -> Verdict:
        sig = sshsig.parse_armored(armored)
        sshsig.verify(sig, payload)
        key = sig.public_key_line
        if key in self.revoked:
            raise Refused(f"SSH key {sig.key_type} is listed in revoked_keys", code="RevokedKey")
        entries = [e for e in self.ssh if e.key == key]
        if not entries:
            raise Refused(f"SSH key {_short(key)} is not in allowed_signers", code="UntrustedSigner")
        usable = [e for e in entries if e.allows_namespace("git")]
        if not usable:
            raise Refused(f"SSH key {_short(key)} is not allowed for namespace 'git'", code="UntrustedSigner")
        for entry in usable:
            if entry.validity_reason(now) is None:
                return Verdict(",".join(entry.principals), sig.key_type, f"allowed_signers line {entry.line}")
        reason = usable[0].validity_reason(now)
        raise Refused(f"SSH key {_short(key)} {reason} (by the controller's clock)", code="ExpiredKey")


def _read(path: Path | None, *, required: bool) -> bytes:
    if path is None:
        return b""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if required:
            raise Refused(f"trust file {path} is missing: no signer is trusted", code="UntrustedSigner") from None
        return b""
    except OSError as exc:
        raise Refused(f"trust file {path} is unreadable: {exc.strerror}", code="UntrustedSigner") from None


def _short(key: str) -> str:
    """An SSH key as ``type SHA256:…``, the fingerprint ssh-keygen -l prints."""
    key_type, _, blob = key.partition(" ")
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return f"{key_type} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


class VerifiedCache:
    """Verdicts by (commit id, policy digest): an unchanged head costs no cryptography.

    A changed trust file changes the digest, so every commit is verified anew.
    """

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], Verdict] = {}

    def get(self, commit: str, policy: TrustPolicy) -> Verdict | None:
        """The cached verdict, if this commit was verified under this policy."""
        return self._verdicts.get((commit, policy.digest))

    def put(self, commit: str, policy: TrustPolicy, verdict: Verdict) -> None:
        """Remember a trusted verdict (refusals are not cached: they are cheap to repeat)."""
        if len(self._verdicts) > 10_000:
            self._verdicts.clear()
        self._verdicts[(commit, policy.digest)] = verdict


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
        raise Refused("no commit to verify", code="Unsigned")
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
    cached = cache.get(commit, policy) if cache else None
    if cached is not None:
        return cached
    try:
        verdict = policy.verify_raw_commit(read_commit(commit), now=now)
    except Refused as exc:
        raise Refused(f"commit {commit[:12]}: {exc}", code=exc.code) from None
    if cache:
        cache.put(commit, policy, verdict)
    return verdict
