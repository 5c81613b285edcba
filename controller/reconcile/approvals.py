"""The approvals a change needs (docs/design.md §15), as the pass and the ``approvals`` command count them:
the approval files of the declared content in a revision's tree, against the host's approvers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller.errors import ConfigError, Reason
from controller.model.config import Config
from controller.model.manifest import manifest_sha256
from controller.records.status import ApprovalsStatus
from controller.signatures import approvals
from controller.signatures.commits.verification import verify_on_host
from controller.source.git import GitSource


def count_for(config: Config, source: GitSource, *, revision: str, content: str, now: datetime) -> approvals.Tally:
    """The approvals of ``content`` in ``revision``'s tree, counted against the host's approvers at ``now``."""
    assert config.approvals is not None  # noqa: S101 asked only when approvals are configured
    environment = config.environment
    files = source.read_folder(
        revision,
        approvals.folder(environment, content),
        max_entries=approvals.MAX_FILES,
        max_bytes=approvals.MAX_FILE_BYTES,
        code=Reason.BAD_APPROVALS,
    )
    return approvals.count_approvals(
        files,
        subject=approvals.Subject(config.approval_repository, environment, content),
        approvers=load_approvers(config),
        threshold=config.approvals.threshold,
        max_age=config.approvals.max_validity,
        now=now,
        withdrawn=config.approvals.withdrawn,
    )


@dataclass(frozen=True)
class HeadApprovals:
    """``approvals``' answer: the verified head and its content's tally."""

    revision: str
    tally: approvals.Tally


def head_approvals(config: Config, source: GitSource, *, applied: str | None, now: datetime) -> HeadApprovals:
    """Fetch, verify the head as a pass would, and count the approvals of its content (docs/design.md §15)."""
    if config.approvals is None:
        raise ConfigError("approvals are not configured: there is no approvals section in the config")
    head = source.fetch()
    verify_on_host(config, source, applied=applied, head=head, now=now)
    content = manifest_sha256(source.read_manifest(head, config.environment))
    return HeadApprovals(head, count_for(config, source, revision=head, content=content, now=now))


def load_approvers(config: Config) -> approvals.Approvers:
    """The host's approvers (``approvals.approvers``, ``approvals.openpgp_keys``) and the trust's revoked keys."""
    assert config.approvals is not None  # noqa: S101 asked only when approvals are configured
    return approvals.load_approvers(
        Path(config.approvals.approvers),
        openpgp_keys=Path(config.approvals.openpgp_keys) if config.approvals.openpgp_keys else None,
        revoked_keys=Path(config.trust.revoked_keys) if config.trust.revoked_keys else None,
        openpgp_people=config.approvals.openpgp_people,
    )


def waiting_reason(tally: approvals.Tally) -> str:
    """``waiting for approvals (1 of 2: alice)``: the held change, in the status, page and logs."""
    names = f": {', '.join(tally.have)}" if tally.counted else ""
    return f"waiting for approvals ({len(tally.counted)} of {tally.need}{names})"


def approvals_view(tally: approvals.Tally) -> ApprovalsStatus:
    """A tally as the status file records it."""
    return ApprovalsStatus(
        content=tally.content,
        have=tally.have,
        need=tally.need,
        missing=tally.missing,
        expires={a.person: a.expires for a in tally.counted},
        not_counted=[r.reason for r in tally.rejected][:8],
    )
