"""Commit signatures with real keys signing through real git; SSH verdicts agree with git's own."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.cli import main
from controller.errors import Refused
from controller.signatures.commits.policy import TrustPolicy, Verdict, VerifiedCache, verify_commits
from controller.signatures.commits.verification import verify_revision
from controller.source.git import GitSource
from testbed import (
    GpgKey,
    ManifestRepo,
    SshKey,
    drop_signing_usage,
    gpg_algorithm,
    make_gpg_key,
    make_ssh_key,
    revoke_gpg_key,
    revoke_gpg_subkey,
    ssh_fingerprint,
    ssh_sign,
    with_signature,
)

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    folder = tmp_path_factory.mktemp("sshkeys")
    return {
        "ed25519": make_ssh_key(folder, name="ed"),
        "ecdsa": make_ssh_key(folder, name="ec", key_type="ecdsa", bits=256),
        "rsa": make_ssh_key(folder, name="rsa", key_type="rsa", bits=3072),
        "stranger": make_ssh_key(folder, name="stranger"),
    }


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GpgKey]:
    base = tmp_path_factory.mktemp("gpg")
    return {
        "rsa": make_gpg_key(base / "rsa", name="rsa", algo="rsa3072"),
        "subkey": make_gpg_key(base / "sub", name="sub", subkey=True),
        "stranger": make_gpg_key(base / "stranger", name="stranger"),
    }


class Bed:
    """A manifest repo, the host's trust files, and both verifiers (ours and git's)."""

    def __init__(self, tmp_path: Path, repo: ManifestRepo) -> None:
        self.repo = repo
        self.signers = tmp_path / "allowed_signers"
        self.openpgp = tmp_path / "openpgp.asc"
        self.revoked = tmp_path / "revoked_keys"
        self.source = GitSource(tmp_path / "cache", url=repo.url, branch="main")
        for path in (self.signers, self.openpgp, self.revoked):
            path.write_text("")

    def trust(self, *lines: str) -> None:
        self.signers.write_text("".join(f"{line}\n" for line in lines))

    def commit(self, key: SshKey | GpgKey | None, message: str = "deploy") -> str:
        self.repo.write("envs/prod.yaml", f"environment: prod\n# {message} {time.monotonic_ns()}\n")
        sha = self.repo.commit(message, key=key)
        self.repo.push(force=True)
        return sha

    def policy(self) -> TrustPolicy:
        return TrustPolicy.load(allowed_signers=self.signers, openpgp_keys=self.openpgp, revoked_keys=self.revoked)

    def ours(self, sha: str, *, mode: str = "head", applied: str | None = None, now: datetime | None = None) -> Verdict:
        """Our verdict on ``sha`` by the clock ``now`` (the real one when None)."""
        self.source.fetch()
        clock = now or datetime.now(UTC)
        return verify_revision(self.source, self.policy(), mode=mode, applied=applied, head=sha, now=clock)

    def gits(self, sha: str) -> bool:
        proc = subprocess.run(
            [
                "git",
                "-c",
                f"gpg.ssh.allowedSignersFile={self.signers}",
                "-c",
                f"gpg.ssh.revocationFile={self.revoked}",
                "verify-commit",
                sha,
            ],
            cwd=self.repo.work,
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def refusal(self, sha: str, **kwargs: object) -> str:
        with pytest.raises(Refused) as info:
            self.ours(sha, **kwargs)  # type: ignore[arg-type]
        return str(info.value)


@pytest.fixture
def bed(tmp_path: Path, manifest_repo: ManifestRepo) -> Bed:
    return Bed(tmp_path, manifest_repo)


@pytest.mark.parametrize(
    ("name", "key_type"),
    [
        ("ed25519", "ssh-ed25519"),
        ("ecdsa", "ecdsa-sha2-nistp256"),
        ("rsa", "ssh-rsa"),
    ],
)
def test_a_trusted_ssh_signer_is_accepted_like_git_does(
    bed: Bed, keys: dict[str, SshKey], name: str, key_type: str
) -> None:
    key = keys[name]
    bed.trust(key.allowed_signers_line)
    sha = bed.commit(key)
    verdict = bed.ours(sha)
    assert verdict.signer == f"{key.principal} ({key_type} {ssh_fingerprint(key)})"
    assert bed.gits(sha)


def test_the_rsa_signature_is_rsa_sha2_512(bed: Bed, keys: dict[str, SshKey]) -> None:
    bed.trust(keys["rsa"].allowed_signers_line)
    raw = bed.repo.raw_commit(bed.commit(keys["rsa"]))
    assert b"gpgsig -----BEGIN SSH SIGNATURE-----" in raw


def _namespace_file_signature(bed: Bed, keys: dict[str, SshKey]) -> str:
    sha = bed.commit(None)
    payload = bed.repo.raw_commit(sha)
    forged = with_signature(payload, ssh_sign(keys["ed25519"], payload, namespace="file"))
    sha = bed.repo.store_commit(forged)
    bed.repo.push(force=True)
    return sha


def _message_changed(bed: Bed, keys: dict[str, SshKey]) -> str:
    raw = bed.repo.raw_commit(bed.commit(keys["ed25519"], message="deploy 1.4.2"))
    sha = bed.repo.store_commit(raw.replace(b"deploy 1.4.2", b"deploy 6.6.6"))
    bed.repo.push(force=True)
    return sha


def _mangled(change: Callable[[bytes], bytes]) -> Callable[[Bed, dict[str, SshKey]], str]:
    def make(bed: Bed, keys: dict[str, SshKey]) -> str:
        payload = bed.repo.raw_commit(bed.commit(None))
        signature = change(ssh_sign(keys["ed25519"], payload))
        sha = bed.repo.store_commit(with_signature(payload, signature))
        bed.repo.push(force=True)
        return sha

    return make


def _two_headers(bed: Bed, keys: dict[str, SshKey]) -> str:
    payload = bed.repo.raw_commit(bed.commit(None))
    signature = ssh_sign(keys["ed25519"], payload)
    sha = bed.repo.store_commit(with_signature(with_signature(payload, signature), signature))
    bed.repo.push(force=True)
    return sha


def _nul_in_message(bed: Bed, keys: dict[str, SshKey]) -> str:
    payload = bed.repo.raw_commit(bed.commit(None)) + b"hidden\x00text\n"
    sha = bed.repo.store_commit(with_signature(payload, ssh_sign(keys["ed25519"], payload)))
    bed.repo.push(force=True)
    return sha


def _sshsig_fields(armored: bytes) -> list[bytes]:
    """The SSHSIG blob's string fields after magic and version: key, namespace, reserved, hash, signature."""
    blob = base64.b64decode(b"".join(armored.strip().split(b"\n")[1:-1]))
    fields, pos = [], 10
    while pos < len(blob):
        size = int.from_bytes(blob[pos : pos + 4], "big")
        fields.append(blob[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return fields


def _sshsig(fields: list[bytes], tail: bytes = b"") -> bytes:
    blob = b"SSHSIG" + (1).to_bytes(4, "big") + b"".join(len(f).to_bytes(4, "big") + f for f in fields) + tail
    body = base64.encodebytes(blob).replace(b"\n", b"")
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return b"-----BEGIN SSH SIGNATURE-----\n" + b"\n".join(lines) + b"\n-----END SSH SIGNATURE-----\n"


def _trailing_after_blob(signature: bytes) -> bytes:
    return _sshsig(_sshsig_fields(signature), tail=b"\x00\x00\x00\x00")


def _trailing_in_signature_field(signature: bytes) -> bytes:
    fields = _sshsig_fields(signature)
    fields[4] += b"\x00\x00\x00\x00"
    return _sshsig(fields)


def _sha256_header_only(bed: Bed, keys: dict[str, SshKey]) -> str:
    payload = bed.repo.raw_commit(bed.commit(None))
    raw = with_signature(payload, ssh_sign(keys["ed25519"], payload)).replace(b"\ngpgsig ", b"\ngpgsig-sha256 ", 1)
    sha = bed.repo.store_commit(raw)
    bed.repo.push(force=True)
    return sha


ED = 'namespaces="git"'
REFUSED_CASES: list[tuple[str, Callable[[Bed, dict[str, SshKey]], str], str, str]] = [
    ("unsigned", lambda bed, keys: bed.commit(None), "", "is not signed"),
    ("untrusted key", lambda bed, keys: bed.commit(keys["stranger"]), "", "is not in allowed_signers"),
    (
        "namespaces file only",
        lambda bed, keys: bed.commit(keys["ed25519"]),
        'namespaces="file"',
        "not allowed for namespace 'git'",
    ),
    ("signed for namespace file", _namespace_file_signature, ED, "namespace 'file', not 'git'"),
    (
        "valid-before in the past",
        lambda bed, keys: bed.commit(keys["ed25519"]),
        f'{ED},valid-before="20200101Z"',
        "expired at 2020-01-01",
    ),
    (
        "valid-after in the future",
        lambda bed, keys: bed.commit(keys["ed25519"]),
        f'{ED},valid-after="{(NOW + timedelta(days=30)):%Y%m%d}Z"',
        "is valid only after",
    ),
    ("message changed after signing", _message_changed, ED, "does not match the commit"),
    (
        "truncated signature",
        _mangled(lambda s: s[:200] + b"\n-----END SSH SIGNATURE-----\n"),
        ED,
        "SSH signature",
    ),
    (
        "garbage signature",
        _mangled(lambda s: b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"),
        ED,
        "SSH signature",
    ),
    ("bad base64", _mangled(lambda s: s.replace(b"U1NIU0lH", b"U1N!@#lH", 1)), ED, "not valid base64"),
    ("trailing bytes after the SSHSIG fields", _mangled(_trailing_after_blob), ED, "trailing bytes"),
    ("trailing bytes in the signature field", _mangled(_trailing_in_signature_field), ED, "trailing bytes"),
    ("only a gpgsig-sha256 header in a SHA-1 repository", _sha256_header_only, ED, "is not signed"),
]


@pytest.mark.parametrize(
    ("make", "options", "expected"), [c[1:] for c in REFUSED_CASES], ids=[c[0] for c in REFUSED_CASES]
)
def test_a_bad_ssh_signature_is_refused_and_git_agrees(
    bed: Bed,
    keys: dict[str, SshKey],
    make: Callable[[Bed, dict[str, SshKey]], str],
    options: str,
    expected: str,
) -> None:
    key = keys["ed25519"]
    bed.trust(f"{key.principal} {options} {key.public}" if options else key.allowed_signers_line)
    sha = make(bed, keys)
    assert expected in bed.refusal(sha)
    assert not bed.gits(sha)


def test_a_nul_byte_in_the_message_is_signed_bytes_like_any_other(bed: Bed, keys: dict[str, SshKey]) -> None:
    bed.trust(keys["ed25519"].allowed_signers_line)
    sha = _nul_in_message(bed, keys)
    assert bed.ours(sha).identity == keys["ed25519"].principal
    assert bed.gits(sha)
    tampered = bed.repo.store_commit(bed.repo.raw_commit(sha).replace(b"hidden\x00", b"hidden\x01"))
    bed.repo.push(force=True)
    assert "does not match the commit" in bed.refusal(tampered)


def test_two_signature_headers_are_refused_where_git_would_merge_them(bed: Bed, keys: dict[str, SshKey]) -> None:
    bed.trust(keys["ed25519"].allowed_signers_line)
    sha = _two_headers(bed, keys)
    assert "two signature headers" in bed.refusal(sha)


def test_a_revoked_ssh_key_is_refused_and_git_agrees(bed: Bed, keys: dict[str, SshKey]) -> None:
    key = keys["ed25519"]
    bed.trust(key.allowed_signers_line)
    bed.revoked.write_text(key.public + "\n")
    sha = bed.commit(key)
    assert "revoked_keys" in bed.refusal(sha)
    assert not bed.gits(sha)


def test_a_key_revoked_in_an_openssh_krl_is_refused_and_git_agrees(bed: Bed, keys: dict[str, SshKey]) -> None:
    key = keys["ed25519"]
    bed.trust(key.allowed_signers_line)
    sha = bed.commit(key)
    assert bed.ours(sha).identity == key.principal
    subprocess.run(
        ["ssh-keygen", "-q", "-k", "-f", str(bed.revoked), str(key.path.with_suffix(".pub"))],
        check=True,
        capture_output=True,
    )
    assert "revoked_keys" in bed.refusal(sha)
    assert not bed.gits(sha)


@pytest.mark.parametrize(
    "line",
    [
        "lines nobody can read",
        "0xB5690EEEBB952194",
        "968479A1AFF927E37D1A566BB5690EEEBB95219",
        "ssh-ed25519 AAAAnot-base64",
    ],
)
def test_an_unreadable_revoked_keys_line_refuses_verify_until_fixed(
    bed: Bed, keys: dict[str, SshKey], tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    key = keys["ed25519"]
    bed.trust(key.allowed_signers_line)
    bed.commit(key)
    config = tmp_path / "controller.yaml"
    config.write_text(
        f"environment: prod\nroot: {tmp_path / 'root'}\nsource: {{url: '{bed.repo.url}'}}\n"
        f"trust: {{allowed_signers: {bed.signers}, revoked_keys: {bed.revoked}, mode: head}}\n"
    )
    bed.revoked.write_text(f"# retired keys\n{line}\n")
    assert main(["verify", "--config", str(config)]) == 3
    assert f"{bed.revoked} line 2: " in capsys.readouterr().err
    bed.revoked.write_text(f"# retired keys\n{keys['stranger'].public} old laptop\n")
    assert main(["verify", "--config", str(config)]) == 0


@pytest.mark.parametrize("reason", [1, 2, 3], ids=["compromised", "superseded", "retired"])
def test_a_revoked_signing_subkey_signs_nothing_now_whatever_the_reason(bed: Bed, tmp_path: Path, reason: int) -> None:
    key = make_gpg_key(tmp_path / "sub", name="sub", subkey=True)
    sha = bed.commit(key)
    revoke_gpg_subkey(key, reason=reason)
    bed.openpgp.write_text(key.export())
    assert "subkey" in bed.refusal(sha) and "is revoked" in bed.refusal(sha)


def test_our_clock_decides_not_the_committer_date(bed: Bed, keys: dict[str, SshKey]) -> None:
    key = keys["ed25519"]
    bed.trust(f'{key.principal} {ED},valid-before="{(NOW - timedelta(days=1)):%Y%m%d}Z" {key.public}')
    bed.repo.git("config", "user.name", "x")
    env_date = (NOW - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bed.repo.write("envs/prod.yaml", "environment: prod\n")
    bed.repo.git("-c", "core.abbrev=40", "commit", "-q", "-S", "-m", "backdated", f"--date={env_date}", key=key)
    sha = bed.repo.head()
    bed.repo.push(force=True)
    assert "expired at" in bed.refusal(sha)


def test_first_parent_mode_refuses_an_unsigned_commit_under_a_signed_head(bed: Bed, keys: dict[str, SshKey]) -> None:
    key = keys["ed25519"]
    bed.trust(key.allowed_signers_line)
    applied = bed.commit(key, "applied")
    unsigned = bed.commit(None, "sneaky")
    head = bed.commit(key, "looks fine")
    assert unsigned[:12] in bed.refusal(head, mode="first-parent", applied=applied)
    assert bed.ours(head, mode="head", applied=applied).identity == key.principal


def test_the_cache_keeps_cryptography_and_judges_trust_on_every_use(bed: Bed, keys: dict[str, SshKey]) -> None:
    key = keys["ed25519"]
    expiry = NOW + timedelta(days=2)
    bed.trust(f'{key.principal} {ED},valid-before="{expiry:%Y%m%d%H%M%S}Z" {key.public}')
    sha = bed.commit(key)
    bed.source.fetch()
    cache = VerifiedCache()
    reads: list[str] = []

    def read(commit: str) -> bytes:
        reads.append(commit)
        return bed.source.raw_commit(commit)

    policy = bed.policy()
    for _ in range(3):
        verify_commits([sha], read_commit=read, policy=policy, now=NOW, cache=cache)
    assert reads == [sha]
    with pytest.raises(Refused, match="expired at"):  # valid-before passed: the cached result is judged anew
        verify_commits([sha], read_commit=read, policy=policy, now=expiry + timedelta(seconds=1), cache=cache)
    bed.trust(keys["rsa"].allowed_signers_line)
    with pytest.raises(Refused, match="is not in allowed_signers"):
        verify_commits([sha], read_commit=read, policy=bed.policy(), now=NOW, cache=cache)
    bed.trust(key.allowed_signers_line)
    bed.revoked.write_text(key.public + "\n")
    with pytest.raises(Refused, match="revoked_keys"):
        verify_commits([sha], read_commit=read, policy=bed.policy(), now=NOW, cache=cache)
    assert reads == [sha]


def test_a_cached_openpgp_verdict_is_refused_once_the_key_expires(bed: Bed, tmp_path: Path) -> None:
    key = make_gpg_key(tmp_path / "short", name="short", expire="1d")
    bed.openpgp.write_text(key.export())
    sha = bed.commit(key)
    bed.source.fetch()
    cache = VerifiedCache()
    policy = bed.policy()
    now = datetime.now(UTC)
    assert verify_commits([sha], read_commit=bed.source.raw_commit, policy=policy, now=now, cache=cache)
    with pytest.raises(Refused, match="expired at"):
        verify_commits([sha], read_commit=lambda _c: b"", policy=policy, now=now + timedelta(days=2), cache=cache)


@pytest.mark.parametrize("name", ["rsa", "subkey"])
def test_a_trusted_openpgp_key_is_reported_by_full_fingerprint(
    bed: Bed, gpg_keys: dict[str, GpgKey], name: str
) -> None:
    key = gpg_keys[name]
    bed.openpgp.write_text(key.export())
    sha = bed.commit(key)
    verdict = bed.ours(sha)
    assert verdict.identity == key.fingerprint.upper()
    assert verdict.signer == f"{key.fingerprint.upper()} {key.uid} ({gpg_algorithm(key)})"
    assert verdict.detail == key.uid


def test_a_signed_merge_commit_with_an_openpgp_subkey_is_trusted(bed: Bed, gpg_keys: dict[str, GpgKey]) -> None:
    key = gpg_keys["subkey"]
    bed.openpgp.write_text(key.export())
    bed.commit(key, "base")
    bed.repo.git("checkout", "-q", "-b", "pr")
    bed.commit(key, "change")
    bed.repo.git("checkout", "-q", "main")
    bed.repo.git("merge", "-q", "--no-ff", "-S", "-m", "Merge pull request #1", "pr", key=key)
    bed.repo.push()
    merge = bed.repo.head()
    assert bed.ours(merge, mode="first-parent").identity == key.fingerprint.upper()


def test_an_untrusted_openpgp_key_is_refused(bed: Bed, gpg_keys: dict[str, GpgKey]) -> None:
    bed.openpgp.write_text(gpg_keys["rsa"].export())
    sha = bed.commit(gpg_keys["stranger"])
    assert "is not by a trusted key" in bed.refusal(sha)


def test_an_expired_openpgp_key_is_refused_by_our_clock(bed: Bed, tmp_path: Path) -> None:
    key = make_gpg_key(tmp_path / "short", name="short", expire="1d")
    bed.openpgp.write_text(key.export())
    sha = bed.commit(key)
    assert bed.ours(sha).identity == key.fingerprint.upper()  # by a clock before the expiry: trusted
    with pytest.raises(Refused, match="expired"):
        bed.ours(sha, now=datetime.now(UTC) + timedelta(days=2))  # the same commit, two days on


def test_a_revoked_openpgp_key_is_refused(bed: Bed, tmp_path: Path) -> None:
    key = make_gpg_key(tmp_path / "rev", name="rev")
    sha = bed.commit(key)
    revoke_gpg_key(key)
    bed.openpgp.write_text(key.export())
    assert "revoked" in bed.refusal(sha)


def test_an_empty_or_missing_trust_file_refuses_every_commit(bed: Bed, keys: dict[str, SshKey]) -> None:
    sha = bed.commit(keys["ed25519"])
    assert "trust policy is empty" in bed.refusal(sha)
    bed.signers.unlink()
    assert "is missing" in bed.refusal(sha)


def test_the_verify_command_fetches_and_prints_the_signer(
    bed: Bed, keys: dict[str, SshKey], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = keys["ed25519"]
    bed.trust(key.allowed_signers_line)
    config = tmp_path / "controller.yaml"
    config.write_text(
        f"environment: prod\nroot: {tmp_path / 'root'}\nsource: {{url: '{bed.repo.url}'}}\n"
        f"trust: {{allowed_signers: {bed.signers}, mode: head}}\n"
    )
    signed = bed.commit(key)
    assert main(["verify", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == f"trusted: {key.principal} (ssh-ed25519 {ssh_fingerprint(key)})"
    unsigned = bed.commit(None)
    assert main(["verify", "--config", str(config), "--json"]) == 3
    assert '"trusted": false' in capsys.readouterr().out
    assert main(["verify", signed, "--config", str(config)]) == 0
    assert unsigned != signed


def test_a_key_that_may_no_longer_sign_is_refused(bed: Bed, tmp_path: Path) -> None:
    key = make_gpg_key(tmp_path / "nosign", name="nosign", algo="rsa2048")
    sha = bed.commit(key)
    drop_signing_usage(key)
    bed.openpgp.write_text(key.export())
    assert "non-signing key" in bed.refusal(sha)


def test_an_expired_signing_subkey_is_refused_by_our_clock(bed: Bed, tmp_path: Path) -> None:
    key = make_gpg_key(tmp_path / "subexp", name="subexp", subkey=True, subkey_expire="1d")
    bed.openpgp.write_text(key.export())
    sha = bed.commit(key)
    assert bed.ours(sha).identity == key.fingerprint.upper()  # by a clock before the subkey expired
    with pytest.raises(Refused, match=r"signing subkey .* expired"):
        bed.ours(sha, now=datetime.now(UTC) + timedelta(days=2))  # the same commit, two days on
