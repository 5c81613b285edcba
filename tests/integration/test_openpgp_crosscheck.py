"""OpenPGP verdicts cross-checked against gpg: real gpg-made keys and signatures, both verifiers, one table.

Each case is a keyring, a detached signature made by gpg, and the payload.  Our
verifier and ``gpg --verify`` (in a fresh home with only that keyring) judge
it.  Where the two disagree the difference is intended and named in the
table; everywhere else "trusted" must equal gpg's exit code 0.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.errors import Refused
from controller.signatures.commits.openpgp import OpenPgpKeyring
from testbed import (
    GpgKey,
    drop_signing_usage,
    gnupg_home,
    gpg_detach_sign,
    make_gpg_key,
    revoke_gpg_primary,
    revoke_gpg_subkey,
)

PAYLOAD = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1700000000 +0000\n\nmerge\n"
PAST = ("--faked-system-time", "20200601T000000")  # a signature made in 2020
OWN_CLOCK = "own clock: gpg calls a signature made before the key {} good (exit 0); the controller refuses it now"


@dataclass(frozen=True)
class Made:
    """What a case hands both verifiers."""

    keyring: str
    signature: bytes
    payload: bytes = PAYLOAD


@dataclass(frozen=True)
class Case:
    """One row: how to make it, our expected verdict, gpg's status word, and the named difference."""

    name: str
    make: Callable[[Path], Made]
    ours: str  # "trusted", or a phrase of the refusal
    gpg_status: str  # the decisive [GNUPG:] status keyword
    difference: str | None = None


def _signed(key: GpgKey, *extra: str, payload: bytes = PAYLOAD) -> Made:
    return Made(key.export(), gpg_detach_sign(key, payload, extra=extra), payload)


def _current(base: Path) -> Made:
    return _signed(make_gpg_key(base / "k", name="current", algo="rsa3072"))


def _expired_primary(base: Path) -> Made:
    return _signed(make_gpg_key(base / "k", name="old", expire="1y", at="20200101T000000"), *PAST)


def _expired_subkey(base: Path) -> Made:
    key = make_gpg_key(base / "k", name="oldsub", subkey=True, subkey_expire="1y", at="20200101T000000")
    return _signed(key, *PAST)


def _revoked_primary(reason: int) -> Callable[[Path], Made]:
    def make(base: Path) -> Made:
        key = make_gpg_key(base / "k", name="rev", at="20200101T000000")
        made = _signed(key, *PAST)
        revoke_gpg_primary(key, reason=reason)
        return Made(key.export(), made.signature)

    return make


def _revoked_subkey(reason: int) -> Callable[[Path], Made]:
    def make(base: Path) -> Made:
        key = make_gpg_key(base / "k", name="revsub", subkey=True, at="20200101T000000")
        made = _signed(key, *PAST)
        revoke_gpg_subkey(key, reason=reason)
        return Made(key.export(), made.signature)

    return make


def _not_signing(base: Path) -> Made:
    key = make_gpg_key(base / "k", name="nosign", algo="rsa2048")
    made = _signed(key)
    drop_signing_usage(key)
    return Made(key.export(), made.signature)


def _unknown(base: Path) -> Made:
    trusted = make_gpg_key(base / "t", name="trusted")
    return Made(trusted.export(), _signed(make_gpg_key(base / "s", name="stranger")).signature)


def _changed_payload(base: Path) -> Made:
    made = _current(base)
    return Made(made.keyring, made.signature, PAYLOAD.replace(b"merge", b"merge evil"))


def _non_minimal_mpi(base: Path) -> Made:
    """A gpg RSA signature whose value has a zero top bit, rewritten with the MPI length GitHub writes."""
    key = make_gpg_key(base / "k", name="webflow", algo="rsa3072")
    for attempt in range(64):
        payload = PAYLOAD + f"attempt {attempt}\n".encode()
        signature = gpg_detach_sign(key, payload, extra=("--no-armor",))
        bits = int.from_bytes(signature[-386:-384], "big")
        if bits < 3072:
            loose = signature[:-386] + (3072).to_bytes(2, "big") + signature[-384:]
            return Made(key.export(), _armor(loose), payload)
    raise AssertionError("gpg made no signature with a zero top bit in 64 tries")


