"""``allowed_signers`` options read as OpenSSH reads them, every row cross-checked with ``ssh-keygen -Y verify``.

One real ed25519 key signs one payload for namespace ``git``; each row writes
one ``allowed_signers`` line, and both our verifier and ``ssh-keygen -Y verify``
(with the same file, principal and namespace) must reach the same verdict.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.errors import Refused
from controller.signatures.commits.policy import TrustPolicy
from testbed import SshKey, make_ssh_key, ssh_sign, with_signature

PAYLOAD = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1700000000 +0000\n\ndeploy\n"
NOW = datetime.now(UTC)
LATER = NOW + timedelta(days=30)
EARLIER = NOW - timedelta(days=30)

ROWS: list[tuple[str, str, bool]] = [
    ("namespace git", 'namespaces="git"', True),
    ("namespace star", 'namespaces="*"', True),
    ("namespace question mark", 'namespaces="g?t"', True),
    ("namespace list", 'namespaces="file,git"', True),
    ("negation after star", 'namespaces="*,!git"', False),
    ("negation before star", 'namespaces="!git,*"', False),
    ("negation of another", 'namespaces="!file"', False),
    ("bracket class is literal", 'namespaces="[g]it"', False),
    ("namespaces are case-sensitive", 'namespaces="GIT"', False),
    ("option names are not", 'NameSpaces="git"', True),
    ("namespaces twice", 'namespaces="git",namespaces="git"', False),
    ("valid-before twice", f'valid-before="{LATER:%Y%m%d}Z",valid-before="{LATER:%Y%m%d}Z"', False),
    ("valid-after YYYYMMDD", f'valid-after="{EARLIER:%Y%m%d}"', True),
    ("valid-after YYYYMMDDHHMM", f'valid-after="{EARLIER:%Y%m%d%H%M}"', True),
    ("valid-after YYYYMMDDHHMMSSZ", f'valid-after="{EARLIER:%Y%m%d%H%M%S}Z"', True),
    ("valid-before UTC suffix", f'valid-before="{LATER:%Y%m%d}UTC"', True),
    ("valid-before 10 digits", f'valid-before="{LATER:%Y%m%d}12"', False),
    ("valid-before passed", f'valid-before="{EARLIER:%Y%m%d%H%M}Z"', False),
    ("valid-after to come", f'valid-after="{LATER:%Y%m%d}Z"', False),
    ("window around now", f'valid-after="{EARLIER:%Y%m%d}Z",valid-before="{LATER:%Y%m%d}Z"', True),
    ("window the wrong way round", f'valid-after="{LATER:%Y%m%d}Z",valid-before="{EARLIER:%Y%m%d}Z"', False),
    ("unknown option", 'namespaces="git",colour="blue"', False),
    ("unquoted value", "namespaces=git", False),
    ("trailing comma", 'namespaces="git",', False),
]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SshKey:
    return make_ssh_key(tmp_path_factory.mktemp("keys"), name="ops")


@pytest.fixture(scope="module")
def signature(key: SshKey) -> bytes:
    return ssh_sign(key, PAYLOAD)


def ours(signers: Path, signature: bytes) -> bool:
    """Our verdict on the payload signed as a commit."""
    try:
        policy = TrustPolicy.load(allowed_signers=signers, openpgp_keys=None, revoked_keys=None)
        policy.verify_raw_commit(with_signature(PAYLOAD, signature), now=datetime.now(UTC))
    except Refused:
        return False
    return True


def ssh_keygens(signers: Path, signature: bytes, principal: str) -> bool:
    """``ssh-keygen -Y verify`` with the same file, principal and namespace."""
    sig = signers.with_suffix(".sig")
    sig.write_bytes(signature)
    args = ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", principal, "-n", "git", "-s", str(sig)]
    return subprocess.run(args, input=PAYLOAD, capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize(("options", "trusted"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_allowed_signers_options_agree_with_ssh_keygen(
    key: SshKey, signature: bytes, tmp_path: Path, options: str, trusted: bool
) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"{key.principal} {options} {key.public}\n")
    assert ssh_keygens(signers, signature, key.principal) is trusted
    assert ours(signers, signature) is trusted
