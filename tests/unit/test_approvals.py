"""The parts of approvals (docs/design.md §15) that need no pass.

The statement, the config, ``approve``, what people see.

Signatures are real (``ssh-keygen -Y sign``, ``gpg --detach-sign``); the
verdicts of whole passes are in ``test_approvals_pass.py``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.api import page
from controller.cli import main
from controller.daemon.metrics import Metrics
from controller.errors import ConfigError, Refused
from controller.model.config import load_config, parse_config, repository_name
from controller.model.durations import parse_duration, spoken_duration
from controller.notifications.announcements import Memory, Policy, decide, decision_from_event
from controller.records.status import Status
from controller.signatures import approvals
from controller.signatures.approvals import (
    NAMESPACE,
    Statement,
    Subject,
    count_approvals,
    load_approvers,
    parse_approval,
)
from testbed import GpgKey, ManifestRepo, SshKey, gpg_detach_sign, make_gpg_key, make_ssh_key, page_sample, ssh_sign

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SUBJECT = Subject("github.com/ceerkle/dreichor-deployments", "prod", "ab" * 32)


def _statement(**changes: Any) -> Statement:
    fields: dict[str, Any] = {
        "repository": SUBJECT.repository,
        "environment": "prod",
        "path": "envs/prod.yaml",
        "sha256": SUBJECT.sha256,
        "created": NOW,
        "expires": NOW + timedelta(days=7),
    }
    return Statement(**{**fields, **changes})


def test_the_statement_is_seven_lines_each_ending_in_a_newline() -> None:
    assert _statement().to_bytes() == (
        b"dreichor-approval/v1\n"
        b"repository: github.com/ceerkle/dreichor-deployments\n"
        b"environment: prod\n"
        b"path: envs/prod.yaml\n"
        b"sha256: " + b"ab" * 32 + b"\n"
        b"created: 2026-12-02T10:00:00Z\n"
        b"expires: 2026-12-09T10:00:00Z\n"
    )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"dreichor-approval/v1\nrepository: x\n", "seven-line statement"),
        (b"dreichor-approval/v2\n" + b"\n".join(_statement().to_bytes().split(b"\n")[1:]) + b"sig", "does not start"),
        (_statement().to_bytes().replace(b"path:", b"file:") + b"sig", "where the field 'path' belongs"),
        (_statement().to_bytes().replace(b"10:00:00Z\nexp", b"10:00:00+00:00\nexp") + b"sig", "not YYYY-MM-DD"),
        (_statement().to_bytes().replace(b"2026-12-09", b"2026-13-09") + b"sig", "not a real time"),
        (_statement().to_bytes().replace(b"ab" * 32, b"AB" * 32) + b"sig", "64 lowercase hex"),
        (_statement().to_bytes().replace(b"prod\n", b"pr\xc3\xb6d\n", 1) + b"sig", "not ASCII"),
    ],
)
def test_a_malformed_statement_is_not_counted_and_says_why(data: bytes, words: str) -> None:
    with pytest.raises(approvals.NotCounted, match=words):
        parse_approval(data)


@pytest.mark.parametrize("char", ["\v", "\r", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"])
def test_a_line_separator_other_than_newline_in_a_statement_is_not_counted_never_a_bug(char: str) -> None:
    """N4: ``str.splitlines`` would split there and raise; a statement is split on "\\n" alone."""
    data = _statement().to_bytes().replace(b"environment: prod", f"environment: pr{char}od".encode(), 1) + b"sig"
    with pytest.raises(approvals.NotCounted, match=r"control character|seven-line statement|not ASCII"):
        parse_approval(data)


@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[SshKey, SshKey]:
    folder = tmp_path_factory.mktemp("keys")
    return make_ssh_key(folder, name="alice"), make_ssh_key(folder, name="bob")


def _approvers(
    tmp_path: Path, text: str, *, openpgp: str = "", people: dict[str, str] | None = None
) -> approvals.Approvers:
    (tmp_path / "approvers").write_text(text)
    (tmp_path / "openpgp.asc").write_text(openpgp)
    return load_approvers(
        tmp_path / "approvers", openpgp_keys=tmp_path / "openpgp.asc", revoked_keys=None, openpgp_people=people
    )


def _count(files: list[tuple[str, bytes]], approvers: approvals.Approvers) -> approvals.Tally:
    return count_approvals(
        files, subject=SUBJECT, approvers=approvers, threshold=2, max_age=timedelta(days=14), now=NOW
    )


def test_an_approvers_line_limited_to_the_git_namespace_does_not_approve(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]
) -> None:
    alice, _ = ssh_keys
    signed = _statement().to_bytes()
    files = [("alice.approval", signed + ssh_sign(alice, signed, namespace=NAMESPACE))]
    allowed = _count(files, _approvers(tmp_path, f'alice namespaces="dreichor-*" {alice.public}\n'))
    assert allowed.have == ["alice"]
    git_only = _count(files, _approvers(tmp_path, f'alice namespaces="git" {alice.public}\n'))
    assert git_only.have == [] and "not allowed for namespace 'dreichor-approval'" in git_only.rejected[0].reason


def test_an_approvers_key_past_its_valid_before_does_not_approve(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]
) -> None:
    alice, _ = ssh_keys
    signed = _statement().to_bytes()
    files = [("alice.approval", signed + ssh_sign(alice, signed, namespace=NAMESPACE))]
    tally = _count(files, _approvers(tmp_path, f'alice valid-before="20261201" {alice.public}\n'))
    assert tally.have == [] and "expired at 2026-12-01" in tally.rejected[0].reason


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ("alice,bob {a}\n", "names exactly one person, not 2"),
        ("alice {a}\nbob {a}\n", "listed for both alice and bob"),
    ],
)
def test_an_ambiguous_approvers_file_is_refused(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey], lines: str, words: str
) -> None:
    with pytest.raises(Refused, match=words):
        _approvers(tmp_path, lines.format(a=ssh_keys[0].public))


def test_a_missing_approvers_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"approvers file .* is missing: no one can approve"):
        load_approvers(tmp_path / "nope", openpgp_keys=None, revoked_keys=None)


def test_an_openpgp_approval_counts_for_the_person_the_host_maps_its_fingerprint_to(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]
) -> None:
    carol: GpgKey = make_gpg_key(tmp_path / "gnupg", name="carol")
    alice, _ = ssh_keys
    signed = _statement().to_bytes()
    files = [
        ("carol.approval", signed + gpg_detach_sign(carol, signed)),
        ("alice.approval", signed + ssh_sign(alice, signed, namespace=NAMESPACE)),
    ]
    approvers = _approvers(
        tmp_path, f"alice {alice.public}\n", openpgp=carol.export(), people={carol.fingerprint: "carol"}
    )
    tally = _count(files, approvers)
    assert tally.have == ["alice", "carol"] and tally.enough
    tampered = [("carol.approval", signed.replace(b"prod", b"dev", 1) + gpg_detach_sign(carol, signed))]
    assert _count(tampered, approvers).have == []


def test_one_person_with_an_ssh_and_an_openpgp_key_counts_once(tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]) -> None:
    """N5: alice's SSH key and alice's OpenPGP key are one person, not two towards the threshold."""
    alice_pgp = make_gpg_key(tmp_path / "gnupg", name="alice")
    alice, _ = ssh_keys
    signed = _statement().to_bytes()
    files = [
        ("a1.approval", signed + ssh_sign(alice, signed, namespace=NAMESPACE)),
        ("a2.approval", signed + gpg_detach_sign(alice_pgp, signed)),
    ]
    approvers = _approvers(
        tmp_path, f"alice {alice.public}\n", openpgp=alice_pgp.export(), people={alice_pgp.fingerprint: "alice"}
    )
    tally = _count(files, approvers)
    assert tally.have == ["alice"] and not tally.enough and approvers.people == ("alice",)


def test_an_openpgp_user_id_names_no_one(tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]) -> None:
    """N5: a key without a mapping does not count; a self-signed user ID 'bob' added later changes no one."""
    mallory = make_gpg_key(tmp_path / "gnupg", name="mallory")
    subprocess.run(
        ["gpg", "--homedir", str(mallory.home), "--batch", "--quick-add-uid", mallory.fingerprint, "bob <bob@x.test>"],
        check=True,
        capture_output=True,
    )
    signed = _statement().to_bytes()
    files = [("m.approval", signed + gpg_detach_sign(mallory, signed))]
    unmapped = _count(files, _approvers(tmp_path, f"alice {ssh_keys[0].public}\n", openpgp=mallory.export()))
    assert unmapped.have == [] and "names no person in approvals.openpgp_approvers" in unmapped.rejected[0].reason
    mapped = _approvers(
        tmp_path, f"alice {ssh_keys[0].public}\n", openpgp=mallory.export(), people={mallory.fingerprint: "mallory"}
    )
    assert _count(files, mapped).have == ["mallory"]


def test_one_person_under_two_spellings_or_a_mapped_key_not_held_is_refused(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]
) -> None:
    carol = make_gpg_key(tmp_path / "gnupg", name="carol")
    with pytest.raises(Refused, match="name one person twice: 'alice' and 'Alice'"):
        _approvers(
            tmp_path, f"alice {ssh_keys[0].public}\n", openpgp=carol.export(), people={carol.fingerprint: "Alice"}
        )
    with pytest.raises(Refused, match=f"openpgp_approvers names {'A' * 40}, a key .* does not hold"):
        _approvers(tmp_path, f"alice {ssh_keys[0].public}\n", openpgp=carol.export(), people={"A" * 40: "carol"})


def test_a_key_under_two_people_in_the_openpgp_mapping_is_a_config_error() -> None:
    fingerprint = "968479A1AFF927E37D1A566BB5690EEEBB952194"
    both = {fingerprint: "alice", "0x" + fingerprint.lower(): "bob"}
    with pytest.raises(ConfigError, match="is listed for both alice and bob"):
        _config({"threshold": 1, "approvers": "a", "openpgp_approvers": both})
    with pytest.raises(ConfigError, match="not a full OpenPGP fingerprint"):
        _config({"threshold": 1, "approvers": "a", "openpgp_approvers": {"5690EEEBB952194": "alice"}})


def test_approver_names_are_shown_through_the_sanitiser(tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]) -> None:
    alice, _ = ssh_keys
    signed = _statement().to_bytes()
    approvers = _approvers(tmp_path, f"al\x1b]52;c;eA==\x07ice {alice.public}\n")
    tally = _count([("a.approval", signed + ssh_sign(alice, signed, namespace=NAMESPACE))], approvers)
    assert all("\x1b" not in name for name in (*tally.have, *approvers.people))
    assert tally.have == ["al\\x1b]52;c;eA==\\x07ice"]


def test_more_than_32_files_or_a_file_over_16_kib_is_refused() -> None:
    with pytest.raises(Refused, match="holds 33 files, more than the limit of 32"):
        approvals.check_limits([(f"{n}.approval", 10) for n in range(33)], where="approvals/prod/x")
    with pytest.raises(Refused, match="16385 bytes, more than the limit of 16384"):
        approvals.check_limits([("a.approval", 16385)], where="approvals/prod/x")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/ceerkle/dreichor-deployments.git", "github.com/ceerkle/dreichor-deployments"),
        ("https://github.com/ceerkle/dreichor-deployments", "github.com/ceerkle/dreichor-deployments"),
        ("ssh://git@github.com/ceerkle/dreichor-deployments.git", "github.com/ceerkle/dreichor-deployments"),
        ("git@github.com:ceerkle/dreichor-deployments.git", "github.com/ceerkle/dreichor-deployments"),
        ("https://GitHub.com:443/ceerkle/dreichor-deployments/", "github.com/ceerkle/dreichor-deployments"),
        ("file:///srv/git/deployments.git", "/srv/git/deployments"),
    ],
)
def test_the_repository_name_comes_from_the_clone_url(url: str, name: str) -> None:
    assert repository_name(url) == name


def _config(approvals_section: dict[str, Any]) -> Any:
    raw: dict[str, object] = {
        "environment": "prod",
        "source": {"url": "git@github.com:ceerkle/dreichor-deployments.git"},
        "trust": {"allowed_signers": "trust/allowed_signers"},
        "approvals": approvals_section,
    }
    return parse_config(raw, base=Path("/opt/dreichor/prod/deploy-agent"))


def test_the_approvals_config_resolves_its_files_and_derives_the_repository() -> None:
    config = _config({"threshold": 2, "approvers": "trust/approvers"})
    assert config.approvals.approvers == "/opt/dreichor/prod/deploy-agent/trust/approvers"
    assert config.approvals.max_validity == timedelta(days=7)  # what approve writes by default
    assert config.approval_repository == "github.com/ceerkle/dreichor-deployments"
    named = _config({"threshold": 1, "approvers": "a", "repository": "github.com/x/y"})
    assert named.approval_repository == "github.com/x/y"


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"threshold": 0, "approvers": "a"}, "approvals.threshold"),
        ({"threshold": 2}, "approvals.approvers"),
        ({"threshold": 2, "approvers": "a", "max_age": "14 days"}, "not a duration"),
        ({"threshold": 2, "approvers": "a", "max_age": "400d"}, "longer than a year"),
        ({"threshold": 2, "approvers": "a", "quorum": 3}, "unknown key"),
    ],
)
def test_a_bad_approvals_config_is_an_error(section: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _config(section)


def test_durations_read_as_people_write_them() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("48h") == timedelta(hours=48)
    assert parse_duration("2w") == timedelta(weeks=2)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("0d")


def test_approve_writes_a_signed_approval_the_host_counts(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey], capsys: pytest.CaptureFixture[str]
) -> None:
    alice, _ = ssh_keys
    repo = ManifestRepo(tmp_path / "manifests")
    repo.git("remote", "set-url", "origin", "git@github.com:ceerkle/dreichor-deployments.git")
    repo.write("envs/prod.yaml", "environment: prod\nimage: x\n")
    repo.git("config", "user.signingkey", str(alice.path))
    assert main(["approve", str(repo.work / "envs/prod.yaml"), "--expires", "2d"]) == 0
    out = capsys.readouterr().out
    written = Path(out.split()[1])
    sha = hashlib.sha256(b"environment: prod\nimage: x\n").hexdigest()
    assert written.parent == repo.work / "approvals" / "prod" / sha and "git add" in out
    statement, _, _ = parse_approval(written.read_bytes())
    assert statement.expires - statement.created == timedelta(days=2)
    subject = Subject("github.com/ceerkle/dreichor-deployments", "prod", sha)
    tally = count_approvals(
        [(written.name, written.read_bytes())],
        subject=subject,
        approvers=_approvers(tmp_path, f"alice {alice.public}\n"),
        threshold=1,
        max_age=timedelta(days=14),
        now=datetime.now(UTC),
    )
    assert tally.have == ["alice"] and tally.enough
    signed, _, armored = written.read_bytes().partition(b"-----BEGIN")
    (tmp_path / "sig").write_bytes(b"-----BEGIN" + armored)
    (tmp_path / "allowed").write_text(f"alice {alice.public}\n")
    check = ["-f", str(tmp_path / "allowed"), "-I", "alice", "-n", NAMESPACE, "-s", str(tmp_path / "sig")]
    verified = subprocess.run(  # ssh-keygen agrees: the signed bytes are the statement, for the namespace
        ["ssh-keygen", "-Y", "verify", *check],
        input=signed,
        capture_output=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--expires", "400d"], "at most 366 days"),
        (["--expires", "soon"], "not a duration"),
        (["--key", "/nonexistent/key"], "ssh-keygen could not sign"),
    ],
)
def test_approve_refuses_in_a_sentence(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey], capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.write("envs/prod.yaml", "environment: prod\n")
    repo.git("config", "user.signingkey", str(ssh_keys[0].path))
    assert main(["approve", str(repo.work / "envs/prod.yaml"), *args]) == 1
    assert words in capsys.readouterr().err


def _waiting_sample() -> dict[str, Any]:
    sample = copy.deepcopy(page_sample(now=NOW))
    sample["status"]["phase"] = "Progressing"
    sample["status"]["sync"] = {"state": "Waiting", "reason": "waiting for approvals (1 of 2: alice)"}
    sample["status"]["approvals"] = {
        "content": "ab" * 32,
        "have": ["alice"],
        "need": 2,
        "missing": ["bob", "carol"],
        "expires": {"alice": "2026-12-09T10:00:00+00:00"},
        "not_counted": ["mallory.approval is not counted: SSH key … is not in approvals.approvers"],
    }
    return sample


def test_the_page_shows_who_approved_and_who_is_missing() -> None:
    html = page.render_page(**_waiting_sample())[0].decode()
    assert "waiting for approvals (1 of 2: alice)" in html
    assert "Approved by: alice (until 2026-12-09 10:00:00 UTC)" in html
    assert "Missing: bob, carol." in html and "not in approvals.approvers" in html


def test_the_previous_releases_status_file_loads_without_the_new_fields() -> None:
    sample = copy.deepcopy(page_sample(now=NOW))["status"]
    sample.pop("sync", None)
    sample.pop("approvals", None)
    status = Status.model_validate(json.loads(json.dumps(sample, default=str)))
    assert status.approvals is None
    assert status.sync is not None and status.sync.state == "OutOfSync"  # worked out from the recorded refusal


def test_metrics_count_the_approvals_a_held_change_still_needs() -> None:
    metrics = Metrics()
    status = Status.model_validate(json.loads(json.dumps(_waiting_sample()["status"], default=str)))
    metrics.record_status(status)
    assert b"dreichor_approvals_missing 1.0" in metrics.exposition()
    metrics.record_status(None)
    assert b"dreichor_approvals_missing 0.0" in metrics.exposition()


def test_a_held_change_is_told_once_and_posted_as_pending_with_the_tally() -> None:
    event = {
        "event": "waiting_approval",
        "revision": "1" * 40,
        "have": ["alice"],
        "need": 2,
        "missing": ["bob", "carol"],
        "reason": "waiting for approvals (1 of 2: alice)",
        "code": "AwaitingApprovals",
    }
    decision = decision_from_event("prod", event)
    assert decision is not None
    outcome = decide(Memory(), decision, now=NOW, policy=Policy(frozenset({"waiting_approval"}), 3600, True))
    assert [(s.state, s.description) for s in outcome.statuses] == [("pending", "1 of 2 approvals (alice)")]
    assert outcome.messages[0].title == "prod: 1111111 waits for approvals"
    assert "Approvals: 1 of 2 approvals (alice); missing bob, carol" in outcome.messages[0].body
    again = decide(outcome.memory, decision, now=NOW, policy=Policy(frozenset({"waiting_approval"}), 3600, True))
    assert again.statuses == ()


def test_a_file_name_with_control_characters_is_reported_escaped(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey]
) -> None:
    tally = _count([("\x1b[2J.approval", b"\x1b]0;owned\x07")], _approvers(tmp_path, f"alice {ssh_keys[0].public}\n"))
    assert "\x1b" not in tally.rejected[0].reason and "\\x1b[2J.approval" in tally.rejected[0].reason


# -- fuzz: whatever a branch commits under approvals/, the parser counts it or says why --------------

_SEPARATORS = st.sampled_from(["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\r\n", ": ", ""])


@pytest.fixture(scope="module")
def fuzz_approvers(tmp_path_factory: pytest.TempPathFactory, ssh_keys: tuple[SshKey, SshKey]) -> approvals.Approvers:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "approvers").write_text(f'alice namespaces="{NAMESPACE}" {ssh_keys[0].public}\n')
    return load_approvers(folder / "approvers", openpgp_keys=None, revoked_keys=None)


@pytest.fixture(scope="module")
def signed_approval(ssh_keys: tuple[SshKey, SshKey]) -> bytes:
    statement = _statement().to_bytes()
    return statement + ssh_sign(ssh_keys[0], statement, namespace=NAMESPACE)


@st.composite
def _mangled(draw: st.DrawFn, original: bytes) -> bytes:
    """A valid approval with a few bytes inserted, replaced or cut: the shapes a parser trips over."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "replace", "cut"]))
        piece = draw(st.one_of(_SEPARATORS.map(str.encode), st.binary(max_size=6)))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "replace":
            data[at : at + len(piece)] = piece
        else:
            del data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_parser_only_ever_counts_or_explains(
    data: st.DataObject, fuzz_approvers: approvals.Approvers, signed_approval: bytes
) -> None:
    files = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a.approval", "b.approval", "x.txt"]),
                st.one_of(_mangled(signed_approval), st.binary(max_size=400)),
            ),
            min_size=1,
            max_size=4,
        )
    )
    tally = count_approvals(
        files, subject=SUBJECT, approvers=fuzz_approvers, threshold=1, max_age=timedelta(days=14), now=NOW
    )
    assert len(tally.counted) + len(tally.rejected) >= min(len(files), 1)
    assert set(tally.have) <= {"alice"}
    for rejection in tally.rejected:
        assert rejection.reason.startswith(rejection.file) and len(rejection.reason) > len(rejection.file)