def _armor(packets: bytes) -> bytes:
    """ASCII armor with its CRC-24 line (RFC 4880 §6), as gpg writes it."""
    crc = 0xB704CE
    for octet in packets:
        crc ^= octet << 16
        for _ in range(8):
            crc = (crc << 1) ^ (0x1864CFB if crc & 0x800000 else 0)
    body = base64.encodebytes(packets) + b"=" + base64.b64encode((crc & 0xFFFFFF).to_bytes(3, "big")) + b"\n"
    return b"-----BEGIN PGP SIGNATURE-----\n\n" + body + b"-----END PGP SIGNATURE-----\n"


CASES = [
    Case("current key", _current, "trusted", "GOODSIG"),
    Case("expired primary", _expired_primary, "expired at 2020-12-31", "EXPKEYSIG", OWN_CLOCK.format("expired")),
    Case("expired subkey", _expired_subkey, "subkey", "EXPKEYSIG", OWN_CLOCK.format("expired")),
    Case("hard-revoked primary", _revoked_primary(1), "is revoked", "REVKEYSIG", OWN_CLOCK.format("was revoked")),
    Case("soft-revoked primary", _revoked_primary(3), "is revoked", "REVKEYSIG", OWN_CLOCK.format("was revoked")),
    Case("hard-revoked subkey", _revoked_subkey(1), "subkey", "REVKEYSIG", OWN_CLOCK.format("was revoked")),
    Case("superseded subkey", _revoked_subkey(2), "subkey", "REVKEYSIG", OWN_CLOCK.format("was revoked")),
    Case("key without the signing flag", _not_signing, "non-signing key", "ERRSIG"),
    Case(
        "SHA-1 signature",
        lambda base: _signed(make_gpg_key(base / "k", name="sha1"), "--digest-algo", "SHA1"),
        "uses SHA1, which is refused",
        "GOODSIG",
        "SHA-1 is collision-prone: the controller refuses it, gpg 2.2 still accepts it",
    ),
    Case(
        "signature dated in the future",
        lambda base: _signed(make_gpg_key(base / "k", name="future"), "--faked-system-time", "20300601T000000"),
        "dated in the future",
        "GOODSIG",
        "own clock: gpg accepts a signature dated after now; the controller does not",
    ),
    Case("unknown key", _unknown, "is not by a trusted key", "ERRSIG"),
    Case("non-minimal MPI (as GitHub writes it)", _non_minimal_mpi, "trusted", "GOODSIG"),
    Case("detached signature over a changed payload", _changed_payload, "does not verify", "BADSIG"),
]
_DECISIVE = ("GOODSIG", "EXPKEYSIG", "REVKEYSIG", "BADSIG", "ERRSIG", "EXPSIG")


def ours(made: Made) -> str:
    """Our verdict: ``trusted`` or the refusal sentence."""
    try:
        OpenPgpKeyring(made.keyring.encode()).verify(made.signature, made.payload, now=datetime.now(UTC))
    except Refused as exc:
        return str(exc)
    return "trusted"


def gpgs(made: Made, base: Path) -> tuple[int, str]:
    """``gpg --verify`` with only the case's keyring: (exit code, decisive status keyword)."""
    home = gnupg_home(base / "verifier")
    (base / "sig.asc").write_bytes(made.signature)
    (base / "payload").write_bytes(made.payload)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--status-fd", "1"]
    subprocess.run([*gpg, "--import"], input=made.keyring.encode(), capture_output=True, check=True)
    proc = subprocess.run(
        [*gpg, "--verify", str(base / "sig.asc"), str(base / "payload")], capture_output=True, text=True, check=False
    )
    words = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("[GNUPG:] ")]
    return proc.returncode, next((w for w in words if w in _DECISIVE), "none")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_our_openpgp_verdict_matches_gpg_or_names_why_not(case: Case, tmp_path: Path) -> None:
    made = case.make(tmp_path)
    verdict = ours(made)
    code, status = gpgs(made, tmp_path)
    assert status == case.gpg_status
    assert case.ours in verdict
    if case.difference is None:
        assert (verdict == "trusted") == (code == 0), f"gpg exit {code} ({status}), ours: {verdict}"
    else:
        assert (verdict == "trusted") != (code == 0), f"the named difference is gone: {case.difference}"
