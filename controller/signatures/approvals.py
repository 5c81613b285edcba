"""Approvals for an environment (docs/design.md §15): k named people signed this exact content.

A commit signature says who made the merge; for a merge in GitHub's web UI that
is GitHub, so it proves no more than "someone who may merge".  An approval says
which *person* agreed to the bytes of ``envs/<env>.yaml``: a file under
``approvals/<env>/<sha256>/`` holding a seven-line statement and a signature
over exactly those bytes, made with a key the host lists in ``approvals.approvers``.

The counting here is pure: the files (read, bounded, from the verified commit's
tree by the source), the host's approvers and the clock come in; a ``Tally``
comes out.  Signatures are checked by the same code as commit signatures
(``sshsig`` with the namespace ``dreichor-approval``, ``openpgp`` for an armoured
detached signature), judged by the controller's clock against the host's revoked
keys.  A file that is not counted says why, so a person can fix it.

The last part is the approver's side (``approve``): it writes the statement for a
clone's file and has ``ssh-keygen`` sign it, so both sides share one format.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from controller.errors import ConfigError, Reason, Refused
from controller.model.config import WithdrawnApproval, repository_name
from controller.model.durations import spoken_duration
from controller.model.environments import ENVIRONMENTS
from controller.model.manifest import manifest_path, manifest_sha256
from controller.signatures import signing
from controller.signatures.commits import sshsig
from controller.signatures.commits.allowed_signers import AllowedSigner, parse_allowed_signers
from controller.signatures.commits.openpgp import OpenPgpKeyring
from controller.signatures.commits.policy import read_trust_file
from controller.signatures.commits.revocations import Revocations, parse_revoked_keys
from controller.source.git import clone_facts
from controller.untrusted import bounded

NAMESPACE = "dreichor-approval"
VERSION_LINE = "dreichor-approval/v1"
FOLDER = "approvals"
SUFFIX = ".approval"
MAX_FILES = 32
MAX_FILE_BYTES = 16 * 1024
CLOCK_SKEW = timedelta(minutes=5)  # an approver's clock may run this far ahead of the host's
_FIELDS = ("repository", "environment", "path", "sha256", "created", "expires")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def folder(environment: str, sha256: str) -> str:
    """Where the approvals of one content live in the manifest repository."""
    return f"{FOLDER}/{environment}/{sha256}"


@dataclass(frozen=True)
class Subject:
    """What the host computes and every statement must repeat: repository, environment, content."""

    repository: str
    environment: str
    sha256: str

    @property
    def path(self) -> str:
        """The manifest file the content is the bytes of."""
        return manifest_path(self.environment)


@dataclass(frozen=True)
class Statement:
    """The signed part of an approval: seven lines, each ending in a newline (docs/design.md §15)."""

    repository: str
    environment: str
    path: str
    sha256: str
    created: datetime
    expires: datetime

    def to_bytes(self) -> bytes:
        """The exact bytes that are signed."""
        lines = [
            VERSION_LINE,
            f"repository: {self.repository}",
            f"environment: {self.environment}",
            f"path: {self.path}",
            f"sha256: {self.sha256}",
            f"created: {format_time(self.created)}",
            f"expires: {format_time(self.expires)}",
        ]
        return "".join(line + "\n" for line in lines).encode()


def format_time(moment: datetime) -> str:
    """``2026-12-02T10:00:00Z``: UTC, whole seconds, as every statement writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotCounted(Exception):
    """One approval file does not count; the message says why, in one sentence."""