def _clone_for_approve(tmp_path: Path, key: SshKey) -> ManifestRepo:
    repo = ManifestRepo(tmp_path / "manifests")
    repo.git("remote", "set-url", "origin", "git@github.com:ceerkle/dreichor-deployments.git")
    repo.write("envs/prod.yaml", "environment: prod\nimage: x\n")
    repo.git("config", "user.signingkey", str(key.path))
    return repo


def _plant_file(repo: ManifestRepo, victim: Path, key: SshKey) -> None:
    sha = hashlib.sha256(b"environment: prod\nimage: x\n").hexdigest()
    name = hashlib.sha256(base64.b64decode(key.public.split()[1])).hexdigest()[:16]
    target = repo.work / "approvals" / "prod" / sha / f"{name}.approval"
    target.parent.mkdir(parents=True)
    target.symlink_to(victim)


def _plant_folder(repo: ManifestRepo, victim: Path, key: SshKey) -> None:
    (repo.work / "approvals").symlink_to(victim.parent)


def _plant_manifest(repo: ManifestRepo, victim: Path, key: SshKey) -> None:
    (repo.work / "envs" / "prod.yaml").unlink()
    (repo.work / "envs" / "prod.yaml").symlink_to(victim)


@pytest.mark.parametrize(
    ("plant", "words"),
    [
        (_plant_file, "approval already exists and is no regular file"),
        (_plant_folder, "approvals is a symlink or not a folder"),
        (_plant_manifest, "prod.yaml is a symlink"),
    ],
    ids=["approval-file", "approvals-folder", "manifest"],
)
def test_approve_follows_no_symlink_the_branch_under_review_planted(
    tmp_path: Path,
    ssh_keys: tuple[SshKey, SshKey],
    capsys: pytest.CaptureFixture[str],
    plant: Callable[[ManifestRepo, Path, SshKey], None],
    words: str,
) -> None:
    """N2: the approval's path is predictable; a symlink there must not aim approve at ~/.bashrc."""
    alice, _ = ssh_keys
    victim = tmp_path / "home" / ".bashrc"
    victim.parent.mkdir()
    victim.write_text("# the approver's shell\n")
    repo = _clone_for_approve(tmp_path, alice)
    plant(repo, victim, alice)
    assert main(["approve", str(repo.work / "envs/prod.yaml")]) == 1
    said = capsys.readouterr().err
    assert words in said, said
    assert victim.read_text() == "# the approver's shell\n"
    assert [p.name for p in victim.parent.iterdir()] == [".bashrc"]


