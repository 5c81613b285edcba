"""The verify step: which commits must carry a trusted signature, and checking them.

Shared by ``dreichor-controller verify`` and the reconcile pass, so a manifest
repository's CI and the controller reach the same verdict by the same code.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from controller.errors import Refused
from controller.model.config import Config
from controller.signatures.commits.policy import PolicyCache, TrustPolicy, Verdict, VerifiedCache, verify_commits
from controller.source.git import GitSource

log = logging.getLogger("dreichor.verification")


def load_policy(config: Config) -> TrustPolicy:
    """The trust policy from the host files the config names, parsed again only when one of them changed.

    Each pass stats the files; a file replaced, edited, created or removed
    since the last load (another inode, size, mtime or ctime) is read again, so
    a change counts from the next pass, as a re-read at every pass would.
    """
    trust = config.trust
    return _POLICIES.load(
        allowed_signers=Path(trust.allowed_signers),
        openpgp_keys=Path(trust.openpgp_keys) if trust.openpgp_keys else None,
        revoked_keys=Path(trust.revoked_keys) if trust.revoked_keys else None,
    )


_POLICIES = PolicyCache()


def commits_to_verify(source: GitSource, *, mode: str, applied: str | None, head: str) -> list[str]:
    """``head`` mode: the head alone.  ``first-parent``: every first-parent commit after ``applied``.

    Without an applied revision (first deploy), or when ``head`` does not descend
    from it (a rewrite, judged by the history guard), the head alone.
    """
    if mode == "head" or applied is None or applied == head or not source.is_ancestor(applied, head):
        return [head]
    return source.first_parent_range(applied, head)


def clearing_advice(mode: str, *, applied: str | None) -> str:
    """The action that clears a refused commit, and works when followed (docs/design.md §16).

    In ``first-parent`` mode a refused commit stays in every later head's first-parent history, so a
    signed commit on top never covers it: it must leave the branch.  The controller never applied it,
    so moving the branch back past it is no rewrite for the controller's history guard.
    """
    if mode == "head":
        return "push a commit signed by a trusted key on top: in 'head' mode only the head is checked"
    back = f"reset to {applied[:12]}, the applied revision, " if applied else "reset it, "
    return (
        "signed commits on top do not cover it: take it off the branch "
        f"({back}re-commit signed, push --force-with-lease: no rewrite for the controller) or set trust.mode: head"
    )


def verify_revision(
    source: GitSource,
    policy: TrustPolicy,
    *,
    mode: str,
    applied: str | None,
    head: str,
    now: datetime,
    cache: VerifiedCache | None = None,
) -> Verdict:
    """Verify what ``mode`` requires up to ``head``; return the head's verdict or raise ``Refused``."""
    commits = commits_to_verify(source, mode=mode, applied=applied, head=head)
    try:
        verdict = verify_commits(commits, read_commit=source.raw_commit, policy=policy, now=now, cache=cache)
    except Refused as exc:
        raise Refused(f"{exc}; {clearing_advice(mode, applied=applied)}", code=exc.code) from None
    log.info("signature trusted", extra={"revision": head, "commits": len(commits), "signer": verdict.signer})
    return verdict


def verify_on_host(
    config: Config,
    source: GitSource,
    *,
    applied: str | None,
    head: str,
    now: datetime,
    cache: VerifiedCache | None = None,
) -> Verdict:
    """``head`` verified as the pass, ``verify`` and ``approvals`` all verify it: the host's trust policy and
    mode, every commit from ``applied`` on; the verdict, or ``Refused``."""
    policy = load_policy(config)
    return verify_revision(source, policy, mode=config.trust.mode, applied=applied, head=head, now=now, cache=cache)