def parse_approval(data: bytes) -> tuple[Statement, bytes, bytes]:
    """(statement, the signed bytes, the armoured signature) of one file; ``NotCounted`` when malformed."""
    parts = data.split(b"\n", 7)
    if len(parts) < 8:
        raise NotCounted("is not a seven-line statement followed by a signature")
    signed = b"\n".join(parts[:7]) + b"\n"
    try:  # split on "\n" alone, as the statement is written: \r, \v or \x1c are a field's text, not line ends
        lines = signed.decode("ascii").removesuffix("\n").split("\n")
    except UnicodeDecodeError:
        raise NotCounted("has a statement that is not ASCII text") from None
    if not all(line.isprintable() for line in lines):
        raise NotCounted("has a control character in its statement")
    if lines[0] != VERSION_LINE:
        raise NotCounted(f"does not start with '{VERSION_LINE}'")
    values: dict[str, str] = {}
    for name, line in zip(_FIELDS, lines[1:], strict=True):
        key, sep, value = line.partition(": ")
        if key != name or not sep:
            raise NotCounted(f"has '{line[:40]}' where the field '{name}' belongs")
        values[name] = value
    statement = Statement(
        repository=values["repository"],
        environment=values["environment"],
        path=values["path"],
        sha256=values["sha256"],
        created=_parse_time(values["created"], "created"),
        expires=_parse_time(values["expires"], "expires"),
    )
    if not _SHA256.match(statement.sha256):
        raise NotCounted("has a sha256 that is not 64 lowercase hex digits")
    if statement.to_bytes() != signed:
        raise NotCounted("is not written exactly as the statement format says")
    return statement, signed, parts[7]