def test_approve_again_replaces_its_own_earlier_approval(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _clone_for_approve(tmp_path, ssh_keys[0])
    assert main(["approve", str(repo.work / "envs/prod.yaml"), "--expires", "1d"]) == 0
    assert main(["approve", str(repo.work / "envs/prod.yaml"), "--expires", "2d"]) == 0
    files = list((repo.work / "approvals" / "prod").rglob("*.approval"))
    assert len(files) == 1
    statement, _, _ = parse_approval(files[0].read_bytes())
    assert statement.expires - statement.created == timedelta(days=2)


def test_approve_prints_a_signed_commit_and_warns_past_max_age(
    tmp_path: Path, ssh_keys: tuple[SshKey, SshKey], capsys: pytest.CaptureFixture[str]
) -> None:
    alice, _ = ssh_keys
    repo = ManifestRepo(tmp_path / "manifests")
    repo.git("remote", "set-url", "origin", "git@github.com:ceerkle/dreichor-deployments.git")
    repo.write("envs/prod.yaml", "environment: prod\nimage: x\n")
    assert main(["approve", str(repo.work / "envs/prod.yaml"), "--key", str(alice.path), "--expires", "30d"]) == 0
    said = capsys.readouterr()
    assert "&& git commit -S -m 'Approve " in said.out  # an unsigned commit on the branch would hold prod
    assert said.err == (
        "warning: --expires 30 d is longer than the default approvals.max_age (pass -e ENV to read the host's) "
        "of 7 d: the host will not count this approval\n"
    )


@pytest.mark.parametrize(
    ("length", "words"),
    [
        (timedelta(seconds=5), "5 s"),
        (timedelta(days=30), "30 d"),
        (timedelta(hours=50), "2 d 2 h"),
        (timedelta(minutes=90), "1 h 30 min"),
    ],
)
def test_durations_are_said_as_people_write_them(length: timedelta, words: str) -> None:
    assert spoken_duration(length) == words


def test_withdrawals_are_read_from_the_config_as_people_write_them(tmp_path: Path) -> None:
    config_file = tmp_path / "controller.yaml"
    config_file.write_text(
        "environment: prod\nsource: {url: 'git@github.com:ceerkle/dreichor-deployments.git'}\n"
        "trust: {allowed_signers: trust/allowed_signers}\n"
        "approvals:\n  threshold: 2\n  approvers: trust/approvers\n  withdrawn:\n"
        f"    - sha256: {'ab' * 32}\n"
        "    - {person: bob, not_before: 2026-12-05T10:00:00Z}\n"
    )
    withdrawn = load_config(config_file).approvals.withdrawn  # type: ignore[union-attr]
    assert withdrawn[0].sha256 == "ab" * 32
    assert (withdrawn[1].person, withdrawn[1].not_before) == ("bob", datetime(2026, 12, 5, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"person": "bob"}, "person needs not_before"),
        ({"person": "bob", "not_before": "2026-12-05T10:00:00"}, "a time with its zone"),
        ({"sha256": "AB" * 32}, "64 lowercase hex"),
        ({"sha256": "ab" * 32, "person": "bob", "not_before": "2026-12-05T10:00:00Z"}, "give either sha256"),
    ],
)
def test_a_withdrawal_that_says_too_little_or_too_much_is_a_config_error(entry: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _config({"threshold": 1, "approvers": "a", "withdrawn": [entry]})
