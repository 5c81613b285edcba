"""Pure parts of signature checking: payload extraction, allowed_signers, revoked_keys, SSHSIG and MPIs, fuzzed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.errors import Refused
from controller.signatures.commits.allowed_signers import match_pattern_list, parse_allowed_signers
from controller.signatures.commits.packets import canonical_signature
from controller.signatures.commits.payload import split_commit
from controller.signatures.commits.revocations import KRL_MAGIC, parse_revoked_keys
from controller.signatures.commits.sshsig import parse_armored, verify

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


def test_two_signature_headers_are_refused() -> None:
    raw = b"tree x\ngpgsig a\n b\ngpgsig c\n\nmsg\n"
    with pytest.raises(Refused, match="two signature headers"):
        split_commit(raw)


def test_a_sha256_signature_header_is_an_ordinary_header_in_a_sha1_repository() -> None:
    raw = b"tree x\ngpgsig-sha256 a\n b\n\nmsg\n"
    assert split_commit(raw).signature is None
    assert split_commit(raw).payload == raw
    both = b"tree x\ngpgsig s\ngpgsig-sha256 a\n b\n\nmsg\n"
    assert split_commit(both).signature == b"s\n"
    assert split_commit(both).payload == b"tree x\ngpgsig-sha256 a\n b\n\nmsg\n"


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


@pytest.mark.parametrize(
    ("namespaces", "admitted"),
    [
        ("git", True),
        ("git,file", True),
        ("*", True),
        ("g?t", True),
        ("*,!git", False),
        ("!git,*", False),
        ("!file", False),
        ("[g]it", False),
        ("GIT", False),
        ("gi", False),
    ],
)
def test_namespace_patterns_match_as_openssh_matches_them(namespaces: str, admitted: bool) -> None:
    assert match_pattern_list("git", namespaces) is admitted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20300102Z", datetime(2030, 1, 2, tzinfo=UTC)),
        ("203001021530Z", datetime(2030, 1, 2, 15, 30, tzinfo=UTC)),
        ("20300102153045z", datetime(2030, 1, 2, 15, 30, 45, tzinfo=UTC)),
        ("203001021530UTC", datetime(2030, 1, 2, 15, 30, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_openssh_reads_them(value: str, expected: datetime) -> None:
    [entry] = parse_allowed_signers(f'a@x valid-before="{value}" {KEY}\n')
    assert entry.valid_before == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('valid-before="2030010215Z"', "is not YYYYMMDD"),
        ('valid-before="20300102Z",valid-before="20310102Z"', "given twice"),
        ('namespaces="git",NAMESPACES="file"', "given twice"),
        ('valid-after="20300102Z",valid-before="20290102Z"', "valid-before is not after valid-after"),
        ('namespaces="git",', "end with a comma"),
        ('namespaces="git"x', "unknown option"),
    ],
)
def test_options_openssh_refuses_refuse_the_line(options: str, expected: str) -> None:
    with pytest.raises(Refused, match=re.escape(expected)):
        parse_allowed_signers(f"a@x {options} {KEY}\n")


def test_option_names_are_case_insensitive() -> None:
    [entry] = parse_allowed_signers(f'a@x Namespaces="git",VALID-BEFORE="20300101Z" {KEY}\n')
    assert entry.namespaces == "git"
    assert entry.valid_before == datetime(2030, 1, 1, tzinfo=UTC)


REAL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBE7gQJRZIiYSXl8l72aDthoQ1AQIW/3fmmzLZ+XRODW"
BLOB = base64.b64decode(REAL_KEY.split()[1])
FPR = "968479A1AFF927E37D1A566BB5690EEEBB952194"


@pytest.mark.parametrize(
    "line",
    [
        f"{REAL_KEY} old laptop",
        f'hs@ox.cx namespaces="git" {REAL_KEY}',
        f"hs@ox.cx {REAL_KEY} comment",
    ],
)
def test_revoked_ssh_keys_are_read_from_key_and_allowed_signers_lines(line: str) -> None:
    revoked = parse_revoked_keys(f"# retired\n\n{line}\n".encode())
    assert revoked.revokes_ssh(BLOB)


@pytest.mark.parametrize(
    "line",
    [
        FPR,
        FPR.lower(),
        f"0x{FPR}",
        " ".join(FPR[i : i + 4] for i in range(0, 40, 4)),
        f"{FPR}  # GitHub web-flow, retired",
        "9684 79A1 AFF9 27E3 7D1A  566B B569 0EEE BB95 2194",
    ],
)
def test_revoked_openpgp_fingerprints_are_read_in_the_forms_people_write(line: str) -> None:
    assert parse_revoked_keys(f"{line}\n".encode()).revokes_openpgp(FPR)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0xB5690EEEBB952194", "is a key id, not a fingerprint"),
        (FPR[:-1], "has 40 hex digits, not 39"),
        ("ssh-ed25519", "has no base64 key"),
        ("ssh-ed25519 AAAA!!", "not valid base64"),
        (f"ssh-rsa {REAL_KEY.split()[1]}", "is not a ssh-rsa key"),
        ("hs@ox.cx is revoked", "is not an SSH public key, an allowed_signers line or an OpenPGP fingerprint"),
        ("revoke everything", "is not an SSH public key"),
    ],
)
def test_an_unreadable_revoked_keys_line_refuses_the_policy_by_file_and_line(line: str, expected: str) -> None:
    with pytest.raises(Refused, match=re.escape(expected)) as info:
        parse_revoked_keys(f"# first\n{line}\n".encode(), path=Path("/etc/dreichor/trust/revoked_keys"))
    assert str(info.value).startswith("/etc/dreichor/trust/revoked_keys line 2: ")
    assert info.value.code == "BadTrustPolicy"


def _krl(*sections: tuple[int, bytes]) -> bytes:
    def string(value: bytes) -> bytes:
        return len(value).to_bytes(4, "big") + value

    head = KRL_MAGIC + (1).to_bytes(4, "big") + bytes(24) + string(b"") + string(b"")
    return head + b"".join(bytes([kind]) + string(body) for kind, body in sections)


def test_a_krl_revokes_keys_explicitly_and_by_hash() -> None:
    def string(value: bytes) -> bytes:
        return len(value).to_bytes(4, "big") + value

    assert parse_revoked_keys(_krl((2, string(BLOB)))).revokes_ssh(BLOB)
    assert parse_revoked_keys(_krl((5, string(hashlib.sha256(BLOB).digest())))).revokes_ssh(BLOB)
    assert parse_revoked_keys(_krl((3, string(hashlib.sha1(BLOB).digest())))).revokes_ssh(BLOB)  # noqa: S324
    assert not parse_revoked_keys(_krl((1, b""))).revokes_ssh(BLOB)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (KRL_MAGIC + b"\x00", "truncated OpenSSH KRL"),
        (_krl((9, b"")), "unknown section type 9"),
        (b"\xff\xfe binary", "neither an OpenSSH KRL nor UTF-8 text"),
    ],
)
def test_an_unreadable_krl_refuses_the_policy(data: bytes, expected: str) -> None:
    with pytest.raises(Refused, match=expected):
        parse_revoked_keys(data)


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


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes_the_revoked_keys_parser(text: str) -> None:
    with contextlib.suppress(Refused):
        parse_revoked_keys(text.encode())


def _armor(packets: bytes) -> bytes:
    return b"-----BEGIN PGP SIGNATURE-----\n\n" + base64.b64encode(packets) + b"\n-----END PGP SIGNATURE-----\n"


def _v4_signature(mpi: bytes) -> bytes:
    body = bytes([4, 0, 1, 8]) + b"\x00\x02\x02\x1b" + b"\x00\x00" + b"\xab\xcd" + mpi
    return bytes([0xC2, len(body)]) + body


def test_a_non_minimal_mpi_is_rewritten_minimal_and_nothing_else_changes() -> None:
    loose = _v4_signature(b"\x00\x20" + b"\x00\x00\x01\xff")  # 32 bits declared, 9 used
    tight = _v4_signature(b"\x00\x09" + b"\x01\xff")
    assert canonical_signature(_armor(loose))[6:] == tight[2:]
    assert canonical_signature(_armor(tight))[6:] == tight[2:]


@pytest.mark.parametrize(
    "armored",
    [
        b"garbage",
        _armor(b"\x01\x02"),
        _armor(bytes([0xC6, 1, 0])),
        b"-----BEGIN PGP SIGNATURE-----\n!!\n-----END PGP SIGNATURE-----",
    ],
)
def test_what_is_not_a_signature_packet_is_passed_on_unchanged(armored: bytes) -> None:
    assert canonical_signature(armored) == armored


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_packets_never_crash_the_mpi_rewrite(data: bytes) -> None:
    canonical_signature(_armor(data))