def _parse_time(text: str, name: str) -> datetime:
    if not _TIME.match(text):
        raise NotCounted(f"has {name} '{text[:40]}', not YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise NotCounted(f"has {name} '{text}', which is not a real time") from None


# -- the host's approvers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Approvers:
    """The people whose keys the host lists in ``approvals.approvers`` (and OpenPGP keys), and revocations.

    A person is a name the host gives: an SSH principal, or the name ``approvals.openpgp_approvers``
    maps an OpenPGP key's primary fingerprint to — never a user ID, which the key's holder writes.
    """

    ssh: tuple[AllowedSigner, ...]
    openpgp: OpenPgpKeyring
    revoked: Revocations
    openpgp_people: dict[str, str] = field(default_factory=dict)  # primary fingerprint → person

    @property
    def people(self) -> tuple[str, ...]:
        """Every person who may approve, sorted: each counts once, whatever the number of keys."""
        names = {entry.principals[0] for entry in self.ssh} | set(self.openpgp_people.values())
        return tuple(sorted(bounded(name) for name in names))


def load_approvers(
    approvers: Path,
    *,
    openpgp_keys: Path | None,
    revoked_keys: Path | None,
    openpgp_people: Mapping[str, str] | None = None,
) -> Approvers:
    """Read the host's approver files; a missing or ambiguous file refuses the change, naming the file.

    ``openpgp_people`` names the person of each OpenPGP key (by primary fingerprint); a key it maps
    that ``openpgp_keys`` does not hold, or one person under two spellings, is ambiguous too.
    """
    text = _read(approvers, name="approvers file").decode("utf-8", "replace")
    signers = tuple(parse_allowed_signers(text))
    _check_one_person_per_key(signers, approvers)
    keyring = OpenPgpKeyring(_read(openpgp_keys, name="approvers' openpgp_keys file"))
    revoked_data = _read(revoked_keys, name="revoked_keys file", consequence="the keys it revokes would count again")
    revoked = parse_revoked_keys(revoked_data, path=revoked_keys) if revoked_keys else None
    people = dict(openpgp_people or {})
    held = set(keyring.user_ids())
    for fingerprint in people:
        if fingerprint not in held:
            why = f"approvals.openpgp_approvers names {fingerprint}, a key {openpgp_keys} does not hold"
            raise Refused(why, code=Reason.BAD_TRUST_POLICY)
    _check_one_name_per_person([e.principals[0] for e in signers] + list(people.values()), approvers)
    return Approvers(signers, keyring, revoked or Revocations(), openpgp_people=people)


def _check_one_name_per_person(names: Sequence[str], path: Path) -> None:
    """``alice`` and ``Alice`` would be two people to the count and one to everyone else: refused."""
    spelled: dict[str, str] = {}
    for name in names:
        other = spelled.setdefault(name.casefold(), name)
        if other != name:
            why = f"{path} and approvals.openpgp_approvers name one person twice: {other!r} and {name!r}"
            raise Refused(bounded(why), code=Reason.BAD_TRUST_POLICY)


def _check_one_person_per_key(signers: Sequence[AllowedSigner], path: Path) -> None:
    """A line names one person, and a key belongs to one person: else one signature could count twice."""
    owner: dict[str, str] = {}
    for entry in signers:
        if len(entry.principals) != 1:
            why = f"{path} line {entry.line}: an approver line names exactly one person, not {len(entry.principals)}"
            raise Refused(why, code=Reason.BAD_TRUST_POLICY)
        person = owner.setdefault(entry.key, entry.principals[0])
        if person != entry.principals[0]:
            why = f"{path} line {entry.line}: this key is listed for both {person} and {entry.principals[0]}"
            raise Refused(why, code=Reason.BAD_TRUST_POLICY)


def _read(path: Path | None, *, name: str, consequence: str = "no one can approve") -> bytes:
    return read_trust_file(path, name=name, consequence=consequence, code=Reason.BAD_TRUST_POLICY)


# -- counting ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """One person's counted approval (their latest-expiring one, when they signed several)."""

    person: str
    expires: datetime
    file: str
    sha256: str = ""  # of the file's bytes: what approvals.withdrawn names to withdraw it


@dataclass(frozen=True)
class Rejection:
    """A file that did not count, and why."""

    file: str
    reason: str


@dataclass(frozen=True)
class Tally:
    """Who approved one content, who is missing, and whether that is enough."""

    content: str
    need: int
    counted: tuple[Approval, ...]
    rejected: tuple[Rejection, ...]
    people: tuple[str, ...]

    @property
    def have(self) -> list[str]:
        """The people whose approvals count, sorted."""
        return sorted(a.person for a in self.counted)

    @property
    def missing(self) -> list[str]:
        """Approvers who have not (validly) approved this content."""
        return [p for p in self.people if p not in self.have]

    @property
    def enough(self) -> bool:
        """Whether the threshold is met."""
        return len(self.counted) >= self.need

    def describe(self) -> str:
        """``1 of 2 approvals (alice)``: what the status, the page and the commit status say."""
        names = f" ({', '.join(self.have)})" if self.counted else ""
        return f"{len(self.counted)} of {self.need} approvals{names}"


def check_limits(entries: Sequence[tuple[str, int]], *, where: str) -> None:
    """Refuse a folder with more files, or a file bigger, than the limits (before any is read)."""
    if len(entries) > MAX_FILES:
        why = f"{where} holds {len(entries)} files, more than the limit of {MAX_FILES} approval files per content"
        raise Refused(why, code=Reason.BAD_APPROVALS)
    for name, size in entries:
        if size > MAX_FILE_BYTES:
            why = f"{where}/{name} is {size} bytes, more than the limit of {MAX_FILE_BYTES} bytes for an approval"
            raise Refused(why, code=Reason.BAD_APPROVALS)


def count_approvals(
    files: Sequence[tuple[str, bytes]],
    *,
    subject: Subject,
    approvers: Approvers,
    threshold: int,
    max_age: timedelta,
    now: datetime,
    withdrawn: Sequence[WithdrawnApproval] = (),
) -> Tally:
    """Count distinct people among ``files`` (name, bytes) whose approval of ``subject`` holds at ``now``.

    ``withdrawn`` (the host's ``approvals.withdrawn``) voids single files by their SHA-256 and a
    person's approvals created before a time: a file deleted from the repository can be restored
    from its history by anyone who can merge, so only the host can take an approval back.
    """
    check_limits([(name, len(data)) for name, data in files], where=folder(subject.environment, subject.sha256))
    best: dict[str, Approval] = {}
    rejected: list[Rejection] = []
    judge = partial(_judge_file, subject=subject, approvers=approvers, max_age=max_age, now=now, withdrawn=withdrawn)
    for name, data in sorted(files):
        try:
            approval = judge(name, data)
        except NotCounted as exc:
            rejected.append(Rejection(bounded(name), bounded(f"{name} {exc}")))  # names and fields are anyone's text
            continue
        kept = best.get(approval.person)
        if kept is None or approval.expires > kept.expires:
            best[approval.person] = approval
    counted = tuple(sorted(best.values(), key=lambda a: a.person))
    return Tally(subject.sha256, threshold, counted, tuple(rejected), approvers.people)


def _judge_file(
    name: str,
    data: bytes,
    *,
    subject: Subject,
    approvers: Approvers,
    max_age: timedelta,
    now: datetime,
    withdrawn: Sequence[WithdrawnApproval],
) -> Approval:
    if not name.endswith(SUFFIX):
        raise NotCounted(f"is not named *{SUFFIX}")
    sha = hashlib.sha256(data).hexdigest()
    if any(w.sha256 == sha for w in withdrawn):
        raise NotCounted(f"is withdrawn on this host (approvals.withdrawn names sha256 {sha})")
    statement, signed, signature = parse_approval(data)
    _check_subject(statement, subject)
    _check_times(statement, max_age=max_age, now=now)
    person = _signer(signature, signed, approvers=approvers, now=now)
    for withdrawal in withdrawn:
        if withdrawal.person == person and withdrawal.not_before and statement.created < withdrawal.not_before:
            cut = format_time(withdrawal.not_before)
            raise NotCounted(f"is withdrawn on this host: {person}'s approvals created before {cut} do not count")
    return Approval(bounded(person), statement.expires, bounded(name), sha)


def _check_subject(statement: Statement, subject: Subject) -> None:
    """Every field equals what the host computes: a copy from another repository, environment or content is void."""
    for what, claimed, expected in (
        ("repository", statement.repository, subject.repository),
        ("environment", statement.environment, subject.environment),
        ("path", statement.path, subject.path),
        ("sha256", statement.sha256, subject.sha256),
    ):
        if claimed != expected:
            raise NotCounted(f"is for {what} '{claimed[:80]}', not '{expected}'")


def _check_times(statement: Statement, *, max_age: timedelta, now: datetime) -> None:
    if statement.created > now + CLOCK_SKEW:
        raise NotCounted(f"is created {format_time(statement.created)}, in the future by the controller's clock")
    if now >= statement.expires:
        raise NotCounted(f"expired at {format_time(statement.expires)} (by the controller's clock)")
    if statement.expires - statement.created > max_age:
        claimed, allowed = spoken_duration(statement.expires - statement.created), spoken_duration(max_age)
        raise NotCounted(f"claims {claimed} of validity, more than max_age {allowed}")


def _signer(signature: bytes, signed: bytes, *, approvers: Approvers, now: datetime) -> str:
    """The person whose listed, unrevoked, currently valid key made ``signature`` over ``signed``."""
    armored = signature.strip()
    try:
        if armored.startswith(sshsig.BEGIN):
            return _ssh_signer(sshsig.parse_armored(armored), signed, approvers=approvers, now=now)
        if armored.startswith(b"-----BEGIN PGP SIGNATURE-----"):
            return _openpgp_signer(armored, signed, approvers=approvers, now=now)
    except Refused as exc:
        raise NotCounted(f"is not counted: {exc}") from None
    raise NotCounted("carries neither an SSH nor an OpenPGP signature after its statement")


def _ssh_signer(sig: sshsig.SshSignature, signed: bytes, *, approvers: Approvers, now: datetime) -> str:
    sshsig.verify(sig, signed, namespace=NAMESPACE.encode(), what="the statement")
    short = f"{sig.key_type} {sig.fingerprint}"
    if approvers.revoked.revokes_ssh(sig.public_key):
        raise Refused(f"SSH key {short} is listed in revoked_keys", code=Reason.REVOKED_KEY)
    entries = [e for e in approvers.ssh if e.key == sig.public_key_line]
    if not entries:
        raise Refused(f"SSH key {short} is not in approvals.approvers", code=Reason.UNTRUSTED_SIGNER)
    usable = [e for e in entries if e.allows_namespace(NAMESPACE)]
    if not usable:
        raise Refused(f"SSH key {short} is not allowed for namespace '{NAMESPACE}'", code=Reason.UNTRUSTED_SIGNER)
    for entry in usable:
        if entry.validity_reason(now) is None:
            return entry.principals[0]
    why = f"SSH key {short} {usable[0].validity_reason(now)} (by the controller's clock)"
    raise Refused(why, code=Reason.EXPIRED_KEY)


def _openpgp_signer(armored: bytes, signed: bytes, *, approvers: Approvers, now: datetime) -> str:
    signer = approvers.openpgp.verify(armored, signed, now=now)
    if approvers.revoked.revokes_openpgp(signer.fingerprint, signer.signing_key):
        raise Refused(f"OpenPGP key {signer.fingerprint} is listed in revoked_keys", code=Reason.REVOKED_KEY)
    person = approvers.openpgp_people.get(signer.fingerprint)
    if person is None:  # the key's user IDs are its holder's words: never who the host counts
        why = f"OpenPGP key {signer.fingerprint} names no person in approvals.openpgp_approvers"
        raise Refused(why, code=Reason.UNTRUSTED_SIGNER)
    return person


# -- the approver's side: ``approve`` ---------------------------------------------------------------

DEFAULT_VALIDITY = timedelta(days=7)
LONGEST_VALIDITY = timedelta(days=366)


def write_approval(file: Path, *, key: str | None, valid_for: timedelta, repository: str | None, now: datetime) -> Path:
    """Sign an approval of ``file``'s bytes in its clone (``ssh-keygen -Y sign``) and write it; return its path.

    The statement names what the host will compute: the repository (``--repository``, else from
    ``remote.origin.url``), the environment and path from the file's place in the clone, its SHA-256.
    """
    root, origin, signing_key = clone_facts(file)
    relative = _inside(file, root)
    environment = relative.removeprefix("envs/").removesuffix(".yaml")
    if relative != manifest_path(environment) or environment not in ENVIRONMENTS:
        raise ConfigError(f"{relative} is not an environment's manifest (envs/dev.yaml or envs/prod.yaml)")
    if not timedelta(0) < valid_for <= LONGEST_VALIDITY:
        raise ConfigError(f"--expires must be more than nothing and at most {LONGEST_VALIDITY.days} days")
    name = repository or (repository_name(origin) if origin else None)
    if name is None:
        raise ConfigError("the clone has no remote 'origin': pass --repository (e.g. github.com/owner/name)")
    key = key or signing_key
    if key is None:
        raise ConfigError("no signing key: pass --key PATH or set git's user.signingkey")
    created = now.astimezone(UTC).replace(microsecond=0)
    sha = manifest_sha256(file.read_bytes())
    statement = Statement(name, environment, relative, sha, created, created + valid_for).to_bytes()
    armored = signing.ssh_sign(statement, key=key, namespace=NAMESPACE)
    signature = sshsig.parse_armored(armored)
    sshsig.verify(signature, statement, namespace=NAMESPACE.encode(), what="the statement")
    name = f"{hashlib.sha256(signature.public_key).hexdigest()[:16]}{SUFFIX}"
    return write_inside(root, (*folder(environment, sha).split("/"), name), statement + armored)


def _inside(file: Path, root: Path) -> str:
    """``file``'s path in the clone, refused when a component under the clone's root is a symlink.

    The branch under review chooses the clone's contents: a manifest that is a symlink would have
    another file's bytes approved under this file's name.
    """
    absolute = file.absolute()
    top = root.resolve()
    for candidate in (absolute, *absolute.parents):
        if candidate.resolve() == top:
            return absolute.relative_to(candidate).as_posix()
        if candidate.is_symlink():
            raise ConfigError(f"{candidate} is a symlink: approve reads no file through a link the clone holds")
    raise ConfigError(f"{file} is not inside the clone {root}")


def write_inside(root: Path, parts: Sequence[str], data: bytes) -> Path:
    """Create ``root/parts…`` as a new regular file, following no symlink under ``root``.

    The approval's path is predictable (content hash and key), so a branch could commit it, or any
    folder above it, as a symlink to ``~/.bashrc`` or a key file.  Each folder is opened relative
    to the one above it without following links (created when missing); the file is created with
    ``O_EXCL | O_NOFOLLOW``.  An approval already there (a regular file) is replaced by a new one.
    """
    here = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    path = root
    try:
        for part in parts[:-1]:
            path = path / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=here)
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here)
            except OSError:
                raise ConfigError(f"{path} is a symlink or not a folder: approve writes nothing through it") from None
            os.close(here)
            here = below
        path = path / parts[-1]
        if stat.S_ISREG(_lstat(parts[-1], here)):
            os.unlink(parts[-1], dir_fd=here)  # an earlier approval of the same content by the same key
        try:
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=here)
        except OSError:
            raise ConfigError(f"{path} already exists and is no regular file: approve writes nothing there") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    finally:
        os.close(here)
    return path


def _lstat(name: str, folder_fd: int) -> int:
    try:
        return os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return 0
