"""Pure parts of signature checking: payload extraction, allowed_signers, SSHSIG parsing, fuzzed."""

from __future__ import annotations

import base64
import contextlib
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.errors import Refused
from controller.signatures.allowed_signers import parse_allowed_signers, parse_public_keys
from controller.signatures.payload import split_commit
from controller.signatures.sshsig import parse_armored, verify

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDd5Y7u0R1oK0bGJ6j9fU3ZgKzq3p4n2x8m0b1c2d3e4"
COMMIT = (
    b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"
    b"author A <a@x> 1700000000 +0000\n"
    b"committer A <a@x> 1700000000 +0000\n"
    b"gpgsig -----BEGIN SSH SIGNATURE-----\n"
    b" U1NIU0lH\n"
    b" \n"
    b" -----END SSH SIGNATURE-----\n"
    b"mergetag object abc\n"
    b" type commit\n"
    b"\n"
    b"message\n gpgsig in the message stays\n"
)


def test_the_payload_is_the_commit_without_its_signature_header() -> None:
    signed = split_commit(COMMIT)
    assert signed.signature == b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n\n-----END SSH SIGNATURE-----\n"
    assert signed.payload == (
        b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"
        b"author A <a@x> 1700000000 +0000\n"
        b"committer A <a@x> 1700000000 +0000\n"
        b"mergetag object abc\n"
        b" type commit\n"
        b"\n"
        b"message\n gpgsig in the message stays\n"
    )


def test_an_unsigned_commit_has_no_signature() -> None:
    raw = b"tree x\nauthor a\n\nmsg\n"
    assert split_commit(raw) == split_commit(raw)
    assert split_commit(raw).signature is None
    assert split_commit(raw).payload == raw


@pytest.mark.parametrize("second", [b"gpgsig ", b"gpgsig-sha256 "])
def test_two_signature_headers_are_refused(second: bytes) -> None:
    raw = b"tree x\ngpgsig a\n b\n" + second + b"c\n\nmsg\n"
    with pytest.raises(Refused, match="two signature headers"):
        split_commit(raw)


def test_allowed_signers_options_and_principals() -> None:
    [entry] = parse_allowed_signers(
        f'# comment\n\n"a@x,*@dreichor.io" namespaces="git,file",valid-after="20200101",'
        f'valid-before="203001021530Z" {KEY} comment here\n'
    )
    assert entry.principals == ("a@x", "*@dreichor.io")
    assert entry.allows_namespace("git") and not entry.allows_namespace("ssh")
    assert entry.valid_before == datetime(2030, 1, 2, 15, 30, tzinfo=UTC)
    assert entry.validity_reason(datetime(2031, 1, 1, tzinfo=UTC)) is not None
    assert entry.validity_reason(datetime(2025, 1, 1, tzinfo=UTC)) is None
    assert entry.key == KEY


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"a@x cert-authority {KEY}", "cert-authority entries are not supported"),
        (f"a@x {KEY.split(maxsplit=1)[0]}", "expected 'principals [options] keytype key'"),
        (f'a@x valid-before="tomorrow" {KEY}', "is not YYYYMMDD"),
        (f'a@x valid-before="20231340" {KEY}', "is not a real date"),
        (f'a@x foo="1" {KEY}', "unknown option 'foo'"),
        (f"a@x namespaces=git {KEY}", "needs a quoted value"),
        ('a@x namespaces="git ssh-ed25519 AAAA', "unbalanced quotes"),
        ("a@x ssh-ed25519 not*base64", "not valid base64"),
    ],
)
def test_a_bad_allowed_signers_line_is_refused_by_number(line: str, expected: str) -> None:
    with pytest.raises(Refused, match=re.escape(expected)) as info:
        parse_allowed_signers(f"# first\n{line}\n")
    assert "line 2" in str(info.value)


def test_revoked_keys_hold_ssh_keys_and_openpgp_fingerprints() -> None:
    keys = parse_public_keys(f"{KEY} old laptop\n# c\nab12 CD34\n")
    assert keys == {KEY, "AB12CD34"}


@pytest.mark.parametrize(
    ("armored", "expected"),
    [
        (b"not armored", "not armored"),
        (b"-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----", "not valid base64"),
        (b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----", "truncated"),
        (
            b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAg==\n-----END SSH SIGNATURE-----",
            "unsupported version",
        ),
    ],
)
def test_a_malformed_sshsig_is_refused(armored: bytes, expected: str) -> None:
    with pytest.raises(Refused, match=expected):
        parse_armored(armored)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_sshsig_parser(data: bytes) -> None:
    armored = b"-----BEGIN SSH SIGNATURE-----\n" + base64.b64encode(b"SSHSIG" + data) + b"\n-----END SSH SIGNATURE-----"
    with contextlib.suppress(Refused):
        verify(parse_armored(armored), b"payload")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes_the_allowed_signers_parser(text: str) -> None:
    with contextlib.suppress(Refused):
        parse_allowed_signers(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_payload_extraction(data: bytes) -> None:
    try:
        signed = split_commit(data)
    except Refused:
        return
    assert len(signed.payload) <= len(data)
