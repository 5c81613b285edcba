"""The trust policy is kept between passes only while its files stay as they were (docs/trust.md)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from controller.errors import Refused
from controller.signatures.commits.policy import PolicyCache, TrustPolicy
from testbed import SshKey, make_ssh_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[SshKey, SshKey]:
    """Two ed25519 keys whose allowed_signers lines have the same length (a@x… and b@x…)."""
    folder = tmp_path_factory.mktemp("keys")
    return make_ssh_key(folder, name="a"), make_ssh_key(folder, name="b")


def _load(cache: PolicyCache, trust: Path, *, revoked: bool = False) -> TrustPolicy:
    revoked_keys = trust / "revoked_keys" if revoked else None
    return cache.load(allowed_signers=trust / "allowed_signers", openpgp_keys=None, revoked_keys=revoked_keys)


def _principals(policy: TrustPolicy) -> list[str]:
    return [p for signer in policy.ssh for p in signer.principals]


def _blob(key: SshKey) -> bytes:
    return base64.b64decode(key.public.split()[1])


def test_unchanged_files_are_not_parsed_again(tmp_path: Path, keys: tuple[SshKey, SshKey]) -> None:
    (tmp_path / "allowed_signers").write_text(keys[0].allowed_signers_line + "\n")
    cache = PolicyCache()
    assert _load(cache, tmp_path) is _load(cache, tmp_path)


def test_an_edit_in_place_of_the_same_size_counts_from_the_next_load(
    tmp_path: Path, keys: tuple[SshKey, SshKey]
) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text(keys[0].allowed_signers_line + "\n")
    cache = PolicyCache()
    assert _principals(_load(cache, tmp_path)) == ["a@dreichor.test"]
    inode, size, mtime = signers.stat().st_ino, signers.stat().st_size, signers.stat().st_mtime_ns
    with signers.open("r+") as handle:  # same inode, same size: only the times tell
        handle.write(keys[1].allowed_signers_line + "\n")
    os.utime(signers, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))
    assert (signers.stat().st_ino, signers.stat().st_size) == (inode, size)
    assert _principals(_load(cache, tmp_path)) == ["b@dreichor.test"]


def test_a_file_replaced_by_rename_with_the_old_times_counts_from_the_next_load(
    tmp_path: Path, keys: tuple[SshKey, SshKey]
) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text(keys[0].allowed_signers_line + "\n")
    cache = PolicyCache()
    assert _principals(_load(cache, tmp_path)) == ["a@dreichor.test"]
    before = signers.stat()
    new = tmp_path / "allowed_signers.new"
    new.write_text(keys[1].allowed_signers_line + "\n")
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    new.replace(signers)  # what an editor or a config tool does: another inode
    assert _principals(_load(cache, tmp_path)) == ["b@dreichor.test"]


def test_a_revoked_keys_file_the_config_names_must_exist_and_counts_from_the_next_load(
    tmp_path: Path, keys: tuple[SshKey, SshKey]
) -> None:
    (tmp_path / "allowed_signers").write_text(keys[0].allowed_signers_line + "\n")
    cache = PolicyCache()
    with pytest.raises(Refused, match=r"revoked_keys file .*revoked_keys is missing: the keys it revokes would"):
        _load(cache, tmp_path, revoked=True)  # named but absent: never "nothing is revoked"
    (tmp_path / "revoked_keys").write_text("")
    assert not _load(cache, tmp_path, revoked=True).revoked.revokes_ssh(_blob(keys[0]))
    (tmp_path / "revoked_keys").write_text(keys[0].public + "\n")
    assert _load(cache, tmp_path, revoked=True).revoked.revokes_ssh(_blob(keys[0]))
    (tmp_path / "revoked_keys").unlink()  # a revoked key does not sign again because its file went away
    with pytest.raises(Refused, match="is missing"):
        _load(cache, tmp_path, revoked=True)


def test_a_refusal_is_not_kept(tmp_path: Path, keys: tuple[SshKey, SshKey]) -> None:
    cache = PolicyCache()
    with pytest.raises(Refused, match="is missing"):
        _load(cache, tmp_path)
    (tmp_path / "allowed_signers").write_text("a@x not-a-key\n")
    with pytest.raises(Refused):
        _load(cache, tmp_path)
    (tmp_path / "allowed_signers").write_text(keys[0].allowed_signers_line + "\n")
    assert _principals(_load(cache, tmp_path)) == ["a@dreichor.test"]
    (tmp_path / "allowed_signers").unlink()
    with pytest.raises(Refused, match="is missing"):
        _load(cache, tmp_path)
